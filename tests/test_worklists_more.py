"""Issue 15: the work lists test_worklists.py does not cover
(danger_signs_not_referred, anc_overdue, deaths), over records pushed through
the real API, and the migration that rebuilds stale facts. Expected rows and
days overdue are worked out here from the lists' definitions (top of
server/worklists.py) on the reference day ON."""
import sqlite3
from datetime import date, timedelta

from tests.conftest import run_cli
from tests.test_indicators import World, uid
from tests.test_indicators_more import birth, pnc
from tests.test_worklists import ON, worklist

DAY = date.fromisoformat(ON)


def days_before(iso):
    return (DAY - date.fromisoformat(iso)).days


def rows_of(world, name):
    status, body = worklist(world, name)
    assert status == 200, body
    return sorted((r["person"]["id"], r["fact"], r["days_overdue"]) for r in body["rows"])


def old_pnc(world, preg, outcome_date, visit_date, babies, mother_signs=("none",),
            referred="none"):
    """A v1 postnatal visit: v1 has no referral check, so devices still on v1
    can send a danger sign with referred_to=none (the case the list exists for)."""
    return world.push("pnc_visit", {
        "pregnancy_id": preg, "outcome_date": outcome_date, "visit_date": visit_date,
        "visitor_role": "vhw", "mother_status": "alive",
        "mother_danger_signs": list(mother_signs), "referred_to": referred,
        "baby": [{"child_id": c, "status": "alive", "danger_signs": signs,
                  "bf_recall": ["breast_milk"], **vitals} for c, signs, vitals in babies]},
        version=1)


def test_danger_signs_not_referred_mothers_and_newborns(client):
    # DOMAIN §1.6 newborn danger signs: not feeding, convulsions, chest
    # indrawing, no movement, jaundice of palms/soles, cord pus/redness, a
    # temperature < 35.5 or >= 37.5 °C, 60 breaths/min or more.
    world = World(client)
    on = "2026-04-10"
    preg, _ = birth(world, on)
    listed = {"jaundice": (uid(), ["jaundice_palms_soles"], {}),
              "cord": (uid(), ["cord_pus_redness"], {}),
              "cold": (uid(), ["none"], {"temp_c": 35.4}),
              "fast": (uid(), ["none"], {"resp_rate": 60}),
              "convulsions": (uid(), ["convulsions"], {})}
    not_listed = [(uid(), ["none"], {"temp_c": 35.5, "resp_rate": 59}),
                  (uid(), ["none"], {"temp_c": 37.4})]
    babies = [*listed.values(), *not_listed]
    old_pnc(world, preg, on, "2026-04-12", babies[:4])      # 4 babies at most per visit
    preg0, _ = birth(world, on)
    old_pnc(world, preg0, on, "2026-04-12", babies[4:])
    # A mother with fever, not referred; the same signs referred are not listed.
    mother2 = world.person()
    preg2 = world.pregnancy(mother2)
    world.outcome(preg2, on, [(uid(), "male", "alive")])
    old_pnc(world, preg2, on, "2026-04-11", [(uid(), ["none"], {})], mother_signs=["fever"])
    preg3, _ = birth(world, on)
    old_pnc(world, preg3, on, "2026-04-11", [(uid(), ["jaundice_palms_soles"], {})],
            mother_signs=["fever"], referred="CHS")
    # A visit after the reference day is not listed yet.
    preg4, _ = birth(world, on)
    old_pnc(world, preg4, on, "2026-04-25", [(uid(), ["convulsions"], {})])
    # (ANC contacts: both form versions refuse a danger sign without a
    # referral, so no such record can reach the list through the API.)
    got = rows_of(world, "danger_signs_not_referred")
    expected = sorted([(c, "newborn_danger_sign", days_before("2026-04-12"))
                       for c, _, _ in listed.values()]
                      + [(mother2, "mother_danger_sign",
                          days_before("2026-04-11"))])
    assert got == expected


def test_anc_overdue_next_visit_passed_or_no_contact_this_trimester(client):
    # Ongoing pregnancies (no outcome, within 14 days of the EDD) whose last
    # next_visit_date has passed, or with no check-up since the current
    # trimester began (LMP + 14 or + 28 weeks; registration if later).
    world = World(client)
    # A: LMP 2026-01-01, trimester 2 began 2026-04-09; check-up 2026-02-10 asked
    # to come back on 2026-03-10: both reasons, the larger one is shown.
    a = world.person()
    pa = world.pregnancy(a, lmp="2026-01-01", registration_date="2026-02-01")
    world.anc(pa, "2026-02-10", lmp="2026-01-01", next_visit_date="2026-03-10")
    # B: seen this trimester, next visit not yet due: not listed.
    b = world.person()
    pb = world.pregnancy(b, lmp="2026-01-01", registration_date="2026-02-01")
    world.anc(pb, "2026-04-12", lmp="2026-01-01", next_visit_date="2026-05-10")
    # C: registered on 2026-04-15, mid-trimester, never seen: counted from registration.
    c = world.person()
    world.pregnancy(c, lmp="2026-01-01", registration_date="2026-04-15")
    # D: the pregnancy has an outcome: not listed.
    d = world.person()
    pd = world.pregnancy(d, lmp="2025-07-01", registration_date="2025-09-01")
    world.outcome(pd, "2026-04-01", [(uid(), "male", "alive")], lmp="2025-07-01")
    # E: more than 14 days past the EDD: on past_edd_no_outcome instead.
    e = world.person()
    world.pregnancy(e, lmp="2025-06-01")
    # F: a VHW home follow-up is no check-up: no contact this trimester (3rd
    # trimester from LMP + 28 weeks = 2026-04-16 for LMP 2025-10-02).
    f = world.person()
    pf = world.pregnancy(f, lmp="2025-10-02", registration_date="2025-11-20")
    world.anc(pf, "2026-04-18", lmp="2025-10-02", contact="home_followup_by_vhw")
    got = rows_of(world, "anc_overdue")
    assert got == sorted([(a, "next_visit_date_passed", days_before("2026-03-10")),
                          (c, "no_contact_this_trimester", days_before("2026-04-15")),
                          (f, "no_contact_this_trimester", days_before("2026-04-16"))])
    assert [r[0] for r in rows_of(world, "past_edd_no_outcome")] == [e]


def test_deaths_pregnancy_related_and_newborn_once_each(client):
    # Pregnancy-related deaths (F5, F6, F2) and newborn deaths (within 28 days
    # of birth: F5 died_after_birth, F6 baby died, F2 person record) of the
    # last year; each person once per fact, days since the death.
    world = World(client)
    # A newborn death known only from the person record: born 2026-03-01, died day 9.
    n1 = world.person(sex="male", dob="2026-03-01", recorded_on="2026-03-02",
                      vital_status="died", date_of_death="2026-03-10")
    # A child who died at 40 days: not a newborn death.
    world.person(sex="male", dob="2026-01-01", recorded_on="2026-01-02",
                 vital_status="died", date_of_death="2026-02-10")
    # A baby who died after birth (F5), also on its person record: one row.
    n2 = uid()
    preg, _ = birth(world, "2026-04-01", babies=[(n2, "female", "died_after_birth")])
    world.push("person", {"household_id": uid(), "full_name": "Bé Lan", "sex": "female",
                          "dob": "2026-04-01", "dob_precision": "exact", "ethnicity_code": "09",
                          "relationship_to_head": "child", "recorded_on": "2026-04-01",
                          "hi_has_card": "no", "vital_status": "died",
                          "date_of_death": "2026-04-01"}, record_id=n2)
    # A baby found dead at a PNC visit (F6).
    n3 = uid()
    preg3, _ = birth(world, "2026-03-20", babies=[(n3, "male", "alive")])
    pnc(world, preg3, "2026-03-20", "2026-03-25", [n3], baby=[
        {"child_id": n3, "status": "died"}])
    # A pregnancy-related death on the person record; one older than a year.
    m1 = world.person(vital_status="died", date_of_death="2026-02-03",
                      death_pregnancy_related="pregnant_or_within_42d")
    world.person(dob="1990-01-01", recorded_on="2025-01-01", vital_status="died",
                 date_of_death="2025-04-19", death_pregnancy_related="pregnant_or_within_42d")
    got = rows_of(world, "deaths")
    assert got == sorted([(n1, "newborn_death", days_before("2026-03-10")),
                          (n2, "newborn_death", days_before("2026-04-01")),
                          (n3, "newborn_death", days_before("2026-03-25")),
                          (m1, "pregnancy_related_death", days_before("2026-02-03"))])


def test_migration_rebuilds_facts_written_before_the_newborn_danger_fix(client, db_path):
    # Facts written at push time by the old code lacked jaundice and cord
    # infection; the migration re-runs the backfill so they reach the list.
    world = World(client)
    on = "2026-04-10"
    preg, _ = birth(world, on)
    baby = uid()
    visit = old_pnc(world, preg, on, "2026-04-12", [(baby, ["jaundice_palms_soles"], {})])
    person = world.person(hi_has_card="no", recorded_on="2026-04-01")
    assert [r[0] for r in rows_of(world, "danger_signs_not_referred")] == [baby]
    from server import migrations
    position = [fn.__name__ for fn in migrations.MIGRATIONS].index(
        "m010_rebuild_indicator_facts") + 1
    conn = sqlite3.connect(db_path)
    # Make the facts what the old code wrote: no danger flag, no registration date.
    [f] = conn.execute("SELECT f FROM facts WHERE id = ?", [visit]).fetchone()
    stale = f.replace('"jaundice_palms_soles"', '"x"').replace("true", "false")
    conn.execute("UPDATE facts SET f = ? WHERE id = ?", [stale, visit])
    conn.execute("UPDATE facts SET f = json_remove(f, '$.reg') WHERE id = ?", [person])
    conn.execute(f"PRAGMA user_version = {position - 1}")
    conn.commit()
    before = conn.execute("SELECT id, f FROM facts ORDER BY id").fetchall()
    conn.close()
    assert rows_of(world, "danger_signs_not_referred") == []
    run_cli(db_path, "init")
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations.MIGRATIONS)
    after = dict(conn.execute("SELECT id, f FROM facts ORDER BY id").fetchall())
    conn.close()
    assert set(after) == {i for i, _ in before}
    assert '"reg":"2026-04-01"' in after[person]
    assert [r[0] for r in rows_of(world, "danger_signs_not_referred")] == [baby]


def test_no_home_visit_lists_keep_births_whose_mother_died(client):
    # The newborn of a mother who died after delivery still needs its home
    # visits (TT 30/2024): the birth stays on the day-7 list, under the baby.
    world = World(client)
    on = (DAY - timedelta(days=20)).isoformat()
    child = uid()
    birth(world, on, babies=[(child, "male", "alive")], mother="died",
          mother_death_date=on)
    assert rows_of(world, "no_home_visit_day7") == [(child, "no_home_visit_by_day7", 13)]

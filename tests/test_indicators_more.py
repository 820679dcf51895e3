"""Issue 15: the indicators test_indicators.py does not cover (postnatal care,
breastfeeding, overweight, counselling, insurance, child protection, group
sessions), over hand-built records pushed through the real API. Each test
works out its expected numerator and denominator case by case from DOMAIN.md
§2, never from the code under test; the period is 2026-01-01 to 2026-03-31."""
from datetime import date, timedelta

import pytest

from tests.conftest import cp_report
from tests.test_indicators import PERIOD, World, uid

FACILITY = {"provincial_hosp", "district_hosp_or_regional_centre", "CHS", "private_facility"}


@pytest.fixture
def world(client):
    return World(client)


def plus(iso, days):
    return (date.fromisoformat(iso) + timedelta(days=days)).isoformat()


def birth(world, on, place="home", kind="live_birth", babies=None, checked="no", **over):
    """A woman, her pregnancy and its outcome on `on`; returns (pregnancy, [child ids])."""
    woman = world.person()
    preg = world.pregnancy(woman)
    if babies is None:
        babies = [(uid(), "female", "alive")] if kind == "live_birth" else \
            [(None, "male", "fresh_stillbirth")]
    extra = {"checked_before_discharge": checked} if place in FACILITY else {}
    world.outcome(preg, on, babies, kind=kind, place=place,
                  attendant="midwife" if place in FACILITY else "relative", **{**extra, **over})
    return preg, [c for c, _, s in babies if s in ("alive", "died_after_birth")]


def pnc(world, preg, outcome_date, visit_date, children=(), facility=False, number=1,
        role="vhw", discharge=None, mother="alive", recall=("breast_milk",), **over):
    """A v2 postnatal home visit (F6) of a pregnancy's live-born `children`."""
    data = {"pregnancy_id": preg, "outcome_date": outcome_date, "facility_birth": facility,
            "live_birth": bool(children), "visit_date": visit_date, "visit_number": number,
            "visitor_role": role, "mother_status": mother, "referred_to": "none"}
    if facility and discharge:
        data["discharge_date"] = discharge
    if mother == "alive":
        data["mother_danger_signs"] = ["none"]
    else:
        data["mother_death_date"] = over.pop("mother_death_date", visit_date)
    if children:
        day_pp = (date.fromisoformat(visit_date) - date.fromisoformat(outcome_date)).days
        data["baby"] = [{"child_id": c, "status": "alive", "danger_signs": ["none"],
                         **({"bf_recall": list(recall)} if day_pp >= 1 else {})}
                        for c in children]
    data.update(over)
    return world.push("pnc_visit", data)


def pair(got):
    return got["numerator"], got["denominator"]


# -- event indicators: postnatal care (DOMAIN §2.5a–c) -------------------------

def test_pnc_48h_mothers_checked_within_two_days_of_a_birth_in_the_period(world):
    # 5a: numerator = women with a birth in P checked within 2 days (a
    # facility's check before discharge counts); denominator = women with a
    # live birth or stillbirth in P. The birth, not the visit, must be in P.
    cases = [  # (outcome date, place, kind, checked before discharge, visit day or None)
        ("2026-02-01", "home", "live_birth", "no", 2),       # day 2: hit
        ("2026-02-01", "home", "live_birth", "no", 3),       # day 3: miss
        ("2026-02-01", "CHS", "live_birth", "yes", None),    # checked before discharge: hit
        ("2026-02-01", "CHS", "live_birth", "no", 1),        # visit on day 1: hit
        ("2026-02-01", "CHS", "live_birth", "no", None),     # nothing: miss
        ("2026-02-01", "home", "stillbirth", "no", 0),       # stillbirth counts: hit
        ("2026-01-01", "home", "live_birth", "no", 0),       # first day of P: hit
        ("2026-03-31", "home", "live_birth", "no", 2),       # last day, visit after P: hit
        ("2025-12-31", "home", "live_birth", "no", 1),       # birth before P: not counted
        ("2026-04-01", "home", "live_birth", "no", 0),       # birth after P: not counted
    ]
    num = den = 0
    for on, place, kind, checked, visit_day in cases:
        preg, children = birth(world, on, place, kind, checked=checked)
        if visit_day is not None:
            pnc(world, preg, on, plus(on, visit_day), children, facility=place in FACILITY,
                discharge=on if place in FACILITY else None)
        if PERIOD["from"] <= on <= PERIOD["to"]:
            den += 1
            num += checked == "yes" or (visit_day is not None and visit_day <= 2)
    # A miscarriage is no birth: never in the denominator.
    woman = world.person()
    preg = world.pregnancy(woman)
    world.push("pregnancy_outcome", {
        "pregnancy_id": preg, "lmp_date": "2025-11-01", "outcome_date": "2026-02-01",
        "outcome_type": "miscarriage", "ga_weeks_at_outcome": 13, "place": "home",
        "mother_outcome": "alive_well"})
    got = world.indicators()["pnc_48h"]
    assert pair(got) == (num, den) == (6, 8)


def test_pnc_48h_newborn_version_counts_live_born_babies_checked_within_two_days(world):
    # 5a, newborn version: live-born babies of P checked within 2 days (the
    # visit must examine that baby); stillborn babies are not in it.
    twins = [(uid(), "female", "alive"), (uid(), "male", "alive")]
    preg, (a, b) = birth(world, "2026-02-01", babies=twins)
    pnc(world, preg, "2026-02-01", "2026-02-02", [a])             # only twin a examined
    preg2, (c,) = birth(world, "2026-02-10", babies=[(uid(), "male", "alive"),
                                                     (None, "female", "fresh_stillbirth")])
    pnc(world, preg2, "2026-02-10", "2026-02-15", [c])            # day 5: too late
    birth(world, "2026-02-20", place="CHS", checked="yes")        # checked before discharge
    got = world.indicators()["pnc_48h"]["by"]["subject"]["newborn"]
    # Babies: a (hit), b (miss), c (miss), the CHS baby (hit); the stillborn twin is out.
    assert pair(got) == (2, 4)


def test_pnc_48h_uses_the_hours_when_both_times_are_known(world):
    # "Within 2 days (<= 48 h)": a day-2 visit is within 48 h only if it comes
    # no later in the day than the birth; without both times, day 2 counts.
    num = den = 0
    for birth_time, visit_time, hit in [("08:00", "07:30", True), ("08:00", "08:00", True),
                                        ("08:00", "09:15", False), (None, "23:00", True)]:
        preg, kids = birth(world, "2026-02-01", **({"outcome_time": birth_time}
                                                   if birth_time else {}))
        pnc(world, preg, "2026-02-01", "2026-02-03", kids, visit_time=visit_time)
        den += 1
        num += hit
    got = world.indicators()["pnc_48h"]
    assert pair(got) == (num, den) == (3, 4)
    assert pair(got["by"]["subject"]["newborn"]) == (3, 4)


def test_home_visit_tt30_counts_one_visit_per_date_and_births_whose_mother_died_later(world):
    # 5b: facility births need a visit within 7 days of discharge (day 7 when
    # discharge is unknown); other births 2 visits, the 1st within 1 day and the
    # 2nd within 7 days of it. Denominator: births in P, mother alive at delivery.
    num = den = 0

    def case(place, visits, discharge=None, hit=False, mother="alive_well", **over):
        nonlocal num, den
        on = "2026-02-01"
        preg, children = birth(world, on, place, mother=mother, **over)
        for n, (d, dead) in enumerate(visits, start=1):
            pnc(world, preg, on, plus(on, d), children, facility=place in FACILITY, number=n,
                discharge=discharge, mother="died" if dead else "alive",
                **({"mother_death_date": plus(on, 3)} if dead else {}))
        den += 1
        num += hit

    case("CHS", [(10, False)], discharge="2026-02-05", hit=True)    # 6 days after discharge
    case("CHS", [(11, False)], discharge="2026-02-03", hit=False)   # 9 days after discharge
    case("CHS", [(8, False)], hit=False)                             # no discharge: day 8
    case("CHS", [(7, False)], hit=True)                              # no discharge: day 7
    case("home", [(1, False), (6, False)], hit=True)                 # days 1 and 6
    case("home", [(1, False), (1, False)], hit=False)                # one date twice: 1 visit
    case("home", [(2, False), (5, False)], hit=False)                # 1st visit too late
    case("home", [(0, False), (8, False)], hit=False)                # 2nd 8 days after 1st
    # The mother died on day 3, after delivery: her newborn still needs its
    # visits, so the birth stays in the denominator (and here is a hit).
    case("home", [(1, False), (4, True)], hit=True, mother="died",
         mother_death_date="2026-02-04")
    got = world.indicators()["home_visit_tt30"]
    assert pair(got) == (num, den) == (4, 9)


def test_pnc_42d_counts_checks_by_health_station_staff_within_42_days(world):
    # 5c: postpartum women of P examined by a physician within 42 days (CHS
    # staff stand for the physician; a check before discharge counts).
    preg, kids = birth(world, "2026-02-01")
    pnc(world, preg, "2026-02-01", "2026-03-15", kids, role="CHS_staff")    # day 42: hit
    preg, kids = birth(world, "2026-02-01")
    pnc(world, preg, "2026-02-01", "2026-02-05", kids, role="vhw")          # VHW only: miss
    birth(world, "2026-02-01", place="CHS", checked="yes")                 # hit
    preg, kids = birth(world, "2026-03-01", kind="stillbirth")
    pnc(world, preg, "2026-03-01", "2026-03-03", kids, role="CHS_staff")    # hit
    preg, kids = birth(world, "2025-12-20")                                 # birth before P
    pnc(world, preg, "2025-12-20", "2026-01-05", kids, role="CHS_staff")
    assert pair(world.indicators()["pnc_42d"]) == (3, 4)


# -- status indicators --------------------------------------------------------

def counselling(world, child, dob, on, bf="yes", recall=("none",), topics=("exclusive_bf",),
                **over):
    age = (date.fromisoformat(on) - date.fromisoformat(dob)).days
    data = {"child_id": child, "child_dob": dob, "session_date": on, "modality": "home_visit",
            "counselled_person": "mother", "topics": list(topics)}
    if age >= 1:
        data["breastfed_yesterday"] = bf
    if 1 <= age <= 182:
        data["recall_liquids_foods"] = list(recall)
    if 183 <= age <= 730:
        data["food_groups_yesterday"] = ["breast_milk", "grains_roots_tubers"]
    data.update(over)
    return world.push("nutrition_counselling", data)


def test_exclusive_bf_takes_each_infants_latest_recall_in_the_period(world):
    # §2.6: infants 0–182 days whose latest 24-h recall in P shows breast milk
    # only (ORS, drops and syrups allowed); one recall per infant.
    # A: PNC recall breast milk only, then a later counselling recall with water.
    preg, (a,) = birth(world, "2026-01-10")
    pnc(world, preg, "2026-01-10", "2026-01-15", [a])
    counselling(world, a, "2026-01-10", "2026-02-20", recall=["water"])        # latest: miss
    # B: breast milk plus ORS only.
    b = world.person(sex="male", dob="2025-12-01")
    counselling(world, b, "2025-12-01", "2026-03-01", recall=["ORS_drops_syrups"])   # hit
    # C: 190 days old at the recall: beyond 182 days, not counted.
    c = world.person(sex="male", dob="2025-08-01")
    counselling(world, c, "2025-08-01", plus("2025-08-01", 190))
    # D: PNC recall with water besides breast milk.
    preg, (d,) = birth(world, "2026-02-01")
    pnc(world, preg, "2026-02-01", "2026-02-04", [d], recall=["breast_milk", "water"])  # miss
    # E: only recalled before P.
    e = world.person(sex="female", dob="2025-11-01")
    counselling(world, e, "2025-11-01", "2025-12-20")
    # F: exactly 182 days old at a recall of breast milk only.
    f = world.person(sex="female", dob="2025-09-30")
    counselling(world, f, "2025-09-30", plus("2025-09-30", 182))               # hit
    # G: an earlier exclusive recall does not save a later one in P that is not.
    g = world.person(sex="male", dob="2025-12-15")
    counselling(world, g, "2025-12-15", "2026-01-05")
    counselling(world, g, "2025-12-15", "2026-03-31", bf="no")                 # miss
    got = world.indicators()["exclusive_bf"]
    assert pair(got) == (2, 5)   # hits B, F; denominator A, B, D, F, G


def test_overweight_latest_measurement_oedema_and_flags(world):
    # §2.7: WHZ > +2 among children 0–59 months with a valid WHZ on their
    # latest measurement in P; oedema counts as < −3 (denominator only); a WHZ
    # beyond ±5 is flagged and excluded.
    from schemas.growth import zscores
    dob = "2024-06-01"

    def whz(sex, on, w, l):
        age = (date.fromisoformat(on) - date.fromisoformat(dob)).days
        return zscores("M" if sex == "male" else "F", age, w, l, "lying")["whz"]

    heavy = ("male", "2026-02-01", 13.5, 78.0)
    normal = ("female", "2026-02-01", 9.0, 76.0)
    extreme = ("male", "2026-02-01", 21.0, 76.0)
    assert whz(*heavy) > 2 and -2 < whz(*normal) < 2 and whz(*extreme) > 5   # premises
    a = world.person(sex="male", dob=dob)
    world.growth(a, dob, *heavy)                                               # hit
    b = world.person(sex="female", dob=dob)
    world.growth(b, dob, *normal)                                              # miss
    c = world.person(sex="female", dob=dob)
    world.growth(c, dob, "female", "2026-02-01", 12.0, 76.0, oedema=True)     # den only
    d = world.person(sex="male", dob=dob)
    world.growth(d, dob, *extreme)                                             # flagged: out
    e = world.person(sex="male", dob=dob)
    world.growth(e, dob, "male", "2026-01-10", 13.5, 78.0)                     # latest in P
    world.growth(e, dob, "male", "2026-04-10", 9.0, 80.0)                      # after P
    f = world.person(sex="male", dob=dob)
    world.growth(f, dob, "male", "2026-01-10", 13.5, 78.0)
    world.growth(f, dob, "male", "2026-03-31", 10.0, 79.0)                     # latest: normal
    assert -2 < whz("male", "2026-03-31", 10.0, 79.0) < 2
    got = world.indicators()["overweight"]
    assert pair(got) == (2, 5)   # hits A, E; denominator A, B, C, E, F


def test_counselling_u2_on_the_reference_date(world):
    # §2.8: registered children 0–730 days on the reference date (31 March),
    # alive; numerator: a counselling session in the last 12 months, or ANC
    # counselling on breastfeeding during the pregnancy.
    ref = date(2026, 3, 31)
    a = world.person(sex="female", dob="2025-06-01")
    counselling(world, a, "2025-06-01", "2025-10-01")                          # hit
    b_dob = (ref - timedelta(days=730)).isoformat()                            # 730 days: in
    b = world.person(sex="male", dob=b_dob)
    counselling(world, b, b_dob, (ref - timedelta(days=365)).isoformat())      # 12 months + 1 day
    c_dob = (ref - timedelta(days=731)).isoformat()                            # 731 days: out
    c = world.person(sex="male", dob=c_dob)
    counselling(world, c, c_dob, "2026-01-05")
    # D: born of a pregnancy whose ANC contact counselled on breastfeeding.
    mother = world.person()
    preg = world.pregnancy(mother)
    world.anc(preg, "2025-09-01", counselling_topics=["breastfeeding"])
    d = uid()
    world.outcome(preg, "2026-02-01", [(d, "female", "alive")])
    world.push("person", {"household_id": uid(), "full_name": "Bé Hoa", "sex": "female",
                          "dob": "2026-02-01", "dob_precision": "exact", "ethnicity_code": "09",
                          "relationship_to_head": "child", "recorded_on": "2026-02-05",
                          "hi_has_card": "no", "vital_status": "alive"}, record_id=d)  # hit
    e = world.person(sex="male", dob="2025-08-01", vital_status="died",
                     date_of_death="2026-01-01")                               # died: out
    counselling(world, e, "2025-08-01", "2025-09-01")
    world.person(sex="male", dob="2026-04-02", recorded_on="2026-04-03")       # born after
    g = world.person(sex="female", dob="2025-09-01", recorded_on="2026-04-10")  # registered after
    counselling(world, g, "2025-09-01", "2025-12-01")
    got = world.indicators()["counselling_u2"]
    assert pair(got) == (2, 3)   # hits A, D; denominator A, B, D


def test_hi_coverage_valid_card_on_the_reference_date_among_registered_residents(world):
    # §2.9: resident registered persons on the reference date (31 March) with a
    # card valid that day (hi_valid_from ≤ ref ≤ hi_valid_to).
    def card(start, end, code="DT", **over):
        return world.person(hi_has_card="yes", hi_number="22%08d" % world.counter,
                            hi_object_code=code, hi_valid_from=start, hi_valid_to=end, **over)

    card("2026-01-01", "2026-12-31")                                   # hit
    card("2025-04-01", "2026-03-31", code="TE")                        # ends on ref: hit
    card("2026-04-01", "2027-03-31")                                   # starts after: miss
    card("2025-03-31", "2026-03-30")                                   # ended the day before
    world.person()                                                     # no card: miss
    card("2026-01-01", "2026-12-31", vital_status="moved_out")         # not resident: out
    card("2026-01-01", "2026-12-31", vital_status="died",
         date_of_death="2026-03-01", death_pregnancy_related="not")    # died before ref: out
    card("2026-01-01", "2026-12-31", vital_status="died",
         date_of_death="2026-04-05", death_pregnancy_related="not")    # alive on ref: hit
    card("2026-01-01", "2026-12-31", recorded_on="2026-04-10")         # registered after: out
    card("2026-04-02", "2027-12-31", dob="2026-04-02", code="TE",
         recorded_on="2026-04-05")                                     # born after: out
    got = world.indicators()["hi_coverage"]
    assert pair(got) == (3, 6)
    codes = got["by"]["hi_object_code"]
    assert codes["DT"]["numerator"] == 2 and codes["TE"]["numerator"] == 1


# -- count-only indicators ----------------------------------------------------

def test_early_and_consanguineous_marriage_cases_once_per_couple_in_the_period(client):
    # §2.10: F9 cases whose union_date is in P, deduplicated per couple; count only.
    sup = World(client, "sup", "dev-sup-cp")
    girl, boy = uid(), uid()
    couple = dict(party_a_person_id=girl, party_b_person_id=boy)
    sup.push("cp_report", cp_report(union_date="2026-02-01", report_date="2026-02-10",
                                    **couple), version=1)
    sup.push("cp_report", cp_report(union_date="2026-02-01", report_date="2026-03-01",
                                    **couple), version=1)   # the same couple reported again
    sup.push("cp_report", cp_report(union_date="2026-03-31", report_date="2026-04-02",
                                    case_type=["early_marriage", "consanguineous_marriage"],
                                    kinship="first_cousins", party_a_dob="2010-01-01"),
             version=1)
    sup.push("cp_report", cp_report(union_date="2025-12-31", report_date="2026-01-02",
                                    party_a_dob="2010-02-02"), version=1)   # before P
    sup.push("cp_report", cp_report(union_date="2026-01-01", report_date="2026-01-20",
                                    case_type=["consanguineous_marriage"],
                                    kinship="second_cousins", party_a_dob="2000-01-01",
                                    party_b_dob="1998-01-01"), version=1)
    got = sup.indicators()
    early, cons = got["early_marriage"], got["consanguineous_marriage"]
    assert (early["numerator"], early["denominator"], early["value"]) == (2, None, 2)
    assert (cons["numerator"], cons["denominator"], cons["value"]) == (2, None, 2)


def test_group_sessions_count_once_per_club_and_date(client, world):
    # §2.11: sessions held in P, one per club and date even when two devices
    # recorded the same session; clubs registered (active, set up by the end of P).
    other = World(client, "hw", "dev-ind-2")

    def club(established, status="active"):
        return world.push("club", {"club_name": "CLB", "club_type": "child_care_club",
                                   "established_on": established, "status": status},
                          version=1)

    def session(club_id, on, by=world, total=20, caregivers=8):
        by.push("group_session", {
            "group_id": club_id, "group_type": "child_care_club", "session_date": on,
            "facilitator_role": "vhw", "topics": ["breastfeeding"], "language": "dao",
            "attendees_total": total, "attendees_female": 15, "attendees_ethnic_minority": 18,
            "attendees_caregivers_u2": caregivers, "duration_min": 60})

    x, y = club("2025-06-01"), club("2026-03-31")
    club("2026-04-01")                                   # set up after P
    club("2025-01-01", status="inactive")
    session(x, "2026-02-01")
    session(x, "2026-02-01", by=other)                   # the same session from a 2nd device
    session(x, "2026-02-15")
    session(y, "2026-03-31")                             # last day of P
    session(y, "2026-04-01")                             # after P
    session(y, "2025-12-31")                             # before P
    got = world.indicators()["group_sessions"]
    assert (got["numerator"], got["denominator"], got["value"]) == (3, None, 3)
    assert got["extra"]["attendees"] == 3 * 20
    assert got["extra"]["attendees_caregivers_u2"] == 3 * 8
    assert got["extra"]["clubs_registered"] == 2


"""Issue 15: DOMAIN.md §2 indicators over hand-built records pushed through the
real API (the Flask app on a real SQLite file). Each test works out its
expected numerator and denominator from DOMAIN's definition, record by
record, and never from the code under test."""
import uuid
from datetime import date, timedelta

import pytest

from tests.conftest import login, now_ms, hlc_at

PERIOD = {"from": "2026-01-01", "to": "2026-03-31"}
AREA = "QN.LM.03"


def uid():
    return str(uuid.uuid4())


class World:
    """Pushes records as the health worker `hw` (areas QN.LM.03)."""

    def __init__(self, client, user="hw", device="dev-ind-1"):
        self.client, self.device = client, device
        self.token = login(client, user, device)
        self.counter = 0

    def push(self, form, data, version=2, area=AREA, record_id=None):
        record_id = record_id or uid()
        self.counter += 1
        change = {"id": record_id, "form": form, "form_version": version, "area": area,
                  "data": data, "hlc": hlc_at(now_ms(), self.device, self.counter)}
        resp = self.client.post("/api/v1/sync/push", headers=self.auth(), json={
            "device_id": self.device, "batch_id": uid(), "device_time": "2026-12-01T00:00:00Z",
            "app_version": "test", "records": [change]})
        assert resp.status_code == 200, resp.get_json()
        [result] = resp.get_json()["results"]
        assert result["status"] == "applied", result
        return record_id

    def auth(self):
        return {"Authorization": f"Bearer {self.token}"}

    # -- record builders (valid v2 data) --------------------------------------

    def person(self, sex="female", dob="1998-03-15", eth="09", area=AREA, **over):
        data = {"household_id": uid(), "full_name": "Triệu Thị Mai", "sex": sex, "dob": dob,
                "dob_precision": "exact", "ethnicity_code": eth,
                "relationship_to_head": "spouse", "recorded_on": "2026-01-05",
                "hi_has_card": "no", "vital_status": "alive"}
        data.update(over)
        return self.push("person", data, area=area)

    def pregnancy(self, woman, woman_dob="1998-03-15", lmp="2025-05-01", prior=0, **over):
        edd = (date.fromisoformat(lmp) + timedelta(days=280)).isoformat()
        data = {"woman_id": woman, "woman_dob": woman_dob, "registration_date": "2025-07-01",
                "lmp_known": "yes", "lmp_date": lmp, "edd": edd, "edd_source": "lmp",
                "prev_term_births": 0, "prev_preterm_births": 0,
                "prev_abortions_miscarriages": 0, "living_children": 0, "risk_factors": ["none"],
                "planned_delivery_place": "commune_health_station", "mch_handbook_issued": True,
                "prior_anc_contacts_unrecorded": prior, "status": "ongoing"}
        data.update(over)
        return self.push("pregnancy", data, version=1)

    def anc(self, preg, visit_date, lmp="2025-05-01", contact="anc_checkup", **over):
        data = {"pregnancy_id": preg, "lmp_date": lmp, "visit_date": visit_date,
                "contact_type": contact, "provider": "midwife" if contact == "anc_checkup"
                else "vhw", "place": "CHS" if contact == "anc_checkup" else "home",
                "danger_signs": ["none"], "referred_to": "none"}
        data.update(over)
        return self.push("anc_visit", data)

    def outcome(self, preg, on, babies, kind="live_birth", place="CHS", attendant="midwife",
                lmp="2025-05-01", mother="alive_well", area=AREA, **over):
        data = {"pregnancy_id": preg, "lmp_date": lmp, "outcome_date": on,
                "outcome_type": kind, "ga_weeks_at_outcome": 38, "n_babies": len(babies),
                "place": place, "attendant": attendant, "mode": "vaginal",
                "mother_outcome": mother,
                "baby": [{"status": status, "sex": sex, **({"child_id": child} if child else {})}
                         for child, sex, status in babies]}
        if place in ("provincial_hosp", "district_hosp_or_regional_centre", "CHS",
                     "private_facility"):
            data["checked_before_discharge"] = "no"
        data.update(over)
        return self.push("pregnancy_outcome", data, area=area)

    def growth(self, child, dob, sex, on, weight, lenhei, muac=None, oedema=False, **over):
        data = {"child_id": child, "child_dob": dob, "child_sex": sex,
                "child_dob_precision": "exact", "measured_on": on, "weight_kg": weight,
                "lenhei_cm": lenhei, "position": "lying" if
                (date.fromisoformat(on) - date.fromisoformat(dob)).days < 731 else "standing",
                "oedema_bilateral": oedema, "referred_to": "district", "counselled": True}
        if muac is not None:
            data["muac_mm"] = muac
        data.update(over)
        return self.push("growth", data)

    # -- reading --------------------------------------------------------------

    def indicators(self, token=None, **params):
        resp = self.client.get("/api/v1/indicators", query_string={"area": AREA, **PERIOD,
                                                                   **params},
                               headers={"Authorization": f"Bearer {token or self.sup()}"})
        assert resp.status_code == 200, resp.get_json()
        return {i["id"]: i for i in resp.get_json()["indicators"]}

    def sup(self):
        if not hasattr(self, "_sup"):
            self._sup = login(self.client, "sup", "dev-sup-1")
        return self._sup


@pytest.fixture
def world(client):
    return World(client)


def woman_with_birth(world, on, n_checkups, dob="1998-03-15", eth="09", place="CHS",
                     attendant="midwife", babies=None, prior=0, kind="live_birth",
                     checkup_dates=None):
    woman = world.person(dob=dob, eth=eth)
    preg = world.pregnancy(woman, woman_dob=dob, prior=prior)
    dates = checkup_dates or ["2025-07-%02d" % (1 + i) for i in range(n_checkups)]
    for d in dates:
        world.anc(preg, d)
    babies = babies or [(uid(), "female", "alive")]
    world.outcome(preg, on, babies, kind=kind, place=place, attendant=attendant)
    return woman, preg


def test_anc4_counts_women_15_49_with_a_live_birth_and_four_checkups(world):
    # DOMAIN §2.1: numerator = women with a live birth in P with >= 4 ANC
    # check-ups (F4 anc_checkup + prior_anc_contacts_unrecorded); denominator =
    # women 15–49 with a live birth in P. VHW home follow-ups do not count.
    cases = [  # (dob, checkups, prior, in period, live birth)
        ("1998-03-15", 4, 0, True, True),    # 27 y, 4 contacts: hit
        ("1990-01-01", 3, 1, True, True),    # 3 + 1 prior = 4: hit
        ("1995-06-01", 3, 0, True, True),    # 3: miss
        ("2010-02-01", 5, 0, True, True),    # 15 y at the birth: in the band, hit
        ("2012-01-01", 5, 0, True, True),    # 14 y: outside 15–49, all-ages only
        ("1980-01-01", 4, 0, False, True),   # birth outside the period
        ("1996-01-01", 4, 0, True, False),   # stillbirth: not a live birth
    ]
    expected_num = expected_den = all_num = all_den = 0
    for dob, n, prior, inside, live in cases:
        on = "2026-02-10" if inside else "2025-12-20"
        babies = [(uid(), "male", "alive")] if live else [(None, "male", "fresh_stillbirth")]
        woman = world.person(dob=dob)
        preg = world.pregnancy(woman, woman_dob=dob, prior=prior)
        for i in range(n):
            world.anc(preg, "2025-07-%02d" % (1 + i))
        world.anc(preg, "2025-08-01", contact="home_followup_by_vhw")   # never counts
        world.outcome(preg, on, babies, kind="live_birth" if live else "stillbirth")
        age = (date.fromisoformat(on) - date.fromisoformat(dob)).days // 365.2425
        if inside and live:
            all_den += 1
            all_num += (n + prior) >= 4
            if 15 <= age <= 49:
                expected_den += 1
                expected_num += (n + prior) >= 4
    got = world.indicators()["anc4"]
    assert (got["numerator"], got["denominator"]) == (expected_num, expected_den) == (3, 4)
    assert got["value"] == 75.0
    assert got["by"]["age_band"]["all_ages"]["numerator"] == all_num
    assert got["by"]["age_band"]["all_ages"]["denominator"] == all_den


def test_anc4_vn_needs_a_contact_in_each_trimester_and_counts_stillbirths(world):
    # LMP 2025-05-01: trimester 1 until week 13 (to 2025-07-30), 2 to week 27.
    full = ["2025-06-15", "2025-09-01", "2025-12-01", "2026-01-10"]   # weeks 6, 17, 30, 36
    two_trimesters = ["2025-06-15", "2025-06-20", "2025-09-01", "2025-09-10"]
    woman_with_birth(world, "2026-02-01", 0, checkup_dates=full)
    woman_with_birth(world, "2026-02-01", 0, checkup_dates=two_trimesters)
    woman_with_birth(world, "2026-02-01", 0, checkup_dates=full, kind="stillbirth",
                     babies=[(None, "male", "fresh_stillbirth")])
    got = world.indicators()["anc4_vn"]
    # Denominator: women who delivered (live or still); numerator: >= 4 and all 3 trimesters.
    assert (got["numerator"], got["denominator"]) == (2, 3)
    # The WHO variant counts the live births only, whatever the trimesters.
    who = world.indicators()["anc4"]
    assert (who["numerator"], who["denominator"]) == (2, 2)


def test_facility_delivery_and_skilled_attendance_count_live_births_not_stillbirths(world):
    # DOMAIN §2.2–3: live births (babies alive or died after birth) in P.
    births = [  # (place, attendant, babies)
        ("CHS", "midwife", [("female", "alive"), ("male", "fresh_stillbirth")]),
        ("home", "traditional_birth_attendant", [("male", "alive")]),
        ("district_hosp_or_regional_centre", "doctor", [("female", "died_after_birth")]),
        ("home", "village_midwife", [("female", "alive"), ("female", "alive")]),
        ("en_route", "relative", [("male", "alive")]),
    ]
    facility = {"provincial_hosp", "district_hosp_or_regional_centre", "CHS", "private_facility"}
    skilled = {"doctor", "assistant_doctor", "midwife", "nurse"}
    den = fac = sba = vm = girls = girls_fac = 0
    for place, attendant, babies in births:
        woman_with_birth(world, "2026-03-01", 4, place=place, attendant=attendant,
                         babies=[(uid() if s != "fresh_stillbirth" else None, sex, s)
                                 for sex, s in babies])
        for sex, s in babies:
            if s in ("alive", "died_after_birth"):
                den += 1
                fac += place in facility
                sba += attendant in skilled
                vm += attendant == "village_midwife"
                girls += sex == "female"
                girls_fac += sex == "female" and place in facility
    got = world.indicators()
    assert (got["facility_delivery"]["numerator"], got["facility_delivery"]["denominator"]) \
        == (fac, den) == (2, 6)
    assert (got["skilled_attendance"]["numerator"], got["skilled_attendance"]["denominator"]) \
        == (sba, den)
    assert got["skilled_attendance"]["by"]["attendant"]["village_midwife"]["numerator"] == vm == 2
    by_sex = got["facility_delivery"]["by"]["sex"]["female"]
    assert (by_sex["numerator"], by_sex["denominator"]) == (girls_fac, girls)


def test_breakdowns_by_ethnicity_and_mother_age(world):
    woman_with_birth(world, "2026-02-01", 4, dob="1990-01-01", eth="01")          # Kinh, 36
    woman_with_birth(world, "2026-02-01", 4, dob="2009-01-01", eth="09", place="home")  # Dao, 17
    woman_with_birth(world, "2026-02-01", 4, dob="2007-06-01", eth="02")          # Tày, 18
    got = world.indicators()["facility_delivery"]["by"]
    assert got["ethnicity"]["kinh"] == {"numerator": 1, "denominator": 1, "value": 100.0}
    assert got["ethnicity"]["ethnic_minority"] == {"numerator": 1, "denominator": 2,
                                                   "value": 50.0}
    assert got["mother_age"]["<18"]["numerator"] == 0
    assert got["mother_age"]["18-19"]["denominator"] == 1
    assert got["mother_age"][">=35"]["denominator"] == 1


def test_pregnancy_related_deaths_once_per_woman_from_three_sources(world):
    # DOMAIN §2.4: F5 mother died, F6 mother died, F2 pregnant_or_within_42d;
    # count only (null denominator), deduplicated per woman.
    died = dict(vital_status="died", date_of_death="2026-02-03",
                death_pregnancy_related="pregnant_or_within_42d")
    # Woman 1: reported by her outcome AND her person record: one death.
    w1 = world.person(dob="1995-01-01", **died)
    p1 = world.pregnancy(w1, woman_dob="1995-01-01")
    world.outcome(p1, "2026-02-01", [(uid(), "male", "alive")], mother="died",
                  mother_death_date="2026-02-03")
    # Woman 2: only a person record.
    world.person(dob="1990-01-01", eth="01", **died)
    # Not counted: a death not related to pregnancy, and one outside P.
    world.person(dob="1995-01-01", **{**died, "death_pregnancy_related": "not"})
    world.person(dob="1995-01-01", **{**died, "date_of_death": "2025-11-01"})
    # Woman 3: died at home after the birth, reported by the PNC visit (F6).
    w3 = world.person(dob="2000-01-01")
    p3 = world.pregnancy(w3, woman_dob="2000-01-01")
    world.outcome(p3, "2026-03-01", [(uid(), "male", "alive")], place="home",
                  attendant="relative")
    world.push("pnc_visit", {
        "pregnancy_id": p3, "outcome_date": "2026-03-01", "facility_birth": False,
        "live_birth": True, "visit_date": "2026-03-05", "visit_number": 1,
        "visitor_role": "vhw", "mother_status": "died", "mother_death_date": "2026-03-04",
        "baby": [{"child_id": uid(), "status": "alive", "danger_signs": ["none"],
                  "bf_recall": ["breast_milk"]}], "referred_to": "none"})
    got = world.indicators()["pregnancy_related_deaths"]
    assert (got["numerator"], got["denominator"], got["value"]) == (3, None, 3)
    assert got["by"]["ethnicity"]["kinh"]["numerator"] == 1
    assert got["by"]["ethnicity"]["ethnic_minority"]["numerator"] == 2


def test_wasting_sam_mam_latest_measurement_and_oedema(world):
    # DOMAIN §2.7/7b with WHO cut-offs; each child's latest measurement in P.
    dob = "2025-01-01"
    # Child A: earlier wasted, latest normal -> counts as normal (latest only).
    a = world.person(sex="male", dob=dob)
    world.growth(a, dob, "male", "2026-01-10", 7.0, 75.0, muac=118)     # WHZ ~ -3.8: SAM
    world.growth(a, dob, "male", "2026-03-10", 9.6, 76.0, muac=140)     # normal
    # Child B: oedema -> SAM, counted as severely wasted and underweight.
    b = world.person(sex="female", dob=dob)
    world.growth(b, dob, "female", "2026-02-01", 8.0, 74.0, oedema=True)
    # Child C: MUAC 120 with a normal WHZ -> MAM.
    c = world.person(sex="female", dob=dob)
    world.growth(c, dob, "female", "2026-02-01", 8.6, 73.0, muac=120)
    # Child D: measured outside P only -> not counted.
    d = world.person(sex="male", dob=dob)
    world.growth(d, dob, "male", "2025-12-01", 7.0, 75.0, muac=110)
    from schemas.growth import zscores
    z_a = zscores("M", (date(2026, 3, 10) - date(2025, 1, 1)).days, 9.6, 76.0, "lying")
    z_c = zscores("F", (date(2026, 2, 1) - date(2025, 1, 1)).days, 8.6, 73.0, "lying")
    assert z_a["whz"] > -2 and -2 < z_c["whz"] < 2   # the premises of the expectations
    wasted = [z_a["whz"] < -2, True, z_c["whz"] < -2]   # B: oedema counts as < -3
    got = world.indicators()
    w = got["wasting"]
    assert (w["numerator"], w["denominator"]) == (sum(wasted), 3)
    assert w["by"]["severity"]["severe"]["numerator"] == 1
    u = got["underweight"]
    # Underweight: A and C by WAZ, B by oedema.
    exp_u = (z_a["waz"] < -2) + 1 + (z_c["waz"] < -2)
    assert (u["numerator"], u["denominator"]) == (exp_u, 3)
    st = got["stunting"]   # oedema does not touch HAZ: all three have one
    assert st["denominator"] == 3
    assert (got["sam"]["numerator"], got["sam"]["denominator"]) == (1, 3)
    assert (got["mam"]["numerator"], got["mam"]["denominator"]) == (1, 3)
    assert got["wasting"]["by"]["sex"]["female"]["denominator"] == 2


def test_health_workers_get_403_and_supervisors_only_their_areas(world, client):
    hw = world.token
    resp = client.get("/api/v1/indicators", query_string={"area": AREA, **PERIOD},
                      headers=world.auth())
    assert resp.status_code == 403 and resp.get_json()["error"] == "forbidden"
    resp = client.get("/api/v1/indicators", query_string={"area": "QN.TB", **PERIOD},
                      headers={"Authorization": f"Bearer {world.sup()}"})
    assert resp.status_code == 403
    assert hw


@pytest.mark.parametrize("params, field", [
    ({"area": AREA, "from": "2026-13-01", "to": "2026-03-31"}, "from"),
    ({"area": AREA, "to": "2026-03-31"}, "from"),
    ({"area": AREA, "from": "2026-04-01", "to": "2026-03-31"}, "to"),
    ({"area": "QN..LM", "from": "2026-01-01", "to": "2026-03-31"}, "area"),
    ({"area": AREA, "from": "2026-01-01", "to": "2026-03-31", "aera": "x"}, "aera"),
])
def test_bad_parameters_are_400(world, client, params, field):
    resp = client.get("/api/v1/indicators", query_string=params,
                      headers={"Authorization": f"Bearer {world.sup()}"})
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "invalid_parameter" and body["details"]["parameter"] == field


def test_labels_follow_the_language_and_records_elsewhere_are_not_counted(world, client):
    woman_with_birth(world, "2026-02-01", 4)
    admin = login(client, "admin", "dev-admin-1")
    # An admin's record in another commune is outside area=QN.LM.03.
    other = World(client, "admin", "dev-admin-2")
    w = other.person(area="QN.TB.01")
    p = other.pregnancy(w)
    other.outcome(p, "2026-02-01", [(uid(), "male", "alive")], place="home", area="QN.TB.01")
    en = world.indicators(token=admin, lang="en")
    assert en["facility_delivery"]["label"] == "Facility delivery rate"
    assert en["facility_delivery"]["denominator"] == 1
    resp = client.get("/api/v1/indicators", query_string={"area": "QN", **PERIOD},
                      headers={"Authorization": f"Bearer {admin}", "Accept-Language": "vi"})
    got = {i["id"]: i for i in resp.get_json()["indicators"]}
    assert got["facility_delivery"]["denominator"] == 2
    assert got["facility_delivery"]["label"].startswith("Tỷ lệ sinh")
    assert set(got["facility_delivery"]["by"]["area"]) == {"QN.LM", "QN.TB"}

"""Issue 15: the v2 forms fix the clinical review's findings.

Each test takes a record v1 accepted and shows what v2 says about it. The
expectations come from DOMAIN.md §1 (and WHO's published values for the
z-scores), not from the definitions: a comment names the rule each time.
v1 is asserted unchanged beside it (devices still holding v1 keep syncing).
"""
from __future__ import annotations

import datetime as dt
import json

import pytest

from schemas.forms import compile_form
from test_shipped_forms import (
    ANC_CHECKUP, CHILD1, DROP, FORMS_DIR, GROUP, GROWTH_OLDER, GROWTH_TODDLER, OUTCOME_TWINS, PERSON_DIED,
    PNC, PNC_MOTHER_DIED, TODAY, at, patched,
)

GROUP_SESSION = {
    "group_id": GROUP, "group_type": "child_care_club", "session_date": "2025-05-10",
    "facilitator_role": "vhw", "topics": ["breastfeeding"], "language": "dao",
    "attendees_total": 20, "attendees_female": 15, "attendees_ethnic_minority": 18,
    "duration_min": 60,
}


def form(form_id, version):
    with open(FORMS_DIR / form_id / f"v{version}.json", encoding="utf-8") as fh:
        return compile_form(json.load(fh))


def check(form_id, version, data, today=TODAY):
    return form(form_id, version).validate_create(data, today=today)


def days_before(day, n):
    return (day - dt.timedelta(days=n)).isoformat()


# -- v2 records built from the v1 examples, with the v2 fields added

# 496 days old: v1's example gave 100 000 IU of vitamin A, the 6–11-month dose (see below).
GROWTH2 = {**GROWTH_TODDLER, "child_sex": "male", "child_dob_precision": "exact",
           "vitamin_a_given": "200k_iu"}
PNC2 = {**PNC, "facility_birth": True, "live_birth": True, "discharge_date": "2025-05-21",
        "visit_number": 1}
OUTCOME2 = {**OUTCOME_TWINS, "checked_before_discharge": "yes"}
ANC2 = dict(ANC_CHECKUP)


@pytest.mark.parametrize("form_id, data", [
    ("growth", GROWTH2), ("pnc_visit", PNC2), ("pregnancy_outcome", OUTCOME2),
    ("anc_visit", ANC2), ("group_session", GROUP_SESSION)])
def test_the_v2_examples_are_valid(form_id, data):
    result = check(form_id, 2, data)
    assert result.errors == {}


# ------------------------------------------------------------------ growth

def infant(age_days, **over):
    dob = dt.date(2025, 1, 1)
    return patched(GROWTH2, {"child_dob": dob.isoformat(),
                             "measured_on": (dob + dt.timedelta(days=age_days)).isoformat(), **over})


def test_oedema_forces_a_referral_at_any_age():
    # DOMAIN §2 7b / §1.7: bilateral pitting oedema is SAM; SAM must be referred.
    # v1 only looked from day 183: a 90-day infant was accepted.
    record = infant(90, weight_kg=5.0, lenhei_cm=58.0, muac_mm=DROP, vitamin_a_given=DROP,
                    oedema_bilateral=True, referred_to="none")
    v1 = {k: v for k, v in record.items() if k not in ("child_sex", "child_dob_precision")}
    assert check("growth", 1, v1, today=dt.date(2025, 6, 1)).errors == {}
    v2 = check("growth", 2, record, today=dt.date(2025, 6, 1))
    assert at(v2.errors, "referred_to")
    assert check("growth", 2, {**record, "referred_to": "CHS"}, today=dt.date(2025, 6, 1)).ok


def test_muac_115_to_124_is_moderate_acute_malnutrition_with_a_warning():
    # DOMAIN §1.7: MAM if 115 <= MUAC < 125 (for 6–59 months).
    for muac, mam in ((114, False), (115, True), (124, True), (125, False)):
        record = {**GROWTH2, "muac_mm": muac, "referred_to": "CHS" if muac < 115 else "none"}
        v1 = check("growth", 1, {k: v for k, v in record.items()
                                 if k not in ("child_sex", "child_dob_precision")})
        assert v1.ok and not v1.warnings.get("muac_mm")
        v2 = check("growth", 2, record)
        assert v2.ok
        assert bool(at(v2.warnings, "muac_mm")) is mam, muac
        cls = form("growth", 2).compute(v2.data)["nutrition_class"]
        assert cls == ("mam" if mam else "sam" if muac < 115 else "normal"), muac


def test_mam_without_counselling_is_a_warning_not_an_error():
    # DOMAIN gives no rule making counselling compulsory: a warning.
    v2 = check("growth", 2, {**GROWTH2, "muac_mm": 120, "counselled": False})
    assert v2.ok and at(v2.warnings, "counselled")
    assert not at(check("growth", 2, {**GROWTH2, "muac_mm": 120}).warnings, "counselled")


def test_sex_and_dob_precision_are_on_the_record():
    # Z-scores need the sex, and a year-only dob gives none (DOMAIN §1.2, §4).
    for name in ("child_sex", "child_dob_precision"):
        assert at(check("growth", 2, patched(GROWTH2, {name: DROP})).errors, name) == ["is required"]
    assert at(check("growth", 2, {**GROWTH2, "child_sex": "indeterminate"}).errors, "child_sex")


def test_oedema_label_is_bilateral_pitting_oedema():
    field = next(f for f in form("growth", 2).describe_fields("en") if f["name"] == "oedema_bilateral")
    assert field["label"] == "Bilateral pitting oedema"
    field = next(f for f in form("growth", 2).describe_fields("vi") if f["name"] == "oedema_bilateral")
    assert field["label"] == "Phù hai chân"


@pytest.mark.parametrize("age_days, dose, ok", [
    (241, "200k_iu", False),   # the review's case: 6–11 months take 100 000 IU
    (241, "100k_iu", True), (364, "100k_iu", True), (365, "100k_iu", False),
    (365, "200k_iu", True), (1000, "200k_iu", True), (1000, "100k_iu", False),
])
def test_vitamin_a_dose_follows_the_age(age_days, dose, ok):
    record = infant(age_days, weight_kg=8.0, lenhei_cm=70.0, position="lying", muac_mm=140,
                    vitamin_a_given=dose)
    if age_days >= 731:
        record.update(weight_kg=12.0, lenhei_cm=88.0, position="standing")
    today = dt.date(2028, 1, 1)
    v1 = {k: v for k, v in record.items() if k not in ("child_sex", "child_dob_precision")}
    assert check("growth", 1, v1, today=today).ok
    assert bool(at(check("growth", 2, record, today=today).errors, "vitamin_a_given")) is not ok


# WHO's igrowup survey (tests/data/who_igrowup_survey.csv), child 1: a girl of
# 683 days, 10.4 kg, 84.8 cm lying, no oedema. WHO: WAZ -0.57, HAZ -0.07,
# WHZ -0.81, BAZ -0.79.
def test_the_z_scores_are_computed_on_the_record_as_who_does():
    record = infant(683, child_sex="female", weight_kg=10.399999619, lenhei_cm=84.800003052,
                    position="lying", muac_mm=150, vitamin_a_given="none")
    result = check("growth", 2, record, today=dt.date(2027, 1, 1))
    assert result.ok
    out = form("growth", 2).compute(result.data)
    assert (out["waz"], out["haz"], out["whz"], out["baz"]) == (-0.57, -0.07, -0.81, -0.79)
    assert out["flags"] == [] and out["nutrition_class"] == "normal"
    assert (out["stunted"], out["underweight"], out["wasted"], out["overweight"]) == (
        False, False, False, False)


def test_oedema_gives_no_weight_scores_and_counts_as_wasted_and_underweight():
    # DOMAIN §4.7 and §2 7: WAZ, WHZ, BAZ null with oedema; HAZ still computed;
    # the child counts as wasted and underweight; SAM (6–59 months).
    record = infant(683, child_sex="female", weight_kg=10.4, lenhei_cm=84.8, position="lying",
                    muac_mm=150, vitamin_a_given="none", oedema_bilateral=True, referred_to="CHS")
    result = check("growth", 2, record, today=dt.date(2027, 1, 1))
    out = form("growth", 2).compute(result.data)
    assert out["waz"] is out["whz"] is out["baz"] is None and out["haz"] is not None
    assert out["wasted"] is True and out["underweight"] is True and out["nutrition_class"] == "sam"


def test_a_year_only_date_of_birth_gives_no_z_scores():
    record = {**GROWTH2, "child_dob_precision": "year"}
    out = form("growth", 2).compute(check("growth", 2, record).data)
    assert out["waz"] is out["haz"] is out["whz"] is out["baz"] is out["nutrition_class"] is None


def test_sam_by_weight_for_height_must_be_referred():
    # DOMAIN §1.7: SAM if WHZ < -3; referred_to must be set if SAM. A girl of
    # 683 days, 84.8 cm: WHO's median weight-for-length there is about 11.5 kg
    # and -3 SD about 9.0 kg; 8.3 kg is well below -3 SD.
    record = infant(683, child_sex="female", weight_kg=8.3, lenhei_cm=84.8, position="lying",
                    muac_mm=150, vitamin_a_given="none", referred_to="none")
    result = check("growth", 2, record, today=dt.date(2027, 1, 1))
    assert at(result.errors, "referred_to")
    ok = check("growth", 2, {**record, "referred_to": "district"}, today=dt.date(2027, 1, 1))
    assert ok.ok and form("growth", 2).compute(ok.data)["whz"] < -3


# -------------------------------------------------------------- pnc_visit

def test_a_newborn_in_danger_with_no_referral_is_refused():
    # DOMAIN §1.6: newborn danger signs, temperature < 35.5 or >= 37.5, breathing >= 60.
    baby = {"child_id": CHILD1, "status": "alive", "temp_c": 35.0, "resp_rate": 70,
            "danger_signs": ["convulsions", "chest_indrawing"], "bf_recall": ["breast_milk"]}
    v1 = patched(PNC, {"baby": [baby], "referred_to": "none"})
    result = check("pnc_visit", 1, v1)
    assert result.errors == {} and result.warnings == {}
    v2 = check("pnc_visit", 2, {**PNC2, "baby": [baby], "referred_to": "none"})
    for name in ("danger_signs", "temp_c", "resp_rate"):
        assert at(v2.errors, f"baby.0.{name}"), name
    assert check("pnc_visit", 2, {**PNC2, "baby": [baby], "referred_to": "district"}).ok


@pytest.mark.parametrize("temp, resp, danger", [
    (35.4, 40, True), (35.5, 40, False), (37.4, 59, False), (37.5, 40, True), (36.8, 60, True)])
def test_newborn_temperature_and_breathing_limits(temp, resp, danger):
    baby = {"child_id": CHILD1, "status": "alive", "temp_c": temp, "resp_rate": resp,
            "danger_signs": ["none"], "bf_recall": ["breast_milk"]}
    v2 = check("pnc_visit", 2, {**PNC2, "baby": [baby], "referred_to": "none"})
    assert (v2.errors != {}) is danger


def test_a_mother_danger_sign_with_no_referral_is_now_an_error():
    record = patched(PNC, {"mother_danger_signs": ["heavy_bleeding"], "referred_to": "none",
                           "baby": [PNC["baby"][0]]})
    v1 = check("pnc_visit", 1, record)
    assert v1.ok and at(v1.warnings, "referred_to")
    assert at(check("pnc_visit", 2, {**PNC2, **{k: record[k] for k in (
        "mother_danger_signs", "referred_to", "baby")}}).errors, "referred_to")


def test_the_babies_are_required_after_a_live_birth():
    v1 = patched(PNC, {"baby": DROP})
    assert check("pnc_visit", 1, v1).ok
    assert at(check("pnc_visit", 2, patched(PNC2, {"baby": DROP})).errors, "baby") == ["is required"]
    # After a stillbirth the visit is the mother's only.
    assert check("pnc_visit", 2, patched(PNC2, {"baby": DROP, "live_birth": False})).ok


def test_no_yesterday_recall_on_the_day_of_birth():
    day0 = {"outcome_date": "2025-05-22", "visit_date": "2025-05-22", "discharge_date": "2025-05-22"}
    assert check("pnc_visit", 1, patched(PNC, {k: v for k, v in day0.items()
                                               if k != "discharge_date"})).ok
    v2 = check("pnc_visit", 2, patched(PNC2, day0))
    assert at(v2.errors, "baby.0.bf_recall") and at(v2.errors, "baby.1.bf_recall")
    without = patched(PNC2, {**day0, "baby.0.bf_recall": DROP, "baby.1.bf_recall": DROP})
    assert check("pnc_visit", 2, without).ok


def test_visit_number_and_discharge_date_let_tt30_be_checked():
    assert at(check("pnc_visit", 2, patched(PNC2, {"visit_number": DROP})).errors, "visit_number")
    assert at(check("pnc_visit", 2, {**PNC2, "visit_number": 11}).errors, "visit_number")
    # TT 30/2024: the first visit after a facility birth within 7 days of discharge.
    late = check("pnc_visit", 2, {**PNC2, "visit_date": "2025-05-30", "baby": PNC2["baby"]})
    assert late.ok and at(late.warnings, "visit_date")
    assert not at(check("pnc_visit", 2, {**PNC2, "visit_date": "2025-05-28"}).warnings, "visit_date")
    # No discharge date for a home birth.
    home = {**PNC2, "facility_birth": False, "visit_date": "2025-05-21"}
    assert at(check("pnc_visit", 2, home).errors, "discharge_date")
    assert check("pnc_visit", 2, patched(home, {"discharge_date": DROP})).ok


def test_a_mothers_death_has_a_date():
    v1 = check("pnc_visit", 1, PNC_MOTHER_DIED)
    assert v1.ok
    record = {**PNC_MOTHER_DIED, "facility_birth": False, "live_birth": True, "visit_number": 2}
    assert at(check("pnc_visit", 2, record).errors, "mother_death_date") == ["is required"]
    assert check("pnc_visit", 2, {**record, "mother_death_date": "2025-05-30"}).ok
    # After the visit that reports it: impossible.
    assert at(check("pnc_visit", 2, {**record, "mother_death_date": "2025-06-02"},
                    today=dt.date(2025, 6, 5)).errors, "mother_death_date")


# ------------------------------------------------------- pregnancy_outcome

def test_a_babys_sex_is_male_or_female_as_in_person():
    record = patched(OUTCOME_TWINS, {"baby.1.sex": "indeterminate"})
    assert check("pregnancy_outcome", 1, record).ok
    assert at(check("pregnancy_outcome", 2, {**record, "checked_before_discharge": "yes"}).errors,
              "baby.1.sex")


def test_a_live_birth_needs_a_baby_born_alive():
    # DOMAIN §2: live births exclude stillbirths; a "live birth" of one fresh stillbirth is wrong.
    record = patched(OUTCOME_TWINS, {"n_babies": 1, "baby": [
        {"status": "fresh_stillbirth", "sex": "male", "birth_weight_g": 2600}]})
    assert check("pregnancy_outcome", 1, record).ok
    assert at(check("pregnancy_outcome", 2, {**record, "checked_before_discharge": "no"}).errors, "baby")
    died = patched(record, {"baby.0.status": "died_after_birth", "baby.0.child_id": CHILD1})
    assert check("pregnancy_outcome", 2, {**died, "checked_before_discharge": "no"}).ok


def test_a_stillbirth_has_no_baby_born_alive():
    record = patched(OUTCOME_TWINS, {"outcome_type": "stillbirth", "n_babies": 1,
                                     "baby": [OUTCOME_TWINS["baby"][0]]})
    assert check("pregnancy_outcome", 1, record).ok
    assert at(check("pregnancy_outcome", 2, {**record, "checked_before_discharge": "yes"}).errors,
              "baby.0.status")


def test_checked_before_discharge_is_asked_for_facility_births():
    # DOMAIN §2 indicator 5a needs it.
    assert at(check("pregnancy_outcome", 2, patched(OUTCOME2, {"checked_before_discharge": DROP})).errors,
              "checked_before_discharge") == ["is required"]
    home = patched(OUTCOME2, {"place": "home", "attendant": "village_midwife"})
    assert at(check("pregnancy_outcome", 2, home).errors, "checked_before_discharge")
    assert check("pregnancy_outcome", 2, patched(home, {"checked_before_discharge": DROP})).ok


def test_low_birth_weight_is_flagged():
    # DOMAIN §1.5: flag < 2500 g (LBW).
    result = check("pregnancy_outcome", 2, OUTCOME2)
    assert result.ok and not at(result.warnings, "baby.0.birth_weight_g")
    assert at(result.warnings, "baby.1.birth_weight_g")   # 2100 g
    assert check("pregnancy_outcome", 1, OUTCOME_TWINS).warnings == {}


# --------------------------------------------------------------- anc_visit

def test_a_vhw_home_check_is_not_an_anc_contact():
    # DOMAIN §1.4: a VHW follow-up is home_followup_by_vhw and does not count for ANC4.
    record = {**ANC_CHECKUP, "provider": "vhw"}
    assert check("anc_visit", 1, record).ok
    assert at(check("anc_visit", 2, record).errors, "provider")
    home = patched(record, {"contact_type": "home_followup_by_vhw", "weight_kg": DROP,
                            "height_cm": DROP, "bp_systolic": DROP, "bp_diastolic": DROP,
                            "oedema": DROP, "urine_protein": DROP})
    assert check("anc_visit", 2, home).ok


def test_pmtct_tests_are_recorded_and_a_positive_one_asks_for_referral():
    record = {**ANC_CHECKUP, "hiv_test": "negative", "syphilis_test": "positive", "hepb_test": "declined"}
    assert at(check("anc_visit", 1, record).errors, "hiv_test") == ["unknown field"]
    v2 = check("anc_visit", 2, record)
    assert v2.ok and at(v2.warnings, "referred_to")
    assert check("anc_visit", 2, {**record, "referred_to": "district"}).warnings == {}


# ----------------------------------------------------------------- person

def test_a_pregnancy_related_death_is_asked_up_to_55():
    # DOMAIN §1.3: a pregnancy is registered up to 55 years.
    dob = "1970-01-01"    # died 2025-04-02: 55 full years
    record = patched(PERSON_DIED, {"dob": dob})
    v1 = check("person", 1, record)
    assert at(v1.errors, "death_pregnancy_related")       # v1: "is not asked" at 55
    assert check("person", 1, patched(record, {"death_pregnancy_related": DROP})).ok
    assert check("person", 2, record).ok
    assert at(check("person", 2, patched(record, {"death_pregnancy_related": DROP})).errors,
              "death_pregnancy_related") == ["is required"]
    assert at(check("person", 2, patched(record, {"dob": "1969-01-01"})).errors,
              "death_pregnancy_related")                   # 56: not asked


# ----------------------------------------------- group_session and club

@pytest.mark.parametrize("group_type", ["premarital_club", "birth_sex_ratio_club", "training"])
def test_the_seeds_clubs_and_trainings_are_group_types(group_type):
    record = {**GROUP_SESSION, "group_type": group_type}
    assert at(check("group_session", 1, record).errors, "group_type")
    assert check("group_session", 2, record).ok


def test_the_club_register():
    club = {"club_name": "CLB tiền hôn nhân thôn Khe Tiền", "club_type": "premarital_club",
            "established_on": "2024-03-08", "status": "active", "village": "Khe Tiền"}
    assert check("club", 1, club).ok
    # A training is an event, not a club.
    assert at(check("club", 1, {**club, "club_type": "training"}).errors, "club_type")
    assert at(check("club", 1, patched(club, {"status": DROP})).errors, "status")
    ref = next(f for f in form("group_session", 2).describe_fields() if f["name"] == "group_id")
    assert ref["ref"] == "club"

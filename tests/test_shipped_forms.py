"""The ten bundled health forms (DOMAIN.md §1.1–1.10) compile, accept complete
valid records on every skip-logic branch, and reject each kind of bad value
with an error keyed by the field (and the repeat entry)."""
from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path

import pytest

import schemas
from schemas.forms import compile_form

FORMS_DIR = Path(schemas.__file__).parent / "forms"
FORM_IDS = [
    "household", "person", "pregnancy", "anc_visit", "pregnancy_outcome", "pnc_visit",
    "growth", "nutrition_counselling", "cp_report", "group_session",
]
# Every example is validated as of this date, so the tests never age.
TODAY = dt.date(2025, 6, 1)
DROP = object()  # a patch value meaning "remove this key"

HH = "0193a0c4-1111-7000-8000-000000000001"
WOMAN = "0193a0c4-2222-7000-8000-000000000002"
CHILD1 = "0193a0c4-3333-7000-8000-000000000003"
CHILD2 = "0193a0c4-4444-7000-8000-000000000004"
PREG = "0193a0c4-5555-7000-8000-000000000005"
GROUP = "0193a0c4-6666-7000-8000-000000000006"


def definition(form_id):
    with open(FORMS_DIR / form_id / "v1.json", encoding="utf-8") as fh:
        return json.load(fh)


_COMPILED = {}


def form(form_id):
    if form_id not in _COMPILED:
        _COMPILED[form_id] = compile_form(definition(form_id))
    return _COMPILED[form_id]


def patched(data, patch):
    """A deep copy of `data` with `patch` applied; keys may be dotted paths
    through repeat entries ("baby.1.sex"); DROP removes a key."""
    out = copy.deepcopy(data)
    for path, value in patch.items():
        *parents, last = path.split(".")
        node = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return out


def create(form_id, data):
    return form(form_id).validate_create(data, today=TODAY)


def at(errors, path):
    """The messages at a dotted path of an errors/warnings tree, or None."""
    node = errors
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# ---------------------------------------------------------------- valid examples

HOUSEHOLD = {
    "head_name": "Triệu Văn Minh", "address_detail": "Thôn Khe Tiền, nhà số 4",
    "phone": "0912345678", "poverty_status": "near_poor",
    "gps": {"lat": 21.31, "lon": 107.42, "accuracy_m": 12},
    "travel_minutes_to_chs": 45, "registered_on": "2025-01-10", "status": "active",
}
PERSON_ADULT = {
    "household_id": HH, "full_name": "Triệu Thị Mai", "sex": "female", "dob": "1998-03-15",
    "dob_precision": "exact", "ethnicity_code": "09", "relationship_to_head": "spouse",
    "recorded_on": "2025-05-20", "marital_status": "married_customary",
    "citizen_id": "022198001234", "hi_has_card": "yes", "hi_number": "2212345678",
    "hi_object_code": "DT", "hi_valid_from": "2025-01-01", "hi_valid_to": "2025-12-31",
    "vital_status": "alive",
}
PERSON_CHILD = {
    "household_id": HH, "full_name": "Triệu Văn An", "sex": "male", "dob": "2024-11-15",
    "dob_precision": "month", "ethnicity_code": "09", "relationship_to_head": "grandchild",
    "recorded_on": "2025-05-20", "hi_has_card": "no", "vital_status": "alive",
}
PERSON_DIED = patched(PERSON_ADULT, {
    "vital_status": "died", "date_of_death": "2025-04-02",
    "death_pregnancy_related": "pregnant_or_within_42d", "hi_has_card": "unknown",
    "hi_number": DROP, "hi_object_code": DROP, "hi_valid_from": DROP, "hi_valid_to": DROP,
})
PREGNANCY_LMP = {
    "woman_id": WOMAN, "woman_dob": "1998-03-15", "registration_date": "2025-03-01",
    "lmp_known": "yes", "lmp_date": "2024-12-20", "edd": "2025-09-26", "edd_source": "lmp",
    "prev_term_births": 1, "prev_preterm_births": 0, "prev_abortions_miscarriages": 1,
    "living_children": 1, "risk_factors": ["none"],
    "planned_delivery_place": "commune_health_station", "mch_handbook_issued": True,
    "prior_anc_contacts_unrecorded": 1, "status": "ongoing",
}
PREGNANCY_NO_LMP = patched(PREGNANCY_LMP, {
    "lmp_known": "no", "lmp_date": DROP, "ga_weeks_estimate": 16, "edd": "2025-08-10",
    "edd_source": "estimate", "risk_factors": ["anaemia", "consanguineous_union"],
})
ANC_CHECKUP = {
    "pregnancy_id": PREG, "lmp_date": "2024-12-20", "visit_date": "2025-05-02",
    "contact_type": "anc_checkup", "provider": "assistant_doctor", "place": "CHS",
    "weight_kg": 55.5, "height_cm": 150.5, "bp_systolic": 110, "bp_diastolic": 70,
    "fetal_heart_rate": 140, "oedema": False, "urine_protein": "plus1",
    "haemoglobin_g_dl": 11.5, "tetanus_dose": "TT1", "ifa_tablets_given": 30,
    "danger_signs": ["none"], "referred_to": "none",
    "counselling_topics": ["nutrition", "danger_signs", "HB_use"],
    "next_visit_date": "2025-06-01",
}
# A home follow-up without a known LMP: no measurements, late-pregnancy fields allowed.
ANC_HOME = {
    "pregnancy_id": PREG, "visit_date": "2025-05-30", "contact_type": "home_followup_by_vhw",
    "provider": "vhw", "place": "home", "fundal_height_cm": 30, "presentation": "cephalic",
    "danger_signs": ["bleeding", "fever"], "referred_to": "district",
}
ANC_LATE = patched(ANC_CHECKUP, {
    "lmp_date": "2024-10-01", "visit_date": "2025-05-25",  # 33 weeks
    "fundal_height_cm": 33, "presentation": "breech",
})
OUTCOME_TWINS = {
    "pregnancy_id": PREG, "lmp_date": "2024-08-20", "outcome_date": "2025-05-20",
    "outcome_time": "03:40", "outcome_type": "live_birth", "ga_weeks_at_outcome": 39,
    "n_babies": 2, "place": "district_hosp_or_regional_centre", "attendant": "midwife",
    "mode": "vaginal", "mother_outcome": "alive_well",
    "baby": [
        {"status": "alive", "child_id": CHILD1, "sex": "female", "birth_weight_g": 2600,
         "birth_length_cm": 47.5, "breastfed_within_1h": "yes", "hepb_birth_dose_24h": "yes"},
        {"status": "fresh_stillbirth", "sex": "male", "birth_weight_g": 2100},
    ],
}
OUTCOME_STILLBIRTH = patched(OUTCOME_TWINS, {
    "outcome_type": "stillbirth", "n_babies": 1, "mode": "caesarean", "attendant": "doctor",
    "mother_outcome": "alive_with_complication", "outcome_time": DROP,
    "baby": [{"status": "macerated_stillbirth", "sex": "indeterminate", "birth_weight_g": 1900}],
})
OUTCOME_MISCARRIAGE = {
    "pregnancy_id": PREG, "outcome_date": "2025-04-01", "outcome_type": "miscarriage",
    "ga_weeks_at_outcome": 12, "place": "CHS", "mother_outcome": "alive_with_complication",
}
OUTCOME_MOTHER_DIED = {
    "pregnancy_id": PREG, "outcome_date": "2025-04-01", "outcome_type": "died_undelivered",
    "ga_weeks_at_outcome": 30, "mother_outcome": "died", "mother_death_date": "2025-04-01",
    "mother_death_cause": "hypertensive_disorder",
}
PNC = {
    "pregnancy_id": PREG, "outcome_date": "2025-05-20", "visit_date": "2025-05-22",
    "visit_time": "09:15", "visitor_role": "village_midwife", "mother_status": "alive",
    "mother_temp_c": 37.0, "mother_bp_sys": 115, "mother_bp_dia": 75,
    "lochia_bleeding": "normal", "breasts": "engorged", "mother_danger_signs": ["none"],
    "fp_counselled": True,
    "baby": [
        {"child_id": CHILD1, "status": "alive", "temp_c": 36.8, "resp_rate": 45,
         "danger_signs": ["none"], "bf_recall": ["breast_milk", "ORS_drops_syrups"]},
        {"child_id": CHILD2, "status": "alive", "danger_signs": ["jaundice_palms_soles"],
         "bf_recall": ["breast_milk", "water"]},
    ],
    "referred_to": "CHS",
}
PNC_MOTHER_DIED = {
    "pregnancy_id": PREG, "outcome_date": "2025-05-20", "visit_date": "2025-06-01",
    "visitor_role": "CHS_staff", "mother_status": "died",
    "baby": [{"child_id": CHILD1, "status": "died"}], "referred_to": "none",
}
GROWTH_TODDLER = {
    "child_id": CHILD1, "child_dob": "2024-01-10", "measured_on": "2025-05-20",
    "weight_kg": 8.45, "lenhei_cm": 74.2, "position": "lying", "muac_mm": 132,
    "oedema_bilateral": False, "vitamin_a_given": "100k_iu", "referred_to": "none",
    "counselled": True,
}
# A 3-month-old whose length could not be taken: the reason is then required.
GROWTH_INFANT = {
    "child_id": CHILD1, "child_dob": "2025-02-20", "measured_on": "2025-05-20",
    "weight_kg": 5.9, "not_measured_reason": "equipment", "oedema_bilateral": False,
    "referred_to": "none", "counselled": False,
}
GROWTH_OLDER = {
    "child_id": CHILD2, "child_dob": "2022-02-01", "measured_on": "2025-05-20",
    "weight_kg": 12.6, "lenhei_cm": 92.0, "position": "standing", "muac_mm": 110,
    "oedema_bilateral": False, "vitamin_a_given": "none", "referred_to": "district",
    "counselled": True,
}
NUTRITION_INFANT = {
    "child_id": CHILD1, "child_dob": "2025-01-15", "session_date": "2025-05-20",
    "modality": "home_visit", "counselled_person": "mother",
    "topics": ["exclusive_bf", "responsive_feeding"], "breastfed_yesterday": "yes",
    "recall_liquids_foods": ["none"], "follow_up_date": "2025-06-20",
}
NUTRITION_TODDLER = {
    "child_id": CHILD2, "child_dob": "2024-05-01", "session_date": "2025-05-20",
    "modality": "group_session", "counselled_person": "grandparent",
    "topics": ["complementary_feeding", "meal_frequency_diversity"],
    "breastfed_yesterday": "yes",
    "food_groups_yesterday": ["breast_milk", "grains_roots_tubers", "flesh_foods", "eggs",
                              "vit_A_fruits_veg"],
    "meals_yesterday": 3,
}
CP_EARLY = {
    "report_date": "2025-05-10", "case_type": ["early_marriage"],
    "union_type": "customary_ceremony", "union_date": "2025-02-15",
    "union_date_precision": "month",
    "party_a_person_id": WOMAN, "party_a_sex": "female", "party_a_dob": "2009-06-01",
    "party_a_ethnicity_code": "09",
    "party_b_sex": "male", "party_b_dob": "2003-01-01", "party_b_ethnicity_code": "02",
    "female_pregnant": "unknown", "source": "home_visit",
    "action_taken": ["family_counselled", "reported_to_commune_peoples_committee"],
}
CP_PLANNED_CONSANGUINEOUS = {
    "report_date": "2025-05-10", "case_type": ["early_marriage", "consanguineous_marriage"],
    "union_type": "planned_not_yet", "union_date": "2025-10-01", "union_date_precision": "month",
    "party_a_sex": "female", "party_a_dob": "2008-09-01", "party_a_ethnicity_code": "18",
    "party_b_sex": "male", "party_b_dob": "2004-01-01", "party_b_ethnicity_code": "18",
    "kinship": "first_cousins", "source": "community_report", "action_taken": ["none"],
}
GROUP_SESSION = {
    "group_id": GROUP, "group_type": "child_care_club", "session_date": "2025-05-18",
    "facilitator_role": "CHS_staff",
    "topics": ["breastfeeding", "early_marriage_prevention", "health_insurance"],
    "language": "dao", "attendees_total": 24, "attendees_female": 20,
    "attendees_ethnic_minority": 24, "attendees_pregnant": 3, "attendees_caregivers_u2": 24,
    "cooking_demo": True, "duration_min": 90,
}

VALID = {
    "household": HOUSEHOLD,
    "household/moved": patched(HOUSEHOLD, {"status": "moved_out", "status_date": "2025-05-01"}),
    "household/minimal": {"head_name": "Lý A Sáng", "poverty_status": "poor",
                          "registered_on": "2025-05-30", "status": "active"},
    "person": PERSON_ADULT,
    "person/child_no_card": PERSON_CHILD,
    "person/died": PERSON_DIED,
    "person/died_male": patched(PERSON_DIED, {"sex": "male", "death_pregnancy_related": DROP}),
    "pregnancy": PREGNANCY_LMP,
    "pregnancy/no_lmp": PREGNANCY_NO_LMP,
    "anc_visit": ANC_CHECKUP,
    "anc_visit/home_no_lmp": ANC_HOME,
    "anc_visit/late": ANC_LATE,
    "pregnancy_outcome": OUTCOME_TWINS,
    "pregnancy_outcome/stillbirth": OUTCOME_STILLBIRTH,
    "pregnancy_outcome/miscarriage": OUTCOME_MISCARRIAGE,
    "pregnancy_outcome/mother_died": OUTCOME_MOTHER_DIED,
    "pnc_visit": PNC,
    "pnc_visit/mother_died": PNC_MOTHER_DIED,
    "growth": GROWTH_TODDLER,
    "growth/infant": GROWTH_INFANT,
    "growth/older_standing_sam_referred": GROWTH_OLDER,
    "nutrition_counselling": NUTRITION_INFANT,
    "nutrition_counselling/toddler": NUTRITION_TODDLER,
    "nutrition_counselling/toddler_no_food_group": patched(NUTRITION_TODDLER, {
        "breastfed_yesterday": "no", "food_groups_yesterday": ["none"], "meals_yesterday": 0}),
    "cp_report": CP_EARLY,
    "cp_report/planned_consanguineous": CP_PLANNED_CONSANGUINEOUS,
    "group_session": GROUP_SESSION,
}


# ---------------------------------------------------------------- the files themselves

def test_exactly_the_ten_domain_forms_ship_with_the_club_register():
    shipped = sorted(p.name for p in FORMS_DIR.iterdir() if p.is_dir())
    assert shipped == sorted(FORM_IDS + ["club"])


@pytest.mark.parametrize("path", sorted(FORMS_DIR.glob("*/v*.json")), ids=lambda p: p.parent.name)
def test_each_file_loads_and_its_id_and_version_match_its_path(path):
    with open(path, encoding="utf-8") as fh:
        defn = json.load(fh)
    assert defn["id"] == path.parent.name
    assert path.name == f"v{defn['version']}.json"
    assert isinstance(defn["version"], int) and defn["version"] >= 1


# Issue 15: the forms with a v2 next to their v1 (tests/test_forms_v2.py); the last four
# (household, pregnancy, nutrition_counselling, cp_report) in tests/test_forms_v2_vi.py.
V2_IDS = FORM_IDS


def test_bundled_definitions_are_the_ten_forms_at_versions_1_and_2_and_the_club():
    from schemas.forms import bundled_definitions

    assert sorted((d["id"], d["version"]) for d in bundled_definitions()) == sorted(
        [(form_id, 1) for form_id in FORM_IDS] + [(form_id, 2) for form_id in V2_IDS] + [("club", 1)])


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_every_field_has_a_label(form_id):
    for field in _fields(definition(form_id)["fields"]):
        assert field.get("label", "").strip(), field["name"]


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_each_form_compiles_with_its_identity(form_id):
    compiled = form(form_id)
    assert (compiled.id, compiled.version) == (form_id, 1)
    assert compiled.title


def _fields(fields):
    for field in fields:
        yield field
        yield from _fields(field.get("fields") or ())


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_choice_values_are_unique_identifiers_with_labels(form_id):
    for field in _fields(definition(form_id)["fields"]):
        values = [c["value"] for c in field.get("choices") or ()]
        assert len(values) == len(set(values)), field["name"]
        for choice in field.get("choices") or ():
            assert re.fullmatch(r"[A-Za-z0-9_]+", choice["value"]), (field["name"], choice)
            assert choice["label"].strip()


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_envelope_and_record_id_fields_are_not_repeated(form_id):
    names = {f["name"] for f in definition(form_id)["fields"]}
    envelope = {"record_id", "form_id", "form_version", "created_at", "updated_at", "device_id",
                "author_user_id", "commune_code", "village_code", "deleted", "revision"}
    own_id = {"household": "household_id", "person": "person_id", "pregnancy": "pregnancy_id",
              "cp_report": "case_id"}.get(form_id)
    assert not names & envelope
    assert own_id not in names


def test_only_cp_report_is_restricted_to_supervisors_and_admins():
    for form_id in FORM_IDS:
        expected = ["supervisor", "admin"] if form_id == "cp_report" else None
        assert definition(form_id)["restricted_to"] == expected
        compiled = form(form_id).restricted_to
        assert (list(compiled) if compiled is not None else None) == expected


def test_cp_report_has_no_free_text_field():
    """DOMAIN §1.9: no names in free text, and no free-text field at all."""
    types = {f["type"] for f in _fields(definition("cp_report")["fields"])}
    assert not types & {"string", "text"}


def test_ethnicity_lists_are_the_gso_54_codes_plus_foreign():
    person = {f["name"]: f for f in definition("person")["fields"]}
    codes = [c["value"] for c in person["ethnicity_code"]["choices"]]
    assert codes == [f"{n:02d}" for n in range(1, 56)]
    labels = {c["value"]: c["label"] for c in person["ethnicity_code"]["choices"]}
    assert (labels["01"], labels["09"], labels["18"]) == ("Kinh", "Dao", "Sán Dìu")
    cp = {f["name"]: f for f in definition("cp_report")["fields"]}
    for party in "ab":
        assert cp[f"party_{party}_ethnicity_code"]["choices"] == person["ethnicity_code"]["choices"]


# ---------------------------------------------------------------- valid records

@pytest.mark.parametrize("case", sorted(VALID))
def test_complete_valid_record_is_accepted(case):
    result = create(case.split("/")[0], VALID[case])
    assert result.errors == {}
    assert result.warnings == {}  # the examples are clean: soft checks stay quiet


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_record_survives_json_and_revalidation(case):
    """What a device sends, after JSON, validates the same again (normalised values too)."""
    form_id = case.split("/")[0]
    first = create(form_id, json.loads(json.dumps(VALID[case])))
    again = create(form_id, json.loads(json.dumps(first.data)))
    assert again.errors == {}
    assert again.data == first.data


# ---------------------------------------------------------------- bad values

# (case id, base example, patch, dotted error path)
REJECTED = [
    # household
    ("hh_out_of_range", "household", {"travel_minutes_to_chs": 601}, "travel_minutes_to_chs"),
    ("hh_bad_choice", "household", {"poverty_status": "rich"}, "poverty_status"),
    ("hh_bad_phone", "household", {"phone": "84912345678"}, "phone"),
    ("hh_short_name", "household", {"head_name": "A"}, "head_name"),
    ("hh_missing_required", "household", {"registered_on": DROP}, "registered_on"),
    ("hh_future_date", "household", {"registered_on": "2030-01-01"}, "registered_on"),
    ("hh_status_date_when_active", "household", {"status_date": "2025-05-01"}, "status_date"),
    ("hh_status_date_before_registration", "household/moved", {"status_date": "2024-12-31"},
     "status_date"),
    ("hh_unknown_field", "household", {"commune_code": "22001"}, "commune_code"),
    # person
    ("person_bad_hi_number", "person", {"hi_number": "DT2791234567890"}, "hi_number"),
    ("person_missing_hi_number", "person", {"hi_number": DROP}, "hi_number"),
    ("person_hi_number_without_card", "person/child_no_card", {"hi_number": "2212345678"},
     "hi_number"),
    ("person_bad_object_code", "person", {"hi_object_code": "dt"}, "hi_object_code"),
    ("person_card_ends_before_start", "person", {"hi_valid_to": "2024-12-31"}, "hi_valid_to"),
    ("person_too_old", "person", {"dob": "1900-01-01"}, "dob"),
    ("person_bad_ethnicity", "person", {"ethnicity_code": "56"}, "ethnicity_code"),
    ("person_citizen_id_for_child", "person/child_no_card", {"citizen_id": "022198001234"},
     "citizen_id"),
    ("person_marital_status_for_child", "person/child_no_card", {"marital_status": "never"},
     "marital_status"),
    ("person_bad_citizen_id", "person", {"citizen_id": "0221980012"}, "citizen_id"),
    ("person_death_before_birth", "person/died", {"date_of_death": "1990-01-01"}, "date_of_death"),
    ("person_missing_death_date", "person/died", {"date_of_death": DROP}, "date_of_death"),
    ("person_death_pregnancy_for_man", "person/died_male",
     {"death_pregnancy_related": "not"}, "death_pregnancy_related"),
    ("person_missing_death_pregnancy", "person/died", {"death_pregnancy_related": DROP},
     "death_pregnancy_related"),
    # pregnancy
    ("preg_lmp_too_early", "pregnancy", {"lmp_date": "2024-04-01"}, "lmp_date"),
    ("preg_lmp_too_late", "pregnancy", {"lmp_date": "2025-02-20"}, "lmp_date"),
    ("preg_lmp_when_unknown", "pregnancy/no_lmp", {"lmp_date": "2024-12-20"}, "lmp_date"),
    ("preg_missing_ga_estimate", "pregnancy/no_lmp", {"ga_weeks_estimate": DROP},
     "ga_weeks_estimate"),
    ("preg_ga_estimate_too_high", "pregnancy/no_lmp", {"ga_weeks_estimate": 43},
     "ga_weeks_estimate"),
    ("preg_edd_too_late", "pregnancy", {"edd": "2025-12-01"}, "edd"),
    ("preg_woman_too_young", "pregnancy", {"woman_dob": "2016-01-01"}, "woman_dob"),
    ("preg_edd_from_unknown_lmp", "pregnancy/no_lmp", {"edd_source": "lmp"}, "edd_source"),
    ("preg_none_with_risk", "pregnancy", {"risk_factors": ["none", "anaemia"]}, "risk_factors"),
    ("preg_bad_risk", "pregnancy", {"risk_factors": ["age<18"]}, "risk_factors"),
    ("preg_too_many_births", "pregnancy", {"prev_term_births": 21}, "prev_term_births"),
    ("preg_bool_as_text", "pregnancy", {"mch_handbook_issued": "maybe"}, "mch_handbook_issued"),
    # anc_visit
    ("anc_visit_before_lmp", "anc_visit", {"visit_date": "2024-12-01"}, "visit_date"),
    ("anc_ga_over_44_weeks", "anc_visit", {"lmp_date": "2024-06-01"}, "visit_date"),
    ("anc_weight_out_of_range", "anc_visit", {"weight_kg": 151}, "weight_kg"),
    ("anc_weight_on_home_visit", "anc_visit/home_no_lmp", {"weight_kg": 55.0}, "weight_kg"),
    ("anc_fundal_height_before_20w", "anc_visit", {"fundal_height_cm": 18}, "fundal_height_cm"),
    ("anc_presentation_before_32w", "anc_visit", {"presentation": "cephalic"}, "presentation"),
    ("anc_diastolic_not_below_systolic", "anc_visit", {"bp_systolic": 90, "bp_diastolic": 95},
     "bp_diastolic"),
    ("anc_bad_urine_choice", "anc_visit", {"urine_protein": "++"}, "urine_protein"),
    ("anc_danger_sign_not_referred", "anc_visit/home_no_lmp", {"referred_to": "none"},
     "referred_to"),
    ("anc_none_with_sign", "anc_visit", {"danger_signs": ["none", "fever"]}, "danger_signs"),
    ("anc_missing_danger_signs", "anc_visit", {"danger_signs": DROP}, "danger_signs"),
    ("anc_next_visit_same_day", "anc_visit", {"next_visit_date": "2025-05-02"}, "next_visit_date"),
    # pregnancy_outcome
    ("outcome_bad_baby_sex", "pregnancy_outcome", {"baby.1.sex": "unknown"}, "baby.1.sex"),
    ("outcome_alive_baby_without_person", "pregnancy_outcome", {"baby.0.child_id": DROP},
     "baby.0.child_id"),
    ("outcome_stillborn_breastfed", "pregnancy_outcome", {"baby.1.breastfed_within_1h": "yes"},
     "baby.1.breastfed_within_1h"),
    ("outcome_baby_weight_out_of_range", "pregnancy_outcome", {"baby.0.birth_weight_g": 450},
     "baby.0.birth_weight_g"),
    ("outcome_baby_unknown_field", "pregnancy_outcome", {"baby.0.name": "Mai"}, "baby.0.name"),
    ("outcome_babies_miscounted", "pregnancy_outcome", {"n_babies": 3}, "baby"),
    ("outcome_missing_babies", "pregnancy_outcome", {"baby": DROP}, "baby"),
    ("outcome_no_babies", "pregnancy_outcome", {"baby": []}, "baby"),
    ("outcome_babies_after_miscarriage", "pregnancy_outcome/miscarriage",
     {"baby": [{"status": "macerated_stillbirth", "sex": "male"}]}, "baby"),
    ("outcome_mode_after_miscarriage", "pregnancy_outcome/miscarriage", {"mode": "vaginal"},
     "mode"),
    ("outcome_late_miscarriage", "pregnancy_outcome/miscarriage", {"ga_weeks_at_outcome": 25},
     "ga_weeks_at_outcome"),
    ("outcome_before_lmp", "pregnancy_outcome", {"outcome_date": "2024-08-20"}, "outcome_date"),
    ("outcome_bad_time", "pregnancy_outcome", {"outcome_time": "25:10"}, "outcome_time"),
    ("outcome_place_when_died_undelivered", "pregnancy_outcome/mother_died", {"place": "home"},
     "place"),
    ("outcome_death_after_42_days", "pregnancy_outcome/mother_died",
     {"mother_death_date": "2025-05-20"}, "mother_death_date"),
    ("outcome_death_before_outcome", "pregnancy_outcome/mother_died",
     {"mother_death_date": "2025-03-01"}, "mother_death_date"),
    ("outcome_missing_death_date", "pregnancy_outcome/mother_died", {"mother_death_date": DROP},
     "mother_death_date"),
    # pnc_visit
    ("pnc_after_42_days", "pnc_visit", {"outcome_date": "2025-04-01"}, "visit_date"),
    ("pnc_before_delivery", "pnc_visit", {"visit_date": "2025-05-19"}, "visit_date"),
    ("pnc_missing_outcome_date", "pnc_visit", {"outcome_date": DROP}, "outcome_date"),
    ("pnc_baby_temp_out_of_range", "pnc_visit", {"baby.0.temp_c": 44.0}, "baby.0.temp_c"),
    ("pnc_baby_missing_recall", "pnc_visit", {"baby.1.bf_recall": DROP}, "baby.1.bf_recall"),
    ("pnc_baby_bad_recall", "pnc_visit", {"baby.1.bf_recall": ["honey"]}, "baby.1.bf_recall"),
    ("pnc_dead_baby_danger_signs", "pnc_visit/mother_died", {"baby.0.danger_signs": ["none"]},
     "baby.0.danger_signs"),
    ("pnc_mother_temp_when_died", "pnc_visit/mother_died", {"mother_temp_c": 37.0},
     "mother_temp_c"),
    ("pnc_missing_mother_signs", "pnc_visit", {"mother_danger_signs": DROP}, "mother_danger_signs"),
    ("pnc_bp_inverted", "pnc_visit", {"mother_bp_sys": 80, "mother_bp_dia": 85}, "mother_bp_dia"),
    # growth
    ("growth_before_birth", "growth", {"measured_on": "2023-12-31"}, "measured_on"),
    ("growth_over_five_years", "growth", {"child_dob": "2020-01-01"}, "measured_on"),
    ("growth_weight_out_of_range", "growth", {"weight_kg": 41.0}, "weight_kg"),
    ("growth_length_out_of_range", "growth", {"lenhei_cm": 37.9}, "lenhei_cm"),
    ("growth_missing_position", "growth", {"position": DROP}, "position"),
    ("growth_position_without_length", "growth/infant", {"position": "lying"}, "position"),
    ("growth_missing_reason", "growth/infant", {"not_measured_reason": DROP},
     "not_measured_reason"),
    ("growth_reason_when_measured", "growth", {"not_measured_reason": "other"},
     "not_measured_reason"),
    ("growth_muac_under_6_months", "growth/infant", {"muac_mm": 120}, "muac_mm"),
    ("growth_vitamin_a_under_6_months", "growth/infant", {"vitamin_a_given": "none"},
     "vitamin_a_given"),
    ("growth_standing_under_9_months", "growth/infant",
     {"lenhei_cm": 60.0, "position": "standing", "not_measured_reason": DROP}, "position"),
    ("growth_sam_not_referred", "growth/older_standing_sam_referred", {"referred_to": "none"},
     "referred_to"),
    ("growth_oedema_not_referred", "growth", {"oedema_bilateral": True}, "referred_to"),
    ("growth_missing_oedema", "growth", {"oedema_bilateral": DROP}, "oedema_bilateral"),
    # nutrition_counselling
    ("nutr_over_two_years", "nutrition_counselling/toddler", {"child_dob": "2023-01-01"},
     "session_date"),
    ("nutr_missing_recall", "nutrition_counselling", {"recall_liquids_foods": DROP},
     "recall_liquids_foods"),
    ("nutr_none_with_water", "nutrition_counselling", {"recall_liquids_foods": ["none", "water"]},
     "recall_liquids_foods"),
    ("nutr_food_groups_under_6_months", "nutrition_counselling",
     {"food_groups_yesterday": ["breast_milk"]}, "food_groups_yesterday"),
    ("nutr_recall_over_6_months", "nutrition_counselling/toddler",
     {"recall_liquids_foods": ["water"]}, "recall_liquids_foods"),
    ("nutr_missing_food_groups", "nutrition_counselling/toddler", {"food_groups_yesterday": DROP},
     "food_groups_yesterday"),
    ("nutr_none_with_food_group", "nutrition_counselling/toddler",
     {"food_groups_yesterday": ["none", "eggs"]}, "food_groups_yesterday"),
    ("nutr_meals_out_of_range", "nutrition_counselling/toddler", {"meals_yesterday": 11},
     "meals_yesterday"),
    ("nutr_follow_up_same_day", "nutrition_counselling", {"follow_up_date": "2025-05-20"},
     "follow_up_date"),
    ("nutr_bad_counselled_person", "nutrition_counselling", {"counselled_person": "aunt"},
     "counselled_person"),
    # cp_report
    ("cp_missing_kinship", "cp_report/planned_consanguineous", {"kinship": DROP}, "kinship"),
    ("cp_kinship_without_consanguinity", "cp_report", {"kinship": "first_cousins"}, "kinship"),
    ("cp_past_union_after_report", "cp_report", {"union_date": "2025-05-20"}, "union_date"),
    ("cp_dob_after_union", "cp_report", {"party_b_dob": "2025-03-01"}, "party_b_dob"),
    ("cp_missing_party_sex", "cp_report", {"party_a_sex": DROP}, "party_a_sex"),
    ("cp_bad_case_type", "cp_report", {"case_type": ["forced_marriage"]}, "case_type"),
    ("cp_none_with_action", "cp_report", {"action_taken": ["none", "family_counselled"]},
     "action_taken"),
    ("cp_free_text_refused", "cp_report", {"notes": "Tên: Mai"}, "notes"),
    # group_session
    ("group_more_women_than_attendees", "group_session", {"attendees_female": 25},
     "attendees_female"),
    ("group_pregnant_over_total", "group_session", {"attendees_pregnant": 30},
     "attendees_pregnant"),
    ("group_nobody", "group_session", {"attendees_total": 0}, "attendees_total"),
    ("group_too_short", "group_session", {"duration_min": 10}, "duration_min"),
    ("group_bad_language", "group_session", {"language": "english"}, "language"),
    ("group_missing_topics", "group_session", {"topics": DROP}, "topics"),
    ("group_bad_group_id", "group_session", {"group_id": "club-7"}, "group_id"),
    ("group_count_as_text", "group_session", {"duration_min": "ninety"}, "duration_min"),
]


@pytest.mark.parametrize("name,base,patch,path", REJECTED, ids=[r[0] for r in REJECTED])
def test_bad_value_is_rejected_with_an_error_keyed_by_its_field(name, base, patch, path):
    form_id = base.split("/")[0]
    result = create(form_id, patched(VALID[base], patch))
    messages = at(result.errors, path)
    assert messages, f"no error at {path}: {result.errors}"
    # Messages are plain text a health worker can act on.
    for message in messages if isinstance(messages, list) else []:
        assert isinstance(message, str) and message.strip()


def test_every_form_has_rejection_cases():
    assert {base.split("/")[0] for _, base, _, _ in REJECTED} == set(FORM_IDS)


# ---------------------------------------------------------------- soft checks

# (case id, base example, patch, dotted warning path): stored, with a warning.
WARNED = [
    ("anc_high_blood_pressure", "anc_visit", {"bp_systolic": 150, "bp_diastolic": 95},
     "bp_systolic"),
    ("anc_short_stature", "anc_visit", {"height_cm": 143.0}, "height_cm"),
    ("preg_under_18", "pregnancy", {"woman_dob": "2008-01-01"}, "woman_dob"),
    ("outcome_preterm_live_birth", "pregnancy_outcome", {"ga_weeks_at_outcome": 21},
     "ga_weeks_at_outcome"),
    ("pnc_mother_fever", "pnc_visit", {"mother_temp_c": 38.5}, "mother_temp_c"),
    ("pnc_danger_sign_not_referred", "pnc_visit",
     {"mother_danger_signs": ["calf_pain"], "referred_to": "none"}, "referred_to"),
    ("growth_lying_at_three", "growth/older_standing_sam_referred", {"position": "lying"},
     "position"),
    ("growth_standing_at_one", "growth", {"position": "standing"}, "position"),
    ("nutr_breastfed_but_no_breast_milk_group", "nutrition_counselling/toddler",
     {"food_groups_yesterday": ["grains_roots_tubers", "eggs"]}, "food_groups_yesterday"),
    ("cp_early_marriage_of_adults", "cp_report", {"party_a_dob": "2000-01-01"}, "case_type"),
    ("cp_under_age_not_called_early", "cp_report/planned_consanguineous",
     {"case_type": ["consanguineous_marriage"]}, "case_type"),
]


@pytest.mark.parametrize("name,base,patch,path", WARNED, ids=[w[0] for w in WARNED])
def test_soft_check_warns_but_accepts(name, base, patch, path):
    result = create(base.split("/")[0], patched(VALID[base], patch))
    assert result.errors == {}
    assert at(result.warnings, path), f"no warning at {path}: {result.warnings}"


# ---------------------------------------------------------------- computed fields

def test_computed_fields_follow_the_domain_definitions():
    pnc = form("pnc_visit").compute(create("pnc_visit", PNC).data)
    assert pnc["day_postpartum"] == 2
    assert [b["exclusive_bf"] for b in pnc["baby"]] == [True, False]

    anc = form("anc_visit").compute(create("anc_visit", ANC_CHECKUP).data)
    assert anc["ga_weeks"] == 19  # 133 days after the LMP

    toddler = form("nutrition_counselling").compute(create("nutrition_counselling",
                                                           NUTRITION_TODDLER).data)
    assert (toddler["age_days"], toddler["mdd_met"]) == (384, True)
    fewer = patched(NUTRITION_TODDLER, {"food_groups_yesterday": ["breast_milk", "eggs"]})
    assert form("nutrition_counselling").compute(fewer)["mdd_met"] is False

    cp = form("cp_report").compute(create("cp_report", CP_EARLY).data)
    assert (cp["age_at_union_a"], cp["age_at_union_b"]) == (15, 22)

    growth = form("growth").compute(create("growth", GROWTH_TODDLER).data)
    assert growth["age_days"] == 496

    preg = form("pregnancy").compute(create("pregnancy", PREGNANCY_LMP).data)
    assert preg["woman_age_years"] == 26

    person = form("person").compute(create("person", PERSON_DIED).data)
    assert person["age_at_death_years"] == 27


def test_mdd_met_is_only_derived_for_children_6_to_23_months():
    infant = form("nutrition_counselling").compute(create("nutrition_counselling",
                                                          NUTRITION_INFANT).data)
    assert (infant["age_days"], infant["mdd_met"]) == (125, None)
    nothing = VALID["nutrition_counselling/toddler_no_food_group"]
    assert form("nutrition_counselling").compute(nothing)["mdd_met"] is False


def test_copied_values_let_a_single_edit_be_checked_offline():
    """An edit carrying the copied outcome date is checked against it; an edit
    of the visit date alone waits for the merged record."""
    pnc = form("pnc_visit")
    late = pnc.validate_change({"outcome_date": "2025-04-01", "visit_date": "2025-05-22"},
                               today=TODAY)
    assert at(late.errors, "visit_date")
    assert pnc.validate_change({"visit_date": "2025-05-30"}, today=TODAY).errors == {}
    merged = patched(PNC, {"visit_date": "2025-07-15"})
    assert at(pnc.validate_record(merged, today=dt.date(2025, 7, 20)).errors, "visit_date")


def test_no_z_score_fields_until_who_zscores_ships():
    """waz/haz/whz/baz and nutrition_class wait for the `who_zscores` function."""
    names = {f["name"] for f in definition("growth")["fields"]}
    assert not names & {"waz", "haz", "whz", "baz", "flags", "nutrition_class"}

"""who_zscores as a compute function (schemas/compute.py), and in a compiled form.

The expected z-scores are WHO's: the igrowup survey rows quoted below
(tests/data/who_igrowup_survey.csv, ids 1 and 234) and LMS rows copied from
WHO's tables.
"""
from __future__ import annotations

import pytest

from schemas import compute
from schemas.forms import FormDefinitionError, compile_form

# Survey child 1: girl, 683 days, 10.4 kg, 84.8 cm lying, no oedema;
# WHO: WAZ -0.57, HAZ -0.07, WHZ -0.81, BAZ -0.79.
CHILD_1 = dict(sex="female", dob_precision="exact", age_days=683, weight=10.399999619,
               lenhei=84.800003052, position="lying", oedema=False, muac=149)


def call(name, **overrides):
    return compute.REGISTRY[name](**{**CHILD_1, **overrides})


def test_who_zscores_answers_every_output_as_one_object():
    out = call("who_zscores")
    assert {k: out[k] for k in ("waz", "haz", "whz", "baz")} == {
        "waz": -0.57, "haz": -0.07, "whz": -0.81, "baz": -0.79}
    assert out["flags"] == [] and out["nutrition_class"] == "normal"
    assert out["stunted"] is False and out["wasted"] is False and out["overweight"] is False
    assert out["algo"] == compute.GROWTH_ALGO
    assert set(out) == set(compute.GROWTH_OUTPUTS)


def test_each_output_is_registered_with_its_own_type():
    for key, kind in compute.GROWTH_OUTPUTS.items():
        f = compute.REGISTRY[f"who_zscores.{key}"]
        assert f.result == kind and f.optional == {"weight", "lenhei", "position", "muac"}
        assert f(**CHILD_1) == call("who_zscores")[key]


def test_a_missing_weight_still_gives_the_height_score():
    # Survey child 234: girl, 814 days, 86.3 cm lying, oedema; WHO: HAZ -0.73 and nothing else.
    out = call("who_zscores", age_days=814, weight=None, lenhei=86.300003052, oedema=True, muac=None)
    assert (out["waz"], out["haz"], out["whz"], out["baz"]) == (None, -0.73, None, None)
    assert out["nutrition_class"] == "sam" and out["severely_wasted"] is True
    assert call("who_zscores.haz", weight=None) == -0.07
    # A required input that is null still makes the result null.
    assert call("who_zscores.haz", oedema=None) is None
    assert call("who_zscores.haz", age_days=None) is None


def test_no_scores_for_a_year_only_dob_or_an_unknown_sex():
    for overrides in ({"dob_precision": "year"}, {"sex": "indeterminate"}, {"age_days": 1827}):
        out = call("who_zscores", **overrides)
        assert out["waz"] is out["haz"] is out["whz"] is out["baz"] is out["nutrition_class"] is None
    assert call("who_zscores.waz", dob_precision="month") == -0.57


def test_muac_decides_the_class_when_whz_is_normal():
    assert call("who_zscores.nutrition_class", muac=120) == "mam"
    assert call("who_zscores.nutrition_class", muac=110) == "sam"
    assert call("who_zscores.nutrition_class", age_days=150) is None   # under 6 months


def growth_form(function="who_zscores.whz", **field_changes):
    fields = [
        {"name": "sex", "type": "choice", "required": True,
         "choices": [{"value": "male", "label": "Male"}, {"value": "female", "label": "Female"}]},
        {"name": "dob_precision", "type": "choice", "required": True,
         "choices": [{"value": v, "label": v} for v in ("exact", "month", "year")]},
        {"name": "dob", "type": "date", "required": True},
        {"name": "measured_on", "type": "date", "required": True},
        {"name": "age_days", "type": "computed",
         "compute": {"function": "days_between", "inputs": {"start": "dob", "end": "measured_on"}}},
        {"name": "weight_kg", "type": "decimal", "min": 0.5, "max": 40},
        {"name": "lenhei_cm", "type": "decimal", "min": 38, "max": 130},
        {"name": "position", "type": "choice",
         "choices": [{"value": "lying", "label": "Lying"}, {"value": "standing", "label": "Standing"}]},
        {"name": "oedema_bilateral", "type": "boolean", "required": True},
        {"name": "muac_mm", "type": "integer", "min": 60, "max": 250},
    ]
    inputs = {"sex": "sex", "dob_precision": "dob_precision", "age_days": "age_days",
              "weight": "weight_kg", "lenhei": "lenhei_cm", "position": "position",
              "oedema": "oedema_bilateral", "muac": "muac_mm"}
    fields.append({"name": "out", "type": "computed", "compute": {"function": function, "inputs": inputs}})
    # A change replaces the field's definition (all but its name).
    fields = [{"name": f["name"], **field_changes[f["name"]]} if f["name"] in field_changes else f
              for f in fields]
    return compile_form({"id": "g", "version": 1, "title": "Growth", "restricted_to": None, "fields": fields})


RECORD = {"sex": "female", "dob_precision": "exact", "dob": "2023-01-01", "measured_on": "2024-11-14",
          "weight_kg": 10.4, "lenhei_cm": 84.8, "position": "lying", "oedema_bilateral": False,
          "muac_mm": 149}


def test_a_form_computes_the_outputs_it_names():
    # 2023-01-01 to 2024-11-14 is 683 days; 10.4 kg and 84.8 cm as the survey's child 1.
    assert growth_form().compute(RECORD) == {"age_days": 683, "out": -0.81}
    assert growth_form("who_zscores.nutrition_class").compute(RECORD)["out"] == "normal"
    assert growth_form("who_zscores").compute(RECORD)["out"]["baz"] == -0.79


def test_a_form_can_check_a_computed_class():
    f = growth_form("who_zscores.nutrition_class")
    result = f.validate_create({**RECORD, "muac_mm": 110}, today=None)
    assert result.ok and f.compute(result.data)["out"] == "sam"


@pytest.mark.parametrize("field, change, problem", [
    ("sex", {"type": "choice", "choices": [{"value": "boy", "label": "b"}, {"value": "girl", "label": "g"}]},
     "sex choices must be male and female"),
    ("position", {"type": "choice", "choices": [{"value": "sitting", "label": "s"}]},
     "position choices must be lying and standing"),
    ("dob_precision", {"type": "choice", "choices": [{"value": "exact", "label": "e"}]},
     "dob_precision choices must include exact and year"),
    ("weight_kg", {"type": "string"}, "input 'weight' must be a decimal or integer field"),
])
def test_a_form_with_unusable_inputs_is_refused(field, change, problem):
    with pytest.raises(FormDefinitionError, match=problem):
        growth_form(**{field: change})


def test_a_form_scores_height_when_weight_is_missing():
    record = {**RECORD, "weight_kg": None, "muac_mm": None}
    assert growth_form("who_zscores.haz").compute(record)["out"] == -0.07

"""The wire envelope: a change and a push batch exactly as DESIGN.md."""

import pytest
from marshmallow import ValidationError

from schemas.wire import LIMITS, PUSH_SCHEMA, area_covers, load_change

GOOD = {
    "id": "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d10",
    "form": "anc_visit", "form_version": 1, "area": "QN.LM.03",
    "data": {"visit_date": "2025-03-01", "weight_kg": 52.5},
    "hlc": "2025-03-01T02:03:04.123Z-0000-dev-7f3a",
    "clocks": {"visit_date": "2025-02-28T09:00:00.000Z-0002-dev-7f3a"},
    "bases": {"weight_kg": "2025-02-20T07:15:00.000Z-0000-dev-91c2"},
}


def test_design_example_change_loads():
    change, errors = load_change(GOOD)
    assert errors == {} and change["clocks"] == GOOD["clocks"] and change["deleted"] is None


@pytest.mark.parametrize("key,value", [
    ("id", "not-a-uuid"), ("form_version", True), ("form_version", 1.5), ("form_version", 0),
    ("area", "qn.lm"), ("area", "QN..LM"), ("area", "QN.LM."), ("area", "QN.LM\n"), ("hlc", GOOD["hlc"] + "\n"), ("data", []),
    ("hlc", "2025-03-01T02:03:04Z-0-dev"), ("clocks", {"visit_date": "yesterday"}),
    ("clocks", {"height_cm": "2025-02-28T09:00:00.000Z-0002-dev-7f3a"}), ("deleted", "yes"),
])
def test_each_bad_envelope_value_is_named(key, value):
    change, errors = load_change({**GOOD, key: value})
    assert change is None and key in errors


def test_unknown_and_missing_keys_are_errors():
    _, errors = load_change({**GOOD, "extra": 1})
    assert "extra" in errors
    _, errors = load_change({k: v for k, v in GOOD.items() if k != "hlc"})
    assert "hlc" in errors


def test_push_envelope_limits_and_device_time():
    body = {"device_id": "dev-7f3a", "batch_id": "b-1", "device_time": "2025-03-01T09:00:00+07:00",
            "app_version": "1.0", "records": [GOOD]}
    assert PUSH_SCHEMA.load(body)["records"] == [GOOD]
    for bad in ({"device_time": "2025-03-01T09:00:00"}, {"device_id": "Dev 1"},
                {"records": [GOOD] * (LIMITS["max_records_per_batch"] + 1)}, {"batch_id": ""}):
        with pytest.raises(ValidationError):
            PUSH_SCHEMA.load({**body, **bad})


@pytest.mark.parametrize("scopes,area,covered", [
    (["QN.LM"], "QN.LM", True), (["QN.LM"], "QN.LM.03", True), (["QN.LM"], "QN.LMX", False),
    (["QN.LM"], "QN", False), (["QN"], "QN.LM.03.X", True), ([], "QN", False),
    (["QN.LM.03", "QN.HB"], "QN.HB.01", True),
])
def test_area_rule_on_dot_boundaries(scopes, area, covered):
    assert area_covers(scopes, area) is covered

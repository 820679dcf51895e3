"""The form compiler: definitions in, validators out (schemas/forms/, compute.py)."""
import datetime as dt
import json
import unicodedata
from pathlib import Path

import pytest
import time_machine
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from schemas import compute as computations
from schemas.forms import (
    FormDefinitionError, FormRegistry, bundled_definitions, compile_form, definition_sha256,
    describe_errors, load_definition, local_today,
)

TODAY = dt.date(2025, 3, 1)
YNU = [{"value": v, "label": v.title()} for v in ("yes", "no", "unknown")]
UUID = "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d10"


def form(*fields, checks=None, form_id="t", version=1):
    definition = {"id": form_id, "version": version, "title": "Test", "restricted_to": None,
                  "fields": list(fields)}
    if checks is not None:
        definition["checks"] = checks
    return compile_form(definition)


def choices(*values):
    return [{"value": v, "label": v} for v in values]


# --------------------------------------------------------------------------- types and canonical values

@pytest.mark.parametrize("kind, extra, given_value, canonical", [
    ("string", {}, "Nguyễn", "Nguyễn"),
    ("string", {}, unicodedata.normalize("NFD", "Nguyễn Thị Ánh"), "Nguyễn Thị Ánh"),
    ("text", {}, "  spaces kept  ", "  spaces kept  "),
    ("integer", {}, 3, 3),
    ("integer", {}, 3.0, 3),
    ("decimal", {}, json.loads("52.50"), 52.5),
    ("decimal", {}, 52, 52.0),
    ("boolean", {}, False, False),
    ("date", {}, "2024-02-29", "2024-02-29"),
    ("time", {}, "08:30", "08:30:00"),
    ("time", {}, "23:59:59", "23:59:59"),
    ("datetime", {}, "2025-03-01T08:30:00+07:00", "2025-03-01T08:30:00+07:00"),
    ("datetime", {}, "2025-03-01T01:30:00Z", "2025-03-01T01:30:00+00:00"),
    ("datetime", {}, "2025-03-01T01:30+07:00", "2025-03-01T01:30:00+07:00"),
    ("choice", {"choices": YNU}, "no", "no"),
    ("multi_choice", {"choices": choices("a", "b", "c")}, ["c", "a"], ["a", "c"]),
    ("multi_choice", {"choices": choices("a", "b", "c")}, [], []),
    ("ref", {"ref": "person"}, UUID.upper(), UUID),
    ("geopoint", {}, {"lon": 107, "lat": 21.1}, {"lat": 21.1, "lon": 107.0}),
    ("geopoint", {}, {"lat": 21.1, "lon": 107.5, "accuracy_m": 5}, {"lat": 21.1, "lon": 107.5, "accuracy_m": 5.0}),
])
def test_values_are_accepted_in_canonical_form(kind, extra, given_value, canonical):
    f = form({"name": "x", "type": kind, **extra})
    result = f.validate_create({"x": given_value}, today=TODAY)
    assert result.errors == {}
    assert result.data == {"x": canonical}
    assert type(result.data["x"]) is type(canonical)


@pytest.mark.parametrize("kind, extra, bad, message", [
    ("string", {}, 5, "must be text"),
    ("integer", {}, 3.5, "must be a whole number"),
    ("integer", {}, True, "must be a whole number"),
    ("integer", {}, "3", "must be a whole number"),
    ("integer", {}, 2 ** 63, "is too large"),
    ("decimal", {}, "52.5", "must be a number"),
    ("decimal", {}, float("nan"), "must be a number"),
    ("decimal", {}, float("inf"), "must be a number"),
    ("decimal", {}, False, "must be a number"),
    ("boolean", {}, "yes", "must be true or false"),
    ("boolean", {}, 1, "must be true or false"),
    ("date", {}, "2025-02-30", "is not a real date"),
    ("date", {}, "01/03/2025", "must be a date (YYYY-MM-DD)"),
    ("time", {}, "24:00", "must be a time (HH:MM or HH:MM:SS)"),
    ("time", {}, "8:30", "must be a time (HH:MM or HH:MM:SS)"),
    ("datetime", {}, "2025-03-01T08:30:00", "must be a date and time with its UTC offset "
                                            "(e.g. 2025-03-01T08:30:00+07:00)"),
    ("choice", {"choices": YNU}, "maybe", "must be one of: yes, no, unknown"),
    ("multi_choice", {"choices": choices("a", "b")}, "a", "must be a list of choices"),
    ("multi_choice", {"choices": choices("a", "b")}, ["a", "z"], "'z' is not one of: a, b"),
    ("multi_choice", {"choices": choices("a", "b")}, ["a", "a"], "lists 'a' more than once"),
    ("ref", {"ref": "person"}, "not-a-uuid", "must be a record id (a UUID)"),
    ("geopoint", {}, {"lat": 91, "lon": 0}, "lat must be between -90 and 90"),
    ("geopoint", {}, {"lat": 0}, "lon is required"),
    ("geopoint", {}, {"lat": 0, "lon": 0, "alt": 3}, "'alt' is not a geopoint key (lat, lon, accuracy_m)"),
    ("geopoint", {}, {"lat": 0, "lon": 0, "accuracy_m": -1}, "accuracy_m must be at least 0"),
    ("repeat", {"fields": [{"name": "a", "type": "integer"}]}, {"a": 1}, "must be a list of entries"),
])
def test_bad_values_get_plain_messages(kind, extra, bad, message):
    f = form({"name": "x", "type": kind, **extra})
    result = f.validate_create({"x": bad}, today=TODAY)
    assert message in result.errors["x"]


def test_equal_values_compare_equal_after_normalising():
    f = form({"name": "w", "type": "decimal"}, {"name": "s", "type": "string"},
             {"name": "m", "type": "multi_choice", "choices": choices("a", "b", "c")})
    one = f.validate_create(json.loads('{"w": 52.5, "s": "Ánh", "m": ["b", "a"]}')).data
    two = f.validate_create(json.loads('{"m": ["a", "b"], "w": 52.50, "s": "A\u0301nh"}')).data
    assert one == two


def test_unknown_and_computed_fields_are_rejected():
    f = form({"name": "dob", "type": "date"}, {"name": "on", "type": "date"},
             {"name": "age", "type": "computed",
              "compute": {"function": "age_years", "inputs": {"dob": "dob", "on": "on"}}})
    result = f.validate_create({"dob": "2000-01-01", "colour": "red", "age": 25})
    assert result.errors == {"colour": ["unknown field"], "age": ["computed; it is derived, never sent"]}
    assert f.validate_change({"colour": 1}).errors == {"colour": ["unknown field"]}


def test_a_record_that_is_not_an_object_is_an_error():
    assert form({"name": "x", "type": "integer"}).validate_create([1]).errors


# --------------------------------------------------------------------------- bounds

def test_literal_bounds_are_inclusive():
    f = form({"name": "w", "type": "decimal", "min": 30, "max": 150},
             {"name": "d", "type": "date", "min": "2020-01-01", "max": "2020-12-31"},
             {"name": "t", "type": "time", "min": "06:00", "max": "18:00"})
    assert f.validate_create({"w": 30, "d": "2020-01-01", "t": "06:00"}).errors == {}
    assert f.validate_create({"w": 150, "d": "2020-12-31", "t": "18:00:00"}).errors == {}
    result = f.validate_create({"w": 150.1, "d": "2019-12-31", "t": "18:00:01"})
    assert result.errors == {"w": ["must be at most 150"], "d": ["must be on or after 2020-01-01"],
                             "t": ["must be at or before 18:00:00"]}
    assert f.validate_create({"w": 29.9}).errors == {"w": ["must be at least 30"]}


def test_today_allows_a_day_of_grace():
    f = form({"name": "d", "type": "date", "max": "today"})
    assert f.validate_create({"d": "2025-03-02"}, today=TODAY).errors == {}
    assert f.validate_create({"d": "2025-03-03"}, today=TODAY).errors == {"d": ["cannot be in the future"]}


@pytest.mark.parametrize("bound, side, ok, bad", [
    ("today-110y", "min", "1915-02-28", "1915-02-27"),
    ("today-42d", "min", "2025-01-17", "2025-01-16"),
    ("today+38w", "max", "2025-11-23", "2025-11-24"),
    ("today+2d", "max", "2025-03-04", "2025-03-05"),
    ("today-1m", "max", "2025-02-02", "2025-02-03"),
])
def test_today_offsets(bound, side, ok, bad):
    f = form({"name": "d", "type": "date", side: bound})
    assert f.validate_create({"d": ok}, today=TODAY).errors == {}
    assert f.validate_create({"d": bad}, today=TODAY).errors["d"]


def test_today_comes_from_the_deployment_time_zone(monkeypatch):
    # 20:00 UTC on 1 March is already 2 March in Vietnam (UTC+7).
    with time_machine.travel(dt.datetime(2025, 3, 1, 20, 0, tzinfo=dt.timezone.utc), tick=False):
        monkeypatch.delenv("FIELDSYNC_TIMEZONE", raising=False)
        assert local_today() == dt.date(2025, 3, 2)
        monkeypatch.setenv("FIELDSYNC_TIMEZONE", "UTC")
        assert local_today() == dt.date(2025, 3, 1)
        f = form({"name": "d", "type": "date", "max": "today"})
        assert f.validate_create({"d": "2025-03-02"}).errors == {}
        assert f.validate_create({"d": "2025-03-03"}).errors


def test_field_bounds_with_offsets():
    f = form({"name": "outcome", "type": "date"},
             {"name": "death", "type": "date", "min": {"field": "outcome"},
              "max": {"field": "outcome", "offset": "+42d"}},
             {"name": "sys", "type": "integer"},
             {"name": "dia", "type": "integer", "max": {"field": "sys", "offset": -1}})
    assert f.validate_create({"outcome": "2025-01-01", "death": "2025-02-12", "sys": 120, "dia": 119}).errors == {}
    result = f.validate_create({"outcome": "2025-01-01", "death": "2025-02-13", "sys": 120, "dia": 120})
    assert result.errors == {"death": ["must be on or before 2025-02-12 (outcome + 42 days)"],
                             "dia": ["must be at most 119 (sys - 1)"]}
    assert f.validate_create({"outcome": "2025-01-01", "death": "2024-12-31"}).errors == {
        "death": ["must be on or after 2025-01-01 (outcome)"]}
    # An absent reference field bounds nothing.
    assert f.validate_create({"death": "1990-01-01", "dia": 300}).errors == {}


def test_change_checks_field_bounds_only_when_the_other_field_is_in_it():
    f = form({"name": "sys", "type": "integer", "max": 250},
             {"name": "dia", "type": "integer", "max": {"field": "sys", "offset": -1}})
    assert f.validate_change({"dia": 200}).errors == {}
    assert f.validate_change({"dia": 200, "sys": 150}).errors == {"dia": ["must be at most 149 (sys - 1)"]}
    assert f.validate_change({"sys": 251}).errors == {"sys": ["must be at most 250"]}


# --------------------------------------------------------------------------- conditions and relevance

HI = [
    {"name": "hi_has_card", "type": "choice", "required": True, "choices": YNU},
    {"name": "hi_number", "type": "string", "required": True, "pattern": r"\d{10}",
     "relevant": {"field": "hi_has_card", "eq": "yes"}},
]


def test_relevance_requires_when_asked_and_forbids_when_not():
    f = form(*HI)
    assert f.validate_create({"hi_has_card": "yes", "hi_number": "0123456789"}).errors == {}
    assert f.validate_create({"hi_has_card": "yes"}).errors == {"hi_number": ["is required"]}
    assert f.validate_create({"hi_has_card": "no"}).errors == {}
    assert f.validate_create({"hi_has_card": "no", "hi_number": None}).errors == {}
    assert f.validate_create({"hi_has_card": "no", "hi_number": "0123456789"}).errors == {
        "hi_number": ["is not asked when hi_has_card is not 'yes'"]}
    assert f.validate_create({}).errors == {"hi_has_card": ["is required"]}


def test_change_checks_relevance_only_with_its_inputs():
    f = form(*HI)
    assert f.validate_change({"hi_number": "0123456789"}).errors == {}
    assert f.validate_change({"hi_number": None}).errors == {}   # maybe no longer asked
    assert f.validate_change({"hi_has_card": None}).errors == {"hi_has_card": ["is required"]}
    assert f.validate_change({"hi_has_card": "no", "hi_number": None}).errors == {}
    assert f.validate_change({"hi_has_card": "yes", "hi_number": None}).errors == {"hi_number": ["is required"]}
    assert f.validate_change({"hi_has_card": "no", "hi_number": "0123456789"}).errors == {
        "hi_number": ["is not asked when hi_has_card is not 'yes'"]}


OPERATOR_CASES = [
    ({"field": "n", "eq": 3}, {"n": 3}, {"n": 4}),
    ({"field": "n", "ne": 3}, {"n": 4}, {"n": 3}),
    ({"field": "n", "ne": None}, {"n": 4}, {}),
    ({"field": "n", "eq": None}, {}, {"n": 0}),
    ({"field": "c", "in": ["yes", "unknown"]}, {"c": "unknown"}, {"c": "no"}),
    ({"field": "n", "gt": 3}, {"n": 4}, {"n": 3}),
    ({"field": "n", "ge": 3}, {"n": 3}, {"n": 2}),
    ({"field": "n", "lt": 3}, {"n": 2}, {"n": 3}),
    ({"field": "n", "le": 3}, {"n": 3}, {"n": 4}),
    ({"field": "n", "lt": 3}, {"n": 2}, {}),         # ordering with null is false
    ({"field": "n", "ge": 3}, {"n": 3}, {}),
    ({"field": "m", "contains": "b"}, {"m": ["a", "b"]}, {"m": ["a"]}),
    ({"field": "m", "contains": "b"}, {"m": ["b"]}, {}),
    ({"field": "d", "gt": "2025-01-01"}, {"d": "2025-01-02"}, {"d": "2025-01-01"}),
    ({"field": "n", "lt": {"field": "k"}}, {"n": 1, "k": 2}, {"n": 2, "k": 2}),
    ({"field": "n", "eq": {"field": "k"}}, {"n": 2, "k": 2}, {"n": 1}),
    ({"all": [{"field": "n", "ge": 1}, {"field": "n", "le": 5}]}, {"n": 5}, {"n": 6}),
    ({"any": [{"field": "n", "eq": 1}, {"field": "c", "eq": "yes"}]}, {"c": "yes"}, {"n": 2, "c": "no"}),
    ({"not": {"field": "c", "eq": "yes"}}, {"c": "no"}, {"c": "yes"}),
    ({"not": {"field": "c", "eq": "yes"}}, {}, {"c": "yes"}),
]


@pytest.mark.parametrize("condition, holds, fails", OPERATOR_CASES)
def test_condition_operators(condition, holds, fails):
    f = form({"name": "n", "type": "integer"}, {"name": "k", "type": "integer"},
             {"name": "c", "type": "choice", "choices": YNU},
             {"name": "m", "type": "multi_choice", "choices": choices("a", "b")},
             {"name": "d", "type": "date"},
             {"name": "q", "type": "boolean", "relevant": condition})
    assert f.validate_create({**holds, "q": True}).errors == {}
    result = f.validate_create({**fails, "q": True})
    assert list(result.errors) == ["q"] and result.errors["q"][0].startswith("is not asked when ")


def test_relevance_messages_read_as_plain_language():
    f = form({"name": "n", "type": "integer"}, {"name": "c", "type": "choice", "choices": YNU},
             {"name": "q", "type": "boolean",
              "relevant": {"all": [{"field": "c", "in": ["yes", "no"]},
                                   {"any": [{"field": "n", "ge": 10}, {"not": {"field": "n", "lt": 2}}]}]}})
    result = f.validate_create({"c": "unknown", "q": True})
    assert result.errors == {"q": ["is not asked when c is not one of: yes, no or "
                                   "(n is not at least 10 and n is less than 2)"]}


def test_conditions_can_read_computed_fields():
    f = form({"name": "dob", "type": "date", "required": True}, {"name": "on", "type": "date", "required": True},
             {"name": "age_days", "type": "computed",
              "compute": {"function": "days_between", "inputs": {"start": "dob", "end": "on"}}},
             {"name": "muac_mm", "type": "integer", "relevant": {"field": "age_days", "ge": 183}})
    assert f.validate_create({"dob": "2024-01-01", "on": "2024-07-02", "muac_mm": 130}).errors == {}
    assert f.validate_create({"dob": "2024-01-01", "on": "2024-03-01", "muac_mm": 130}).errors == {
        "muac_mm": ["is not asked when age_days is not at least 183"]}
    # In a change, a rule on a computed field waits for all of its inputs.
    assert f.validate_change({"muac_mm": 130, "on": "2024-03-01"}).errors == {}
    assert f.validate_change({"muac_mm": 130, "on": "2024-03-01", "dob": "2024-01-01"}).errors


# --------------------------------------------------------------------------- repeats

BABIES = {"name": "baby", "type": "repeat", "min_count": 1, "max_count": 2,
          "relevant": {"field": "outcome", "eq": "live_birth"},
          "fields": [
              {"name": "sex", "type": "choice", "required": True, "choices": choices("male", "female")},
              {"name": "status", "type": "choice", "required": True, "choices": choices("alive", "died")},
              {"name": "weight_g", "type": "integer", "min": 500, "max": 6000},
              {"name": "bf_1h", "type": "choice", "choices": YNU,
               "relevant": {"all": [{"field": "status", "eq": "alive"}, {"field": "mode", "ne": "caesarean"}]}},
          ]}
OUTCOME = [{"name": "outcome", "type": "choice", "required": True, "choices": choices("live_birth", "stillbirth")},
           {"name": "mode", "type": "choice", "choices": choices("vaginal", "caesarean")}, BABIES]


def test_repeat_errors_are_given_per_entry():
    f = form(*OUTCOME)
    good = {"outcome": "live_birth", "baby": [{"sex": "male", "status": "alive", "bf_1h": "yes"}]}
    assert f.validate_create(good).errors == {}
    result = f.validate_create({"outcome": "live_birth", "mode": "caesarean", "baby": [
        {"sex": "male", "status": "alive"},
        {"sex": "boy", "status": "alive", "weight_g": 9000, "eyes": "brown"},
    ]})
    assert result.errors == {"baby": {"1": {"sex": ["must be one of: male, female"],
                                            "weight_g": ["must be at most 6000"],
                                            "eyes": ["unknown field"]}}}
    result = f.validate_create({"outcome": "live_birth", "mode": "caesarean", "baby": [
        {"sex": "male", "status": "died", "bf_1h": "no"}, {"status": "alive"}]})
    assert result.errors == {"baby": {
        "0": {"bf_1h": ["is not asked when status is not 'alive' or mode is 'caesarean'"]},
        "1": {"sex": ["is required"]}}}


def test_repeat_counts_and_relevance():
    f = form(*OUTCOME)
    entry = {"sex": "male", "status": "alive"}
    assert f.validate_create({"outcome": "live_birth", "baby": []}).errors == {"baby": ["must have at least 1 entries"]}
    assert f.validate_create({"outcome": "live_birth", "baby": [entry] * 3}).errors == {
        "baby": ["must have at most 2 entries"]}
    assert f.validate_create({"outcome": "stillbirth", "baby": [entry]}).errors == {
        "baby": ["is not asked when outcome is not 'live_birth'"]}
    assert f.validate_create({"outcome": "stillbirth"}).errors == {}
    assert f.validate_create({"outcome": "live_birth", "baby": [entry, "x"]}).errors == {
        "baby": {"1": {"_entry": ["must be an object of field values"]}}}


def test_repeat_in_a_change_is_whole_but_parent_rules_wait_for_their_fields():
    f = form(*OUTCOME)
    change = {"baby": [{"sex": "male", "status": "alive", "bf_1h": "yes"}]}
    assert f.validate_change(change).errors == {}   # mode and outcome unknown here
    assert f.validate_change({**change, "mode": "caesarean"}).errors == {
        "baby": {"0": {"bf_1h": ["is not asked when status is not 'alive' or mode is 'caesarean'"]}}}
    assert f.validate_change({"baby": [{"status": "alive"}]}).errors == {"baby": {"0": {"sex": ["is required"]}}}


def test_computed_fields_in_repeats():
    f = form({"name": "baby", "type": "repeat", "fields": [
        {"name": "recall", "type": "multi_choice",
         "choices": choices("breast_milk", "water", "formula", "ORS_drops_syrups")},
        {"name": "exclusive_bf", "type": "computed",
         "compute": {"function": "exclusive_bf", "inputs": {"recall": "recall"}}}]})
    data = {"baby": [{"recall": ["ORS_drops_syrups", "breast_milk"]}, {"recall": ["breast_milk", "water"]}, {}]}
    result = f.validate_create(data)
    assert result.errors == {}
    assert f.compute(result.data) == {"baby": [{"exclusive_bf": True}, {"exclusive_bf": False},
                                               {"exclusive_bf": None}]}
    assert f.validate_create({"baby": [{"exclusive_bf": True}]}).errors == {
        "baby": {"0": {"exclusive_bf": ["computed; it is derived, never sent"]}}}


# --------------------------------------------------------------------------- checks and warnings

BP = [{"name": "sys", "type": "integer"}, {"name": "dia", "type": "integer"}]
BP_CHECKS = [
    {"field": "dia", "assert": {"field": "dia", "lt": {"field": "sys"}},
     "when": {"all": [{"field": "sys", "ne": None}, {"field": "dia", "ne": None}]},
     "message": "must be lower than the systolic pressure"},
    {"field": "sys", "assert": {"field": "sys", "lt": 140}, "when": {"field": "sys", "ne": None},
     "message": "140 or more: high blood pressure", "warn": True},
]


def test_checks_give_errors_and_warnings():
    f = form(*BP, checks=BP_CHECKS)
    ok = f.validate_create({"sys": 120, "dia": 80})
    assert (ok.data, ok.errors, ok.warnings) == ({"sys": 120, "dia": 80}, {}, {})
    result = f.validate_create({"sys": 150, "dia": 150})
    assert result.errors == {"dia": ["must be lower than the systolic pressure"]}
    assert result.warnings == {"sys": ["140 or more: high blood pressure"]}
    assert f.validate_create({"dia": 80}).errors == {}       # `when` does not hold
    assert f.validate_record({"sys": 80, "dia": 90}).errors == {"dia": ["must be lower than the systolic pressure"]}


def test_change_runs_a_check_only_when_every_field_it_reads_is_present():
    f = form(*BP, checks=BP_CHECKS)
    assert f.validate_change({"dia": 150}).errors == {}
    assert f.validate_change({"dia": 150, "sys": 120}).errors == {"dia": ["must be lower than the systolic pressure"]}
    assert f.validate_change({"sys": 150}).warnings == {"sys": ["140 or more: high blood pressure"]}


def test_warn_fields_turn_their_own_range_problems_into_warnings():
    f = form({"name": "w", "type": "integer", "min": 500, "max": 6000, "warn": True},
             {"name": "phone", "type": "string", "pattern": r"0\d{9}", "max_length": 10, "warn": True},
             {"name": "d", "type": "date", "max": "today", "warn": True})
    result = f.validate_create({"w": 400, "phone": "12345678901", "d": "2030-01-01"}, today=TODAY)
    assert result.errors == {}
    assert result.warnings == {"w": ["must be at least 500"],
                               "phone": ["must be at most 10 characters long", "is not in the expected format"],
                               "d": ["cannot be in the future"]}
    assert f.validate_create({"w": "heavy"}).errors == {"w": ["must be a whole number"]}


def test_length_pattern_and_count_errors():
    f = form({"name": "name", "type": "string", "min_length": 2, "max_length": 5},
             {"name": "phone", "type": "string", "pattern": r"0\d{9}"},
             {"name": "m", "type": "multi_choice", "min_count": 1, "choices": choices("a", "b")})
    result = f.validate_create({"name": "A", "phone": "0123456789\n", "m": []})
    assert result.errors == {"name": ["must be at least 2 characters long"],
                             "phone": ["is not in the expected format"],
                             "m": ["must have at least 1 choices selected"]}


def test_required_means_a_value():
    f = form({"name": "s", "type": "string", "required": True},
             {"name": "m", "type": "multi_choice", "required": True, "choices": choices("a")})
    assert f.validate_create({"s": "", "m": []}).errors == {"s": ["is required"], "m": ["is required"]}
    assert f.validate_change({"s": None}).errors == {"s": ["is required"]}


# --------------------------------------------------------------------------- computed fields

@pytest.mark.parametrize("name, inputs, expected", [
    ("days_between", {"start": "2025-01-01", "end": "2025-03-01"}, 59),
    ("days_between", {"start": "2025-03-01", "end": "2025-01-01"}, -59),
    ("days_between", {"start": "2025-01-01", "end": None}, None),
    ("weeks_between", {"start": "2025-01-01", "end": "2025-01-14"}, 1),
    ("weeks_between", {"start": "2025-01-01", "end": "2025-01-15"}, 2),
    ("weeks_between", {"start": "2025-01-15", "end": "2025-01-01"}, -2),
    ("age_years", {"dob": "2007-03-02", "on": "2025-03-01"}, 17),
    ("age_years", {"dob": "2007-03-01", "on": "2025-03-01"}, 18),
    ("age_years", {"dob": "2004-02-29", "on": "2025-02-28"}, 20),
    ("age_years", {"dob": "2004-02-29", "on": "2025-03-01"}, 21),
    ("age_years", {"dob": "2000-01-01", "on": "2025-03-01T01:00:00+07:00"}, 25),
    ("exclusive_bf", {"recall": ["breast_milk"]}, True),
    ("exclusive_bf", {"recall": ["breast_milk", "ORS_drops_syrups"]}, True),
    ("exclusive_bf", {"recall": ["breast_milk", "semi_solid_food"]}, False),
    ("exclusive_bf", {"recall": ["water"]}, False),
    ("exclusive_bf", {"recall": []}, False),
    ("count_selected", {"values": ["a", "b"]}, 2),
    ("mdd_met", {"groups": ["breast_milk", "dairy", "eggs", "flesh_foods"]}, False),
    ("mdd_met", {"groups": ["breast_milk", "dairy", "eggs", "flesh_foods", "other_fruits_veg"]}, True),
    ("days_between", {"start": "garbage", "end": "2025-01-01"}, None),
])
def test_compute_functions(name, inputs, expected):
    assert computations.REGISTRY[name](**inputs) == expected


def test_compute_returns_every_computed_field():
    f = form({"name": "dob", "type": "date"}, {"name": "on", "type": "date"},
             {"name": "groups", "type": "multi_choice", "choices": choices(*sorted(computations.IYCF_GROUPS))},
             {"name": "age", "type": "computed",
              "compute": {"function": "age_years", "inputs": {"dob": "dob", "on": "on"}}},
             {"name": "n", "type": "computed",
              "compute": {"function": "count_selected", "inputs": {"values": "groups"}}},
             {"name": "mdd", "type": "computed", "compute": {"function": "mdd_met", "inputs": {"groups": "groups"}},
              "relevant": {"field": "age", "lt": 2}})
    assert f.computed_names == ["age", "n", "mdd"]
    assert f.field_names == ["dob", "on", "groups"]
    assert f.compute({"dob": "2024-01-01", "on": "2025-01-01", "groups": sorted(computations.IYCF_GROUPS)}) == {
        "age": 1, "n": 8, "mdd": True}
    assert f.compute({"dob": "2020-01-01", "on": "2025-01-01", "groups": []}) == {"age": 5, "n": 0, "mdd": None}
    assert f.compute({}) == {"age": None, "n": None, "mdd": None}


def test_computed_fields_can_be_bounded():
    f = form({"name": "lmp", "type": "date"}, {"name": "visit", "type": "date"},
             {"name": "ga", "type": "computed", "min": 4, "max": 44,
              "compute": {"function": "weeks_between", "inputs": {"start": "lmp", "end": "visit"}}})
    assert f.validate_create({"lmp": "2025-01-01", "visit": "2025-03-01"}).errors == {}
    assert f.validate_create({"lmp": "2025-01-01", "visit": "2025-01-10"}).errors == {"ga": ["must be at least 4"]}


# --------------------------------------------------------------------------- definitions

def bad(field=None, **top):
    definition = {"id": "bad_form", "version": 1, "title": "Bad", "fields": [
        {"name": "a", "type": "integer"}, {"name": "c", "type": "choice", "choices": YNU}]}
    if field is not None:
        definition["fields"].append(field)
    definition.update(top)
    return definition


@pytest.mark.parametrize("definition, field, words", [
    (bad({"name": "x", "type": "integer", "colour": "red"}), "x", "unknown key 'colour'"),
    (bad({"name": "x", "type": "number"}), "x", "unknown type 'number'"),
    (bad({"name": "a", "type": "integer"}), "a", "defined twice"),
    (bad({"name": "x", "type": "string", "choices": YNU}), "x", "'choices' does not apply to a string field"),
    (bad({"name": "x", "type": "choice"}), "x", "non-empty list of choices"),
    (bad({"name": "x", "type": "choice", "choices": choices("a", "a")}), "x", "listed twice"),
    (bad({"name": "x", "type": "integer", "relevant": {"field": "nope", "eq": 1}}), "x", "missing field 'nope'"),
    (bad({"name": "x", "type": "integer", "relevant": {"field": "c", "eq": "maybe"}}), "x",
     "'maybe' cannot be a value of 'c'"),
    (bad({"name": "x", "type": "integer", "relevant": {"field": "a", "like": 1}}), "x", "a condition is"),
    (bad({"name": "x", "type": "integer", "relevant": {"field": "a", "contains": 1}}), "x",
     "'contains' is for multi_choice"),
    (bad({"name": "x", "type": "integer", "max": {"field": "ghost"}}), "x", "missing field 'ghost'"),
    (bad({"name": "x", "type": "integer", "max": "today"}), "x", "max must be a number"),
    (bad({"name": "x", "type": "date", "max": "tomorrow"}), "x", "max must be a date"),
    (bad({"name": "x", "type": "date", "max": {"field": "a"}}), "x", "cannot be bounded by 'a'"),
    (bad({"name": "x", "type": "integer", "min": 5, "max": 1}), "x", "min is larger than max"),
    (bad({"name": "x", "type": "string", "pattern": "("}), "x", "not a valid regular expression"),
    (bad({"name": "x", "type": "computed", "compute": {"function": "magic", "inputs": {}}}), "x",
     "unknown compute function 'magic'"),
    (bad({"name": "x", "type": "computed", "compute": {"function": "days_between",
                                                       "inputs": {"start": "ghost", "end": "ghost"}}}), "x",
     "missing field 'ghost'"),
    (bad({"name": "x", "type": "computed", "compute": {"function": "days_between",
                                                       "inputs": {"start": "a", "end": "a"}}}), "x",
     "must be a date or datetime field"),
    (bad({"name": "x", "type": "computed", "required": True,
          "compute": {"function": "count_selected", "inputs": {"values": "a"}}}), "x", "cannot be required"),
    (bad(fields=[
        {"name": "x", "type": "multi_choice", "choices": choices("breast_milk", "juice")},
        {"name": "e", "type": "computed", "compute": {"function": "exclusive_bf", "inputs": {"recall": "x"}}}]),
     "e", "does not know: juice"),
    (bad({"name": "r", "type": "repeat",
          "fields": [{"name": "s", "type": "boolean", "relevant": {"field": "zz", "eq": True}}]}),
     "r.s", "missing field 'zz'"),
    (bad({"name": "r", "type": "repeat",
          "fields": [{"name": "s", "type": "repeat", "fields": [{"name": "t", "type": "boolean"}]}]}),
     "r.s", "cannot hold another repeat"),
    (bad({"name": "Bad Name", "type": "integer"}), "fields[2]", "must be lowercase"),
])
def test_definition_errors_name_the_file_and_the_field(tmp_path, definition, field, words):
    path = tmp_path / "forms" / "bad_form" / "v1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(definition))
    with pytest.raises(FormDefinitionError) as caught:
        load_definition(path)
    message = str(caught.value)
    assert message.startswith(str(path) + ":")
    assert f"field '{field}'" in message or (field.startswith("fields[") and f" {field}:" in message)
    assert words in message


@pytest.mark.parametrize("definition, words", [
    (bad(checks=[{"field": "a", "assert": {"field": "ghost", "eq": 1}, "message": "m"}]), "check 0 (field 'a')"),
    (bad(checks=[{"field": "ghost", "assert": {"field": "a", "eq": 1}, "message": "m"}]), "check 0"),
    (bad(checks=[{"field": "a", "assert": {"field": "a", "eq": 1}}]), "lacks 'message'"),
    (bad(version=0), "version must be"),
    (bad(colour="red"), "unknown key 'colour'"),
    (bad(fields=[]), "non-empty list"),
    (bad(restricted_to="supervisor"), "restricted_to"),
])
def test_form_level_definition_errors(definition, words):
    with pytest.raises(FormDefinitionError, match="^src.json: .*" + words.replace("(", r"\(").replace(")", r"\)")):
        load_definition(definition, source="src.json")


def test_unreadable_files_are_definition_errors(tmp_path):
    broken = tmp_path / "v1.json"
    broken.write_text("{not json")
    with pytest.raises(FormDefinitionError, match="v1.json: is not valid JSON"):
        load_definition(broken)
    with pytest.raises(FormDefinitionError, match="cannot be read"):
        load_definition(tmp_path / "missing.json")


def test_computed_cycles_are_refused(monkeypatch):
    # No registered function reads a number yet; add one to build a cycle.
    plus = computations.Function("plus", lambda n: n + 1, {"n": frozenset({"integer"})}, "integer")
    monkeypatch.setitem(computations.REGISTRY, "count_selected", plus)
    with pytest.raises(FormDefinitionError, match="field '[xy]': computed fields depend on each other in a cycle"):
        form({"name": "x", "type": "computed", "compute": {"function": "count_selected", "inputs": {"n": "y"}}},
             {"name": "y", "type": "computed", "compute": {"function": "count_selected", "inputs": {"n": "x"}}},
             form_id="cycle")


def test_sha256_ignores_key_order_and_compile_is_cached():
    d1 = {"id": "s", "version": 1, "title": "S", "fields": [{"name": "a", "type": "integer"}]}
    d2 = json.loads('{"fields": [{"type": "integer", "name": "a"}], "title": "S", "version": 1, "id": "s"}')
    assert definition_sha256(d1) == definition_sha256(d2)
    assert compile_form(d1) is compile_form(d2)
    assert compile_form(d1).sha256 == definition_sha256(d1)


def test_registry_keeps_versions_and_refuses_changed_content():
    v1 = {"id": "r", "version": 1, "title": "R", "fields": [{"name": "a", "type": "integer"}]}
    v2 = {**v1, "version": 2}
    registry = FormRegistry([v2, v1])
    assert registry.get("r", 1).version == 1
    assert registry.latest("r").version == 2
    assert [f.version for f in registry.all()] == [1, 2]
    assert registry.get("r", 3) is None and registry.latest("nope") is None
    assert registry.add(json.loads(json.dumps(v1))) is registry.get("r", 1)
    with pytest.raises(FormDefinitionError, match="version 1 is already known"):
        registry.add({**v1, "title": "Changed"})


def test_every_bundled_form_compiles():
    source = Path(__file__).resolve().parents[1] / "schemas" / "forms"
    on_disk = sorted(source.glob("*/v*.json"))
    definitions = bundled_definitions()
    assert len(definitions) == len(on_disk) > 0
    for definition in definitions:
        f = compile_form(definition)
        assert f.field_names and f.sha256 == definition_sha256(definition)
        # An empty record reports its required fields, and nothing crashes.
        result = f.validate_create({}, today=TODAY)
        assert all(m == ["is required"] for m in result.errors.values())


def test_describe_errors_flattens_repeats():
    assert describe_errors({"a": ["is required"], "baby": {"0": {"sex": ["x"]}, "_": ["y"]}}) == [
        "a: is required", "baby[0].sex: x", "baby: y"]


# --------------------------------------------------------------------------- properties

BOUNDED = form({"name": "n", "type": "integer", "min": -5, "max": 120}, form_id="bounded")


@given(st.integers(-10**6, 10**6))
def test_integer_accepted_exactly_inside_its_bounds(n):
    result = BOUNDED.validate_create({"n": n})
    assert (result.errors == {}) == (-5 <= n <= 120)


ALL_TYPES = form(
    {"name": "s", "type": "string", "max_length": 20},
    {"name": "i", "type": "integer", "min": 0, "max": 100},
    {"name": "d", "type": "decimal", "min": 0, "max": 1000},
    {"name": "b", "type": "boolean"},
    {"name": "day", "type": "date"},
    {"name": "t", "type": "time"},
    {"name": "ts", "type": "datetime"},
    {"name": "c", "type": "choice", "choices": YNU},
    {"name": "m", "type": "multi_choice", "choices": choices("a", "b", "c", "d")},
    {"name": "r", "type": "ref", "ref": "person"},
    {"name": "g", "type": "geopoint"},
    {"name": "extra", "type": "integer", "relevant": {"field": "c", "eq": "yes"}},
    {"name": "rep", "type": "repeat", "fields": [{"name": "x", "type": "integer"},
                                                 {"name": "y", "type": "string", "required": True}]},
    form_id="all_types")

RAW_VALUES = {
    "s": st.text(max_size=20),
    "i": st.one_of(st.integers(0, 100), st.integers(0, 100).map(float)),
    "d": st.one_of(st.integers(0, 1000), st.floats(0, 1000, allow_nan=False)),
    "b": st.booleans(),
    "day": st.dates().map(dt.date.isoformat),
    "t": st.times().map(lambda t: t.strftime(t.second and "%H:%M:%S" or "%H:%M")),
    "ts": st.datetimes(timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=7))]))
        .map(lambda v: v.isoformat().replace("+00:00", "Z")),
    "c": st.sampled_from(["yes", "no", "unknown"]),
    "m": st.lists(st.sampled_from("abcd"), unique=True),
    "r": st.uuids().map(lambda u: str(u).upper()),
    "g": st.fixed_dictionaries({"lat": st.floats(-90, 90), "lon": st.integers(-180, 180)}),
    "extra": st.integers(),
    "rep": st.lists(st.fixed_dictionaries({"y": st.text(min_size=1)}, optional={"x": st.integers()}), max_size=3),
}
records = st.fixed_dictionaries({}, optional=RAW_VALUES)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(records)
def test_normalising_is_idempotent(record):
    first = ALL_TYPES.validate_create(record)
    assume(not first.errors)
    second = ALL_TYPES.validate_create(json.loads(json.dumps(first.data)))
    assert second.errors == {}
    assert second.data == first.data


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(records, st.data())
def test_any_part_of_a_valid_record_is_a_valid_change(record, data):
    assume(not ALL_TYPES.validate_create(record).errors)
    keys = data.draw(st.sets(st.sampled_from(sorted(record)))) if record else set()
    change = {k: record[k] for k in keys}
    assert ALL_TYPES.validate_change(change).errors == {}


@given(st.text())
def test_text_is_stored_nfc(s):
    data = form({"name": "s", "type": "text"}, form_id="nfc").validate_create({"s": s}).data
    assert data["s"] == unicodedata.normalize("NFC", s)


def test_conditions_can_read_the_parts_of_a_geopoint():
    f = form({"name": "gps", "type": "geopoint"}, checks=[
        {"field": "gps", "warn": True, "message": "is outside the province",
         "when": {"field": "gps", "ne": None},
         "assert": {"all": [{"field": "gps.lat", "ge": 20.6}, {"field": "gps.lat", "le": 21.7},
                            {"field": "gps.lon", "ge": 106.4}, {"field": "gps.lon", "le": 108.1}]}}])
    assert f.validate_create({"gps": {"lat": 21.0, "lon": 107.0}}).warnings == {}
    assert f.validate_create({"gps": {"lat": 10.8, "lon": 106.7}}).warnings == {"gps": ["is outside the province"]}
    assert f.validate_create({}).warnings == {}
    with pytest.raises(FormDefinitionError, match="only a geopoint has parts"):
        form({"name": "n", "type": "integer", "relevant": {"field": "gps.alt", "gt": 1}},
             {"name": "gps", "type": "geopoint"}, form_id="gps_bad")


def test_a_check_is_skipped_when_its_field_already_has_an_error():
    f = form({"name": "d", "type": "date", "required": True}, form_id="skip",
             checks=[{"field": "d", "assert": {"field": "d", "ge": "2020-01-01"}, "message": "too early"}])
    assert f.validate_create({}).errors == {"d": ["is required"]}
    assert f.validate_create({"d": "2019-01-01"}).errors == {"d": ["too early"]}


def test_condition_literals_are_compared_in_canonical_form():
    f = form({"name": "t", "type": "time"}, {"name": "r", "type": "ref", "ref": "person"},
             {"name": "m", "type": "multi_choice", "choices": choices("a", "b")},
             {"name": "q", "type": "boolean", "relevant": {"all": [
                 {"field": "t", "eq": "08:00"}, {"field": "r", "eq": UUID.upper()},
                 {"field": "m", "eq": ["b", "a"]}]}}, form_id="canon")
    assert f.validate_create({"t": "08:00:00", "r": UUID, "m": ["a", "b"], "q": True}).errors == {}
    assert f.validate_create({"t": "08:01", "r": UUID, "m": ["a", "b"], "q": True}).errors


BUNDLED = bundled_definitions()
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["today", "today-3y", "2025-02-30", "08:00", UUID, "yes", "none", "breast_milk"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["field", "eq", "in", "all", "not", "offset", "lat", "lon", "value", "sex"]),
        inner, max_size=3),
    max_leaves=8)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, path + (index,))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_broken_definition_is_only_ever_a_definition_error(data):
    definition = json.loads(json.dumps(data.draw(st.sampled_from(BUNDLED))))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(definition))[1:]))
        parent = definition
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JUNK)
    try:
        load_definition(definition, source="mutated.json")
    except FormDefinitionError as e:
        assert str(e).startswith("mutated.json:")


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_input_gets_an_answer_never_an_exception(data):
    f = compile_form(data.draw(st.sampled_from(BUNDLED)))
    names = st.sampled_from(f.field_names + f.computed_names + ["unknown"])
    record = data.draw(st.dictionaries(names, JUNK, max_size=8))
    for validate in (f.validate_create, f.validate_change, f.validate_record):
        result = validate(record, today=TODAY)
        assert set(result.data) <= set(f.field_names)
        f.compute(result.data)


def test_a_bundled_file_must_sit_at_its_id_and_version(tmp_path, monkeypatch):
    import schemas.forms.load as forms_module
    folder = tmp_path / "forms" / "visit"
    folder.mkdir(parents=True)
    (folder / "v2.json").write_text(json.dumps(
        {"id": "visit", "version": 1, "title": "V", "fields": [{"name": "a", "type": "integer"}]}))
    monkeypatch.setattr(forms_module.resources, "files", lambda package: tmp_path)
    with pytest.raises(FormDefinitionError, match=r"^schemas/forms/visit/v2.json: holds id 'visit' version 1"):
        bundled_definitions()
    (folder / "v2.json").rename(folder / "v1.json")
    assert [d["id"] for d in bundled_definitions()] == ["visit"]

"""Form validation's fast path gives exactly the marshmallow schema's answer.

`CompiledForm` loads a record's fields with the FormFields' own parsers,
skipping marshmallow's per-field machinery, and falls back to the schema at
the first doubt. Whichever runs, data (values, types and key order), errors
and warnings must be the same: these properties run every bundled form's
valid examples, and mutations of them, both ways.
"""
from __future__ import annotations

import copy
import math
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.forms as forms
from schemas.forms import _fast_load, compile_form
from tests.test_shipped_forms import FORM_IDS, TODAY, VALID, form

EXAMPLES = sorted(VALID)


def both_ways(compiled, data, method):
    """(fast answer, schema answer) of one validation, as reprs: a repr tells
    1 from 1.0 and True, and shows key order."""
    answers = []
    for fast in (True, False):
        forms.FAST = fast
        try:
            answers.append(repr(getattr(compiled, method)(data, today=TODAY)))
        finally:
            forms.FAST = True
    return answers


# ---------------------------------------------------------------- mutations

# Values of the wrong type (or shape) for most fields.
ODD = [None, "", [], {}, True, False, 0, -1, 1.5, 10 ** 20, float("nan"), "x", "  ",
       "2025-02-30", "2025-13-01", "25:00", "12:60", ["x"], [None], [1], {"lat": 1},
       "0193A0C4-2222-7000-8000-000000000002", "not-a-uuid"]


def variants(spec, value):
    """Values a field's type makes interesting near a valid `value`."""
    kind = spec.type
    out = []
    if kind == "integer":
        out += [float(value), value + 0.5, -value, value * 1000, str(value), True,
                2 ** 63, -(2 ** 63) + 1, 2 ** 63 - 1] if type(value) is int else [3, 3.0]
    elif kind == "decimal":
        if type(value) in (int, float) and math.isfinite(value):
            out += [float(value), int(value), value + 0.001, -value, value * 1000,
                    float(f"{value:.2f}"), float("inf"), str(value)]
        out += [52.50, 52.5, 52]
    elif kind in ("string", "text"):
        base = value if isinstance(value, str) else "Lý A Sáng"
        out += [unicodedata.normalize("NFD", base), base + " ", base * 40, "",
                unicodedata.normalize("NFD", "Thị Mỹ")]
    elif kind == "time":
        out += ["09:15", "09:15:00", "9:15", "23:59:59", "24:00", 915]
    elif kind == "date":
        out += ["2025-05-20", "2025-06-02", "2025-06-01", "1900-01-01", "2030-01-01",
                "2025-02-29", "20250520", "2025-05-20T00:00:00+07:00"]
    elif kind == "datetime":
        out += ["2025-03-01T08:30:00Z", "2025-03-01T08:30+07:00", "2025-03-01T08:30:00.5-01:00"]
    elif kind == "ref":
        if isinstance(value, str):
            out += [value.upper(), value.lower(), value[:-1]]
    elif kind in ("choice", "multi_choice"):
        choices = list(spec.choice_order)
        if kind == "choice":
            out += choices + [c.upper() for c in choices[:2]]
        else:
            out += [list(reversed(choices[:3])), choices[:1] * 2, choices[-2:], [],
                    ["bogus"] + choices[:1], choices]
            if isinstance(value, list):
                out += [list(reversed(value)), value + value[:1]]
    elif kind == "geopoint":
        out += [{"lat": 21.5, "lon": 104.1}, {"lat": 21, "lon": 104, "accuracy_m": 5},
                {"lat": 91, "lon": 0}, {"lat": 1, "lon": 2, "alt": 3}, {"lon": 2}]
    elif kind == "boolean":
        out += [True, False, 1, "true"]
    return out


@st.composite
def records(draw):
    """(form id, a valid example, perhaps mutated): fields set to variants or
    odd values, dropped, or unknown keys added; repeat entries likewise."""
    example = draw(st.sampled_from(EXAMPLES))
    form_id = example.split("/")[0]
    compiled = form(form_id)
    data = copy.deepcopy(VALID[example])
    top = compiled._top
    inputs = [s for s in top.specs if s.type != "computed"]
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "set", "set", "drop", "extra", "entry"]))
        if action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif action == "extra":
            data[draw(st.sampled_from(["nonsense", *(compiled.computed_names or ["x"])]))] = 1
        elif action == "entry" and top.repeats:
            rep = draw(st.sampled_from(top.repeats))
            entries = data.get(rep.name)
            if not isinstance(entries, list) or not entries:
                continue
            index = draw(st.integers(0, len(entries) - 1))
            entry = entries[index]
            if not isinstance(entry, dict) or draw(st.integers(0, 5)) == 0:
                entries[index] = draw(st.sampled_from([None, "x", [], {}]))
                continue
            spec = draw(st.sampled_from(rep.group.specs))
            if spec.type == "computed":
                entry[spec.name] = 1
                continue
            pool = variants(spec, entry.get(spec.name)) + ODD
            entry[spec.name] = draw(st.sampled_from(pool))
        else:
            spec = draw(st.sampled_from(inputs))
            pool = variants(spec, data.get(spec.name)) + ODD
            data[spec.name] = draw(st.sampled_from(pool))
    if draw(st.booleans()):   # the sender's key order must not matter
        data = dict(reversed(list(data.items())))
    return form_id, data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.sampled_from(["validate_create", "validate_change", "validate_record"]))
def test_fast_path_gives_the_schemas_answer(record, method):
    form_id, data = record
    fast, slow = both_ways(form(form_id), data, method)
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(records())
def test_fast_load_never_accepts_what_the_schema_refuses(record):
    """Where the fast load answers, the schema finds no field error and loads
    the same dict (values, types, key order)."""
    form_id, data = record
    top = form(form_id)._top
    fast = _fast_load(top.fast, data)
    if fast is None:
        return
    loaded = top.schema.load(data, partial=True)   # raises on any field error
    assert repr(fast) == repr(loaded)


@pytest.mark.parametrize("example", EXAMPLES)
def test_valid_examples_take_the_fast_path(example):
    form_id = example.split("/")[0]
    compiled = form(form_id)
    data = VALID[example]
    assert _fast_load(compiled._top.fast, data) is not None
    for method in ("validate_create", "validate_change", "validate_record"):
        fast, slow = both_ways(compiled, data, method)
        assert fast == slow


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_canonical_forms_are_the_schemas(form_id):
    """Values that are valid but not canonical (1.0 for an integer, "HH:MM",
    upper-case UUIDs, NFD text, multi_choice out of order) normalise the
    same on both paths, field by field."""
    compiled = form(form_id)
    base = next(VALID[e] for e in EXAMPLES if e.split("/")[0] == form_id)
    for spec in compiled._top.specs:
        if spec.type == "computed":
            continue
        for value in variants(spec, base.get(spec.name)):
            data = {**base, spec.name: value}
            for method in ("validate_create", "validate_change"):
                fast, slow = both_ways(compiled, data, method)
                assert fast == slow, (spec.name, value)


def test_the_examples_normalise_as_documented():
    """A few canonical forms, through the fast path."""
    compiled = form("pnc_visit")
    data = {**VALID["pnc_visit"], "visit_time": "09:15", "pregnancy_id": VALID["pnc_visit"][
        "pregnancy_id"].upper(), "mother_bp_sys": 115.0,
        "mother_danger_signs": ["none"]}
    clean = _fast_load(compiled._top.fast, data)
    assert clean["visit_time"] == "09:15:00"
    assert clean["pregnancy_id"] == VALID["pnc_visit"]["pregnancy_id"].lower()
    assert type(clean["mother_bp_sys"]) is int
    assert list(clean) == [k for k in compiled.schema.load_fields if k in data]
    # A bad value is no fast answer: the schema words the error.
    assert _fast_load(compiled._top.fast, {**data, "mother_bp_sys": 999}) is None
    result = compiled.validate_create({**data, "mother_bp_sys": 999}, today=TODAY)
    assert result.errors == {"mother_bp_sys": ["must be at most 250"]}


def test_entries_of_a_change_wait_for_the_parent_fields_they_read():
    """A repeat entry is checked whole, but in a change its rules that read
    the parent record wait until those fields are present, on both paths."""
    compiled = compile_form({
        "id": "t_fast", "version": 1, "title": "t", "fields": [
            {"name": "mode", "type": "choice", "choices": [{"value": "vaginal", "label": "V"},
                                                            {"value": "caesarean", "label": "C"}]},
            {"name": "baby", "type": "repeat", "fields": [
                {"name": "bf_1h", "type": "boolean", "required": True,
                 "relevant": {"field": "mode", "eq": "vaginal"}}]},
        ]})
    change = {"baby": [{"bf_1h": True}]}
    assert compiled.validate_change(change, today=TODAY).errors == {}
    assert compiled.validate_change({**change, "mode": "caesarean"}, today=TODAY).errors == {
        "baby": {"0": {"bf_1h": ["is not asked when mode is not 'vaginal'"]}}}
    for data in (change, {**change, "mode": "caesarean"}, {"mode": "vaginal", "baby": [{}]}):
        for method in ("validate_create", "validate_change", "validate_record"):
            fast, slow = both_ways(compiled, data, method)
            assert fast == slow, (data, method)

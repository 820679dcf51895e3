"""Form validation's fast path gives exactly the marshmallow schema's answer.

`CompiledForm` loads a record's fields with specialised checks (the
FormFields' own parsers when in doubt), skipping marshmallow's per-field
machinery, and checks a whole clean record's rules with compiled closures;
it falls back to the schema and the general rule loop at the first doubt.
Whichever runs, data (values, types and key order), errors and warnings must
be the same: these properties run every bundled form's valid examples, and
mutations of them, both ways, and hold the compiled conditions and computed
fields (which both paths share) to their JSON.
"""
from __future__ import annotations

import copy
import datetime as dt
import math
import operator
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.forms as forms
from schemas.forms import compile_form
from tests.test_shipped_forms import FORM_IDS, TODAY, VALID, form

EXAMPLES = sorted(VALID)


def both_ways(compiled, data, method, today=TODAY):
    """(fast answer, schema answer) of one validation, as reprs: a repr tells
    1 from 1.0 and True, and shows key order.

    A result may carry the computed fields its validation derived (the fast
    path does, for storage to reuse): they must be what `compute` answers.
    """
    answers = []
    for fast in (True, False):
        forms.FAST = fast
        try:
            result = getattr(compiled, method)(data, today=today)
            if result.computed is not None:
                assert not result.errors
                assert repr(result.computed) == repr(compiled.compute(result.data))
            answers.append(repr(result._replace(computed=None)))
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
        action = draw(st.sampled_from(["set", "set", "set", "drop", "null", "extra", "entry"]))
        if action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif action == "null":
            data[draw(st.sampled_from(inputs)).name] = None
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
    order = draw(st.sampled_from(["schema", "reversed", "shuffled"]))
    if order == "reversed":   # the sender's key order must not matter
        data = dict(reversed(list(data.items())))
    elif order == "shuffled":
        data = dict(draw(st.permutations(list(data.items()))))
    return form_id, data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.sampled_from(["validate_create", "validate_change", "validate_record"]))
def test_fast_path_gives_the_schemas_answer(record, method):
    form_id, data = record
    fast, slow = both_ways(form(form_id), data, method)
    assert fast == slow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.dates(dt.date(2023, 1, 1), dt.date(2028, 12, 31)))
def test_fast_path_gives_the_schemas_answer_on_any_day(record, today):
    """Bounds on "today" are computed once per day: a new day, or an old one
    again, gives the answer of the general path."""
    form_id, data = record
    for method in ("validate_create", "validate_record"):
        fast, slow = both_ways(form(form_id), data, method, today)
        assert fast == slow


@settings(max_examples=300, deadline=None)
@given(records())
def test_fast_load_never_accepts_what_the_schema_refuses(record):
    """Where the fast load answers, the schema finds no field error and loads
    the same dict (values, types, key order)."""
    form_id, data = record
    top = form(form_id)._top
    fast = top.load(data)
    if fast is None:
        return
    loaded = top.schema.load(data, partial=True)   # raises on any field error
    assert repr(fast) == repr(loaded)


@pytest.mark.parametrize("example", EXAMPLES)
def test_valid_examples_take_the_fast_path(example):
    form_id = example.split("/")[0]
    compiled = form(form_id)
    data = VALID[example]
    assert compiled._top.load(data) is not None
    # A whole valid record is answered without the general rule loop.
    assert compiled._complete(data, TODAY) == compiled.validate_create(data, today=TODAY)
    for method in ("validate_create", "validate_change", "validate_record"):
        fast, slow = both_ways(compiled, data, method)
        assert fast == slow


def test_the_switch_on_schemas_forms_turns_the_fast_path_off():
    """`schemas.forms.FAST` (the package entry) is the switch the validation
    reads: off, a valid record is answered by the general path, which does
    not hand back the computed fields the fast path derives."""
    compiled = form("anc_visit")
    data = next(VALID[e] for e in EXAMPLES if e.startswith("anc_visit/"))
    assert compiled.validate_create(data, today=TODAY).computed is not None
    forms.FAST = False
    try:
        assert forms.evaluate.FAST is False
        result = compiled.validate_create(data, today=TODAY)
        assert result.ok and result.computed is None
    finally:
        forms.FAST = True
    assert forms.FAST is True and forms.evaluate.FAST is True


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
    clean = compiled._top.load(data)
    assert clean["visit_time"] == "09:15:00"
    assert clean["pregnancy_id"] == VALID["pnc_visit"]["pregnancy_id"].lower()
    assert type(clean["mother_bp_sys"]) is int
    assert list(clean) == [k for k in compiled.schema.load_fields if k in data]
    # A bad value is no fast answer: the schema words the error.
    assert compiled._top.load({**data, "mother_bp_sys": 999}) is None
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


# ---------------------------------------------------------------- conditions

# Both paths share the compiled conditions and computed fields, so these hold
# them to an independent reading of docs/forms.md.

def reference(c, vals, parent, group):
    """A condition's truth, read straight from its JSON."""
    if "all" in c:
        return all(reference(p, vals, parent, group) for p in c["all"])
    if "any" in c:
        return any(reference(p, vals, parent, group) for p in c["any"])
    if "not" in c:
        return not reference(c["not"], vals, parent, group)
    op = next(k for k in c if k != "field")

    def read(name):
        base, _, part = name.partition(".")
        source = vals if base in group.by_name else parent
        value = source.get(base)
        if part:
            return value.get(part) if type(value) is dict else None
        return value

    a, b = read(c["field"]), c[op]
    if isinstance(b, dict):
        b = read(b["field"])
    elif "." not in c["field"]:
        spec = group.resolve(c["field"])[1]
        kind = spec.result_type if spec.type == "computed" else spec.type
        parse = forms.values._PARSERS.get(kind) if kind not in ("string", "text") else None
        if kind == "multi_choice":
            parse = None    # a "contains" literal is one choice, as sent
        canon = (lambda v: v) if parse is None else (lambda v: v if v is None else parse(spec, v))
        b = tuple(canon(v) for v in b) if op == "in" else canon(b)
    elif op == "in":
        b = tuple(b)
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if op == "in":
        return isinstance(b, (list, tuple)) and a in b
    if op == "contains":
        return isinstance(a, list) and b in a
    if a is None or b is None:
        return False
    try:
        return {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[op](a, b)
    except TypeError:
        return False


def groups_of(compiled):
    """(group, its definition's fields, checks) of a form and of its repeats."""
    top = compiled._top
    out = [(top, compiled.definition["fields"], compiled.definition.get("checks", []))]
    for rep in top.repeats:
        out.append((rep.group, rep.definition["fields"], []))
    return out


def value_pool(spec, value):
    pool = [None, 0, 1, 183, 1826, 2000, -3, 2.5, True, False, "x", [], ["x"]]
    if spec.type in ("choice", "multi_choice"):
        choices = list(spec.choice_order)
        pool += choices + [choices[:2], choices[-1:], choices]
    return pool + variants(spec, value)


@st.composite
def condition_cases(draw):
    """(group, definition fields, checks, vals, parent) with values of every
    kind, typed or not, for the fields conditions read."""
    form_id = draw(st.sampled_from(FORM_IDS))
    compiled = form(form_id)
    group, fields, checks = draw(st.sampled_from(groups_of(compiled)))
    example = next(VALID[e] for e in EXAMPLES if e.split("/")[0] == form_id)

    def values(g, base):
        out = {}
        for spec in g.specs:
            if spec.type == "repeat" or draw(st.integers(0, 5)) == 0:
                continue     # absent
            out[spec.name] = draw(st.sampled_from(value_pool(spec, base.get(spec.name))))
        return out

    if group is compiled._top:
        return group, fields, checks, values(group, example), None
    return group, fields, checks, values(group, {}), values(compiled._top, example)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(condition_cases())
def test_compiled_conditions_read_as_written(case):
    """Skip logic and checks, however compiled (an "any" of "contains" as one
    lookup, two fields compared in one closure), answer as their JSON says,
    on typed values and on stray ones."""
    group, fields, checks, vals, parent = case
    for field, spec in zip(fields, group.specs):
        if "relevant" in field:
            expected = reference(field["relevant"], vals, parent, group)
            assert bool(spec.relevant(vals, parent)) == expected, field["relevant"]
    for definition, check in zip(checks, group.checks):
        assert bool(check.test(vals, parent)) == reference(definition["assert"], vals, parent, group)
        if "when" in definition:
            assert bool(check.when(vals, parent)) == reference(definition["when"], vals, parent, group)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(condition_cases())
def test_computed_fields_are_the_functions_answers(case):
    """A computed value is its function's answer for its inputs (null when
    one is null or the function cannot read it), null when not relevant."""
    group, fields, checks, vals, parent = case
    derived = dict(vals)
    forms.evaluate._derive(group, derived, parent)
    expected = dict(vals)
    for spec in group.computed:
        if spec.relevant is not None and not spec.relevant(expected, parent):
            expected[spec.name] = None
            continue
        args = {param: (expected if level == 0 else parent).get(name)
                for param, level, name in spec.inputs}
        expected[spec.name] = spec.function(**args)
    assert repr(derived) == repr(expected)


# ---------------------------------------------------------------- every feature

CHOICES = [{"value": v, "label": v} for v in ("a", "b", "c")]
KITCHEN = {
    "id": "t_kitchen", "version": 1, "title": "Every feature the fast path compiles",
    "fields": [
        {"name": "mode", "type": "choice", "required": True, "choices": CHOICES},
        {"name": "note", "type": "text", "required": True, "min_length": 0, "max_length": 5,
         "relevant": {"field": "mode", "eq": "a"}},
        {"name": "code", "type": "string", "pattern": "[A-Z]{2}\\d"},
        {"name": "tags", "type": "multi_choice", "choices": CHOICES, "required": True,
         "max_count": 2, "relevant": {"field": "mode", "ne": "c"}},
        {"name": "start", "type": "date", "max": "today"},
        {"name": "end", "type": "date", "min": {"field": "start", "offset": "+2w"},
         "max": {"field": "start", "offset": "+1m"}},
        {"name": "stamp", "type": "datetime", "min": "today-1y", "max": "today+3d"},
        {"name": "at", "type": "time", "min": "08:00", "max": "17:30"},
        {"name": "seen", "type": "datetime", "min": {"field": "start"}, "max": "today"},
        {"name": "days", "type": "computed",
         "compute": {"function": "days_between", "inputs": {"start": "start", "end": "end"}},
         "min": 0, "max": 40},
        {"name": "low", "type": "integer", "min": -5, "max": 5},
        {"name": "high", "type": "decimal", "min": {"field": "low", "offset": 1.5}},
        {"name": "soft", "type": "decimal", "min": 1, "max": 2, "warn": True},
        {"name": "soft_day", "type": "date", "max": "today-1d", "warn": True},
        {"name": "big", "type": "integer"},
        {"name": "flag", "type": "boolean", "relevant": {"field": "days", "ge": 20}},
        {"name": "gps", "type": "geopoint"},
        {"name": "north", "type": "boolean", "required": True,
         "relevant": {"field": "gps.lat", "gt": 10}},
        {"name": "who", "type": "ref", "ref": "person"},
        {"name": "kids", "type": "repeat", "min_count": 1, "max_count": 2, "fields": [
            {"name": "sex", "type": "choice", "required": True, "choices": CHOICES},
            {"name": "born", "type": "date", "min": {"field": "start"}, "max": "today"},
            {"name": "age", "type": "computed",
             "compute": {"function": "days_between", "inputs": {"start": "born", "end": "end"}}},
            {"name": "weight", "type": "decimal", "min": 0.5, "max": 9, "warn": True,
             "relevant": {"field": "mode", "in": ["a", "b"]}},
        ]},
    ],
    "checks": [
        {"field": "low", "assert": {"field": "low", "lt": {"field": "big"}}, "message": "low < big"},
        {"field": "tags", "assert": {"not": {"any": [{"field": "tags", "contains": "a"},
                                                     {"field": "tags", "contains": "b"}]}},
         "when": {"field": "mode", "eq": "b"}, "message": "no a or b", "warn": True},
        {"field": "code", "assert": {"all": [{"field": "low", "ge": 0}, {"field": "high", "le": 9},
                                             {"field": "mode", "in": ["a", "c"]}]},
         "when": {"field": "code", "ne": None}, "message": "coded", "warn": True},
    ],
}
KITCHEN_VALID = {
    "mode": "a", "note": "hi", "code": "AB1", "tags": ["b", "a"], "start": "2025-05-01",
    "end": "2025-05-25", "stamp": "2025-05-31T08:30:00+07:00", "at": "09:15", "seen": "2025-05-01T23:00:00-05:00", "low": 2,
    "high": 4.5, "soft": 1.5, "soft_day": "2025-05-30", "big": 10, "flag": True,
    "gps": {"lat": 21.5, "lon": 104.1}, "north": True, "who": "0193A0C4-2222-7000-8000-000000000002",
    "kids": [{"sex": "a", "born": "2025-05-02", "weight": 3.2}],
}
KITCHEN_POOL = {
    "mode": ["a", "b", "c", "d", None], "note": ["", "hi", "too long", 5, None],
    "code": ["AB1", "ab1", "", None], "tags": [["a"], ["c", "a"], ["a", "a"], [], ["a", "b", "c"], None],
    "start": ["2025-05-01", "2025-06-02", "2025-02-30", None],
    "end": ["2025-05-25", "2025-05-20", "2025-05-10", "2025-06-05", "2025-06-01", None],
    "stamp": ["2025-05-31T08:30:00+07:00", "2024-01-01T00:00:00Z", "2025-06-05T00:00Z", "x"],
    "at": ["09:15", "07:59", "17:30:00", "17:31", "25:00"],
    "seen": ["2025-05-01T23:00:00-05:00", "2025-04-30T23:59Z", "2025-06-03T00:00:00+07:00", None], "low": [2, -6, 0, 5.0, True, None],
    "high": [4.5, 1.0, 2, 3.5, float("nan"), None], "soft": [1.5, 0.5, 3, None],
    "soft_day": ["2025-05-30", "2025-06-01", None], "big": [10, 1, 2 ** 63, 1.0, None],
    "flag": [True, False, 1, None], "gps": [{"lat": 21.5, "lon": 104.1}, {"lat": 5, "lon": 1},
                                            {"lat": 95, "lon": 1}, None],
    "north": [True, False, None], "who": ["0193a0c4-2222-7000-8000-000000000002", "x", None],
    "kids": [[{"sex": "a", "born": "2025-05-02", "weight": 3.2}],
             [{"sex": "b"}, {"sex": "c", "born": "2025-04-01", "weight": 12}],
             [{"sex": "d"}], [], [{"sex": "a", "age": 1}], None],
    "days": [3], "other": [1],
}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(KITCHEN_POOL)), st.integers(0, 5), max_size=8),
       st.sampled_from(["validate_create", "validate_change", "validate_record"]),
       st.sampled_from(["schema", "reversed"]))
def test_every_feature_gives_the_schemas_answer(changes, method, order):
    """A form using every feature the fast path compiles (warn-only fields,
    bounds on other fields and on today, computed bounds, geopoint parts,
    required text and lists, repeats reading the parent): valid records and
    mutations of them answer the same on both paths."""
    compiled = compile_form(KITCHEN)
    data = copy.deepcopy(KITCHEN_VALID)
    for name, index in changes.items():
        pool = KITCHEN_POOL[name]
        data[name] = copy.deepcopy(pool[index % len(pool)])
    if order == "reversed":
        data = dict(reversed(list(data.items())))
    fast, slow = both_ways(compiled, data, method)
    assert fast == slow


def test_the_kitchen_example_is_valid_and_fast():
    compiled = compile_form(KITCHEN)
    result = compiled.validate_create(KITCHEN_VALID, today=TODAY)
    assert result.errors == {}
    assert compiled._complete(KITCHEN_VALID, TODAY) == result

"""The push hot path's hand-written change check agrees with ChangeSchema.

`wire.load_change` takes a fast path for clean changes and falls back to the
marshmallow schema otherwise; whichever runs, the answer must be the schema's.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from schemas.wire import CHANGE_SCHEMA, _fast_change, load_change

HLC = "2025-03-01T02:03:04.123Z-0000-dev-7f3a"
GOOD = {
    "id": "01938F3E-5b2f-7c1e-9b1a-2a6c8f3e9d10",
    "form": "anc_visit", "form_version": 1, "area": "QN.LM.03",
    "data": {"visit_date": "2025-03-01", "weight_kg": 52.5},
    "hlc": HLC,
    "clocks": {"visit_date": "2025-02-28T09:00:00.000Z-0002-dev-7f3a"},
    "bases": {"weight_kg": "2025-02-20T07:15:00.000Z-0000-dev-91c2"},
}

# Values that are valid for some key and invalid for others.
_values = st.sampled_from([
    None, True, False, 0, 1, 10_000, 10_001, 1.0, "", "x", "anc_visit", "QN", "QN.LM.03",
    "qn", "A" * 65, "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d10", HLC, HLC + "\n", [], {},
    {"visit_date": HLC}, {"weight_kg": HLC}, {"visit_date": "soon"}, {"Bad": HLC},
    {"visit_date": 1}, {"visit_date": "2025-03-01"},
])
_keys = st.sampled_from(list(GOOD) + ["deleted", "extra"])


def _schema_answer(raw):
    try:
        return CHANGE_SCHEMA.load(raw), {}
    except ValidationError as exc:
        return None, exc.messages


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4), st.sets(_keys, max_size=3))
def test_fast_path_gives_the_schemas_answer(overrides, dropped):
    raw = {k: v for k, v in {**GOOD, **overrides}.items() if k not in dropped}
    expected = _schema_answer(raw)
    assert load_change(raw) == expected
    fast = _fast_change(raw)
    if fast is not None:  # never accepts what the schema refuses, same key order
        assert expected[1] == {} and list(fast.items()) == list(expected[0].items())


def test_clean_changes_take_the_fast_path_and_copy_their_maps():
    for raw in (GOOD, {k: v for k, v in GOOD.items() if k not in ("clocks", "bases")},
                {**GOOD, "deleted": True, "bases": {"other": HLC}}, {**GOOD, "deleted": None}):
        fast = _fast_change(raw)
        assert fast is not None and fast == CHANGE_SCHEMA.load(raw)
        assert fast["data"] is not raw["data"]
    assert _fast_change({**GOOD, "form_version": True}) is None
    assert _fast_change({**GOOD, "clocks": {"height_cm": HLC}}) is None

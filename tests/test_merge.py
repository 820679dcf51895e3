"""The merge: per-field LWW by HLC, conflicts, tombstones, re-stamping."""

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from schemas.clock import format_hlc
from schemas.merge import (CLOCK_MODES, ClockReused, from_wire, is_deleted, merge, to_wire,
                           values)

RID = "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d10"
FIELDS = ["weight_kg", "visit_date", "danger_signs"]


def hlc(ms, device, counter=0):
    return format_hlc(1_700_000_000_000 + ms, counter, device)


def change(clock, data=None, deleted=None, bases=None, clocks=None, version=1):
    c = {"id": RID, "form": "anc_visit", "form_version": version, "area": "QN.LM.03",
         "data": data or {}, "hlc": clock, "clocks": clocks or {}, "bases": bases or {}}
    if deleted is not None:
        c["deleted"] = deleted
    return c


def apply_all(changes):
    record, conflicts = None, []
    for c in changes:
        dev = c["hlc"].rsplit("-", 1)[1]
        res = merge(record, c, device=dev, user="u-" + dev)
        record = res.record
        conflicts += [(k.field, k.loser["hlc"]) for k in res.conflicts]
    return record, conflicts


@st.composite
def change_sets(draw, one_per_device=False, offset=0):
    devices = ["a", "b", "c", "d"]
    n = draw(st.integers(1, 4 if one_per_device else 8))
    out, seen = [], []
    for i in range(n):
        dev = devices[i] if one_per_device else draw(st.sampled_from(devices[:3]))
        clock = hlc(draw(st.integers(0, 50)), dev, counter=i + offset)
        names = draw(st.lists(st.sampled_from(FIELDS), unique=True, min_size=0, max_size=3))
        # distinct values per change, so every pair of writes really differs
        clear = not one_per_device and draw(st.booleans()) and draw(st.booleans())
        data = {f: None if clear else f"{dev}{i}" for f in names}
        deleted = draw(st.sampled_from([None, None, True, False]))
        if one_per_device and any("deleted" in c for c in out):
            # Two concurrent deletes: the state converges, but an edit newer
            # than both names only the delete it met first. Left out here.
            deleted = None
        if not data and deleted is None:
            data = {FIELDS[0]: f"{dev}{i}"}
        bases = {} if one_per_device else {
            f: draw(st.sampled_from(seen)) for f in names if seen and draw(st.booleans())}
        out.append(change(clock, data, deleted, bases))
        seen.append(clock)
    return out


@settings(max_examples=300, deadline=None)
@given(change_sets(), st.randoms())
def test_any_order_of_the_same_changes_gives_the_same_record(changes, rnd):
    first, _ = apply_all(changes)
    shuffled = list(changes)
    rnd.shuffle(shuffled)
    again, _ = apply_all(shuffled)
    assert again == first


@settings(max_examples=200, deadline=None)
@given(change_sets(), st.integers(0, 7))
def test_a_resend_changes_nothing_and_logs_nothing(changes, k):
    record, logged = apply_all(changes)
    c = changes[k % len(changes)]
    dev = c["hlc"].rsplit("-", 1)[1]
    res = merge(record, c, device=dev, user="u-" + dev)
    assert res.record == record and res.changed == []
    # A losing resend may be reported again (the log keeps one entry per
    # record, field and losing clock); it never names another change's value.
    assert all(k.loser["hlc"] in (c["hlc"], *c["clocks"].values()) for k in res.conflicts)


def _view(rec):
    w = to_wire(rec)
    return w["data"], w["clocks"], w["deleted"], w["tombstone"]


def _join(x, y):
    """Whole state `y` merged into `x`, as a pull or a push of a record does."""
    return merge(x, from_wire(to_wire(y)), device="server", user="s").record


@settings(max_examples=200, deadline=None)
@given(change_sets(), change_sets(offset=100))
def test_merging_whole_states_is_commutative(left, right):
    """Device and server exchange whole records (pull): either direction
    ends in the same visible state."""
    a, _ = apply_all(left)
    b, _ = apply_all(right)
    assert _view(_join(a, b)) == _view(_join(b, a))


@settings(max_examples=200, deadline=None)
@given(change_sets(), change_sets(offset=100), change_sets(offset=200))
def test_merging_whole_states_is_associative(left, middle, right):
    """Three independent histories of one record (issue 18: the third state
    was once a prefix of the first, so it added nothing): grouping does not
    matter, and each join holds every field any of them set."""
    a, b, c = (apply_all(x)[0] for x in (left, middle, right))
    ab_c, a_bc = _join(_join(a, b), c), _join(a, _join(b, c))
    assert _view(ab_c) == _view(a_bc)
    assert set(ab_c["fields"]) == set(a["fields"]) | set(b["fields"]) | set(c["fields"])
    # Each field holds the largest clock any of the three gave it.
    for name, reg in ab_c["fields"].items():
        assert reg["hlc"] == max(s["fields"][name]["hlc"] for s in (a, b, c)
                                 if name in s["fields"])


@settings(max_examples=200, deadline=None)
@given(change_sets(), st.integers(0, 7))
def test_a_change_never_touches_a_field_it_does_not_carry(changes, k):
    stored, _ = apply_all(changes[:-1]) if len(changes) > 1 else (None, [])
    c = changes[-1]
    res = merge(stored, c, device="x", user="x")
    if stored is not None:
        for name, reg in stored["fields"].items():
            if name not in c["data"]:
                assert res.record["fields"][name] == reg
    assert set(res.record["fields"]) == set(stored["fields"] if stored else {}) | set(c["data"])


@settings(max_examples=300, deadline=None)
@given(change_sets(one_per_device=True))
def test_conflicts_found_do_not_depend_on_arrival_order(changes):
    """Concurrent edits by different devices (no bases): the same conflicts
    are logged whichever order they arrive in."""
    expected = None
    for order in itertools.permutations(changes):
        _, conflicts = apply_all(order)
        if expected is None:
            expected = set(conflicts)
        assert set(conflicts) == expected


def test_sequential_edit_is_no_conflict_in_either_order():
    a = change(hlc(1, "a"), {"weight_kg": 50})
    b = change(hlc(2, "b"), {"weight_kg": 52}, bases={"weight_kg": hlc(1, "a")})
    for order in ([a, b], [b, a]):
        record, conflicts = apply_all(order)
        assert conflicts == [] and values(record) == {"weight_kg": 52}


def test_concurrent_edits_of_one_field_log_the_loser():
    a = change(hlc(1, "a"), {"weight_kg": 50})
    b = change(hlc(2, "b"), {"weight_kg": 52})
    record, conflicts = apply_all([b, a])
    assert values(record) == {"weight_kg": 52}
    assert conflicts == [("weight_kg", hlc(1, "a"))]
    res = merge(apply_all([b])[0], a, device="a", user="u")
    assert res.lost == ["weight_kg"] and res.changed == []


def test_edits_of_different_fields_both_stand():
    a = change(hlc(1, "a"), {"weight_kg": 50})
    b = change(hlc(2, "b"), {"visit_date": "2025-03-01"})
    record, conflicts = apply_all([a, b])
    assert conflicts == [] and values(record) == {"weight_kg": 50, "visit_date": "2025-03-01"}


def test_same_clock_with_another_value_is_clock_reused():
    record, _ = apply_all([change(hlc(1, "a"), {"weight_kg": 50})])
    with pytest.raises(ClockReused) as exc:
        merge(record, change(hlc(1, "a"), {"weight_kg": 51}), device="a", user="u")
    assert exc.value.field == "weight_kg"


def test_equal_values_are_no_conflict():
    record, conflicts = apply_all([change(hlc(1, "a"), {"weight_kg": 50}),
                                   change(hlc(2, "b"), {"weight_kg": 50})])
    assert conflicts == []


def test_restamped_clock_then_resend_is_unchanged():
    future = format_hlc(1_900_000_000_000, 0, "a")
    limit = hlc(10, "server")
    stamps = iter([hlc(5, "server", 1), hlc(6, "server", 1)])
    c = change(future, {"weight_kg": 50})
    res = merge(None, c, device="a", user="u", restamp=lambda: next(stamps), max_clock=limit)
    reg = res.record["fields"]["weight_kg"]
    assert res.restamped == ["weight_kg"] and reg["hlc"] == hlc(5, "server", 1) and reg["origin"] == future
    again = merge(res.record, c, device="a", user="u", restamp=lambda: next(stamps), max_clock=limit)
    assert again.changed == [] and again.record == res.record
    with pytest.raises(ClockReused):
        merge(res.record, change(future, {"weight_kg": 51}), device="a", user="u")


def test_edit_losing_to_newer_delete_is_a_conflict_both_ways():
    edit = change(hlc(1, "a"), {"weight_kg": 50})
    delete = change(hlc(2, "b"), deleted=True)
    for order in ([edit, delete], [delete, edit]):
        record, conflicts = apply_all(order)
        assert is_deleted(record)
        assert conflicts == [("weight_kg", hlc(1, "a"))]


def test_edit_newer_than_a_delete_keeps_the_record_and_logs_it():
    delete = change(hlc(1, "b"), deleted=True)
    edit = change(hlc(2, "a"), {"weight_kg": 50})
    for order in ([edit, delete], [delete, edit]):
        record, conflicts = apply_all(order)
        assert not is_deleted(record)
        assert conflicts == [("deleted", hlc(1, "b"))]


def test_delete_of_a_record_the_device_had_seen_is_no_conflict_and_restore_works():
    create = change(hlc(1, "a"), {"weight_kg": 50})
    delete = change(hlc(2, "b"), deleted=True, bases={"weight_kg": hlc(1, "a")})
    record, conflicts = apply_all([create, delete])
    assert conflicts == [] and is_deleted(record)
    restored = merge(record, change(hlc(3, "b"), deleted=False), device="b", user="u").record
    assert not is_deleted(restored) and values(restored) == {"weight_kg": 50}


def test_field_clocks_come_from_clocks_and_version_takes_the_newest():
    c = change(hlc(5, "a"), {"weight_kg": 50, "visit_date": "2025-03-01"},
               clocks={"visit_date": hlc(3, "a")}, version=2)
    record = merge(None, c, device="a", user="u").record
    assert record["fields"]["visit_date"]["hlc"] == hlc(3, "a")
    older = merge(record, change(hlc(1, "b"), {"visit_date": "2025-02-01"}), device="b", user="u")
    assert older.record["form_version"] == 2 and values(older.record)["visit_date"] == "2025-03-01"


@settings(max_examples=300, deadline=None)
@given(change_sets(), change_sets(offset=100), st.sampled_from(["sparse", "common"]))
def test_every_pull_clock_mode_merges_as_the_full_record_does(left, right, mode):
    """A device merging a record pulled with clocks=sparse or clocks=common
    ends where merging DESIGN's every-clock record takes it."""
    a, _ = apply_all(left)
    b, _ = apply_all(right)
    full, short = to_wire(b), to_wire(b, clocks=mode)
    base = short.get("common_hlc") or short["hlc"]
    assert {n: short["clocks"].get(n, base) for n in full["clocks"]} == full["clocks"]
    assert len(short["clocks"]) <= len(to_wire(b, clocks="sparse")["clocks"])
    if mode == "sparse" or "common_hlc" not in short:
        assert short == {**full, "clocks": {n: c for n, c in full["clocks"].items()
                                             if c != full["hlc"]}}
    for into in (None, a):
        want = merge(into, from_wire(full), device="s", user="s").record
        got = merge(into, from_wire(short), device="s", user="s").record
        assert to_wire(got) == to_wire(want)


@settings(max_examples=200, deadline=None)
@given(change_sets(), st.sampled_from(CLOCK_MODES),
       st.sampled_from(["id", "form_version", "data", "hlc", "clocks", "tombstone",
                        "common_hlc"]),
       st.sampled_from([None, 1, "x", [], {"f": 1}, "2026-11-29T10:00:00.000Z-0000-Bad"]))
def test_a_device_reads_every_record_to_wire_makes_and_no_damaged_one(changes, mode, key,
                                                                     value):
    """What a device checks before merging a record a server sent
    (merge.readable_wire): every record to_wire makes passes; one with a
    key of the wrong kind does not (the pull page is then refused whole)."""
    from schemas.merge import readable_wire
    record, _ = apply_all(changes)
    wire = to_wire(record, clocks=mode)
    assert readable_wire(wire)
    still_fine = {"id": lambda v: isinstance(v, str), "form_version": lambda v: v == 1,
                  "data": lambda v: isinstance(v, dict), "tombstone": lambda v: v is None,
                  "clocks": lambda v: v is None}.get(key, lambda v: False)
    assert readable_wire({**wire, key: value}) == still_fine(value)


@given(change_sets(), st.sampled_from(CLOCK_MODES), st.sampled_from(CLOCK_MODES))
def test_a_record_in_one_clock_mode_relists_as_to_wire_lists_another(changes, given_mode, mode):
    """merge.relist_clocks (what pull does to a stored `common` record for a
    device asking `all` or `sparse`) gives exactly to_wire's record."""
    from schemas.merge import relist_clocks
    record, _ = apply_all(changes)
    assert relist_clocks(to_wire(record, clocks=given_mode), mode) == to_wire(record, clocks=mode)

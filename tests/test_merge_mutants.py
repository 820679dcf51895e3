"""Tests written to kill mutants that survived `make mutation` in
schemas/merge.py (docs/mutation.md lists each and why)."""
import pytest

from schemas.clock import format_hlc
from schemas.merge import ClockReused, Conflict, merge

RID = "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d10"


def _change(clock, data):
    return {"id": RID, "form": "household", "form_version": 1, "area": "QN.LM.03",
            "data": data, "hlc": clock}


def test_clock_reused_names_the_field_in_its_message():
    """ClockReused.__init__ mutant 1 (message replaced by None): the server's
    clock_reused rejection and the device's log name the field from it."""
    clock = format_hlc(1_700_000_000_000, 0, "dev-a")
    stored = merge(None, _change(clock, {"head_name": "A"}), device="dev-a", user="u").record
    with pytest.raises(ClockReused) as info:
        merge(stored, _change(clock, {"head_name": "B"}), device="dev-a", user="u")
    assert info.value.field == "head_name"
    assert str(info.value) == "clock reused with a different value for 'head_name'"


def test_a_record_without_fields_relists_to_common_as_to_wire_makes_it():
    """relist_clocks mutant 35 (common_hlc's fallback `hlc` replaced by None):
    only a record with no field tells them apart (a create that is only a
    tombstone); it then gained `"common_hlc": null`, which no device reads."""
    from schemas.merge import readable_wire, relist_clocks, to_wire
    clock = format_hlc(1_700_000_000_000, 0, "dev-a")
    state = merge(None, {**_change(clock, {}), "deleted": True}, device="dev-a",
                  user="u").record
    assert state["fields"] == {}
    for given in ("all", "sparse", "common"):
        for mode in ("all", "sparse", "common"):
            again = relist_clocks(to_wire(state, clocks=given), mode)
            assert again == to_wire(state, clocks=mode), (given, mode)
            assert readable_wire(again)


def test_a_record_whose_fields_mostly_share_an_older_clock_relists_in_every_mode():
    """relist_clocks mutants 6, 9, 10 (common_hlc not taken from the wire)
    and 29, 32, 33 ("sparse" listed as "common"): the second run's mutation
    profile (15 hypothesis examples) met no record whose common clock
    differs from its hlc, so this one is written out: three fields at the
    create's clock, one edited later."""
    from schemas.merge import readable_wire, relist_clocks, to_wire
    create = format_hlc(1_700_000_000_000, 0, "dev-a")
    edit = format_hlc(1_700_000_100_000, 0, "dev-b")
    state = merge(None, _change(create, {"head_name": "A", "poverty_status": "poor",
                                         "status": "active", "registered_on": "2025-03-01"}),
                  device="dev-a", user="u").record
    state = merge(state, _change(edit, {"status": "moved"}), device="dev-b", user="u").record
    common = to_wire(state, clocks="common")
    assert common["common_hlc"] == create and common["clocks"] == {"status": edit}
    for given in ("all", "sparse", "common"):
        for mode in ("all", "sparse", "common"):
            again = relist_clocks(to_wire(state, clocks=given), mode)
            assert again == to_wire(state, clocks=mode), (given, mode)
            assert readable_wire(again)


def test_common_hlc_breaks_a_tie_with_the_newest_clock():
    """common_hlc mutant 18 (ties broken by the first clock met, not the newest)."""
    from schemas.merge import common_hlc
    old, new = (format_hlc(1_700_000_000_000 + i, 0, "dev-a") for i in (0, 1))
    assert common_hlc([old, new], new) == new
    assert common_hlc([old, old, new], new) == old
    assert common_hlc([], new) == new


# Fourth run (docs/mutation.md): the rest of merge.py. Every expectation
# below is written out from DESIGN.md's merge rules, not read from the code.

T0 = 1_700_000_000_000


def _at(ms, node, counter=0):
    """A clock `ms` milliseconds after T0 on `node`."""
    return format_hlc(T0 + ms, counter, node)


def _reg(value, hlc, device, user, base=None, origin=None):
    return {"value": value, "hlc": hlc, "device": device, "user": user, "base": base,
            "origin": origin}


def _created(data, clock=None, device="dev-a"):
    """A record created with `data` by `device` (one field, by default)."""
    clock = clock or _at(0, device)
    return merge(None, _change(clock, data), device=device, user="u-" + device).record


def test_to_wire_carries_seq_only_when_given():
    """to_wire mutants 80-83 (`seq` written when absent, as None or under
    another key): pull pages carry each record's `seq`, the device's cursor."""
    from schemas.merge import to_wire
    state = _created({"head_name": "A"})
    assert to_wire(state, 41)["seq"] == 41
    assert to_wire(state, 0)["seq"] == 0
    assert "seq" not in to_wire(state) and "seq" not in to_wire(state, None)


def test_a_delete_and_a_restore_keep_who_made_them_and_what_was_seen():
    """_merge_tombstone mutants 28, 29 (the tombstone's device or user
    dropped), 37 (a restore kept the bases) and 53 (`changed` named None):
    the tombstone is a register of its own, with the deleting device, its
    user and the clocks it had seen; a restore weighs against nothing."""
    create = _at(0, "dev-a")
    state = _created({"head_name": "A"}, create)
    delete = {**_change(_at(10, "dev-b"), {}), "deleted": True,
              "bases": {"head_name": create}}
    res = merge(state, delete, device="dev-b", user="u-b")
    assert res.record["deleted"] == _reg(True, _at(10, "dev-b"), "dev-b", "u-b",
                                         base={"head_name": create})
    assert res.changed == ["deleted"] and res.conflicts == [] and res.lost == []
    restore = {**_change(_at(20, "dev-c"), {}), "deleted": False,
               "bases": {"head_name": create}}
    res = merge(res.record, restore, device="dev-c", user="u-c")
    assert res.record["deleted"] == _reg(False, _at(20, "dev-c"), "dev-c", "u-c")
    assert res.changed == ["deleted"] and res.conflicts == []
    assert res.record["fields"]["head_name"] == _reg("A", create, "dev-a", "u-dev-a")


def test_a_delete_at_a_clock_already_holding_a_restore_is_clock_reused():
    """_merge_tombstone mutant 24 (ClockReused without the field): the
    server's `clock_reused` rejection names the tombstone as "deleted"."""
    clock = _at(10, "dev-b")
    state = merge(_created({"head_name": "A"}), {**_change(clock, {}), "deleted": True},
                  device="dev-b", user="u-b").record
    with pytest.raises(ClockReused) as info:
        merge(state, {**_change(clock, {}), "deleted": False}, device="dev-b", user="u-b")
    assert info.value.field == "deleted"
    assert str(info.value) == "clock reused with a different value for 'deleted'"


def test_a_delete_from_a_clock_too_far_ahead_is_restamped_and_its_resend_is_unchanged():
    """_merge_tombstone mutants 39, 40 (the tombstone not handed to the
    re-stamp, or re-stamped under no name): DESIGN.md "Clocks" re-stamps
    every register whose clock is too far ahead, the tombstone too, and
    keeps the clock as sent as its origin."""
    create = _at(0, "dev-a")
    state = _created({"head_name": "A"}, create)
    future = _at(10_000_000, "dev-b")
    limit, stamped = _at(100, "server"), _at(50, "server", 1)
    delete = {**_change(future, {}), "deleted": True, "bases": {"head_name": create}}
    res = merge(state, delete, device="dev-b", user="u-b", restamp=lambda: stamped,
                max_clock=limit)
    assert res.record["deleted"] == _reg(True, stamped, "dev-b", "u-b",
                                         base={"head_name": create}, origin=future)
    assert res.restamped == ["deleted"] and res.changed == ["deleted"]
    again = merge(res.record, delete, device="dev-b", user="u-b",
                  restamp=lambda: _at(60, "server", 1), max_clock=limit)
    assert again.record == res.record and again.changed == [] and again.restamped == []


def test_a_newer_form_version_is_taken_and_named_among_the_changes():
    """merge mutants 18-25 (the newer form_version not stored, stored under
    another key or named otherwise in `changed`): a record edited with a
    later version of its form takes that version (DESIGN.md "Forms are data")."""
    state = _created({"head_name": "A"})
    edit = {**_change(_at(10, "dev-b"), {"head_name": "B"}), "form_version": 2}
    res = merge(state, edit, device="dev-b", user="u-b")
    assert res.record["form_version"] == 2
    assert res.changed == ["form_version", "head_name"]
    older = merge(res.record, _change(_at(20, "dev-c"), {"status": "active"}), device="dev-c",
                  user="u-c")
    assert older.record["form_version"] == 2 and older.changed == ["status"]


def test_changed_names_each_field_a_create_or_an_edit_sets():
    """merge mutants 83, 150 (`changed` naming None): the server stores a
    change as `applied` and the device marks fields from these names."""
    res = merge(None, _change(_at(0, "dev-a"), {"head_name": "A", "status": "active"}),
                device="dev-a", user="u-a")
    assert res.changed == ["head_name", "status"]
    edit = _change(_at(10, "dev-a"), {"status": "moved"})
    assert merge(res.record, edit, device="dev-a", user="u-a").changed == ["status"]


def test_a_field_already_merged_does_not_stop_the_rest_of_the_change():
    """merge mutant 125 (`continue` → `break` after a resent field): a
    change holding a field the server already has (same clock, same value)
    and a new edit applies the new edit."""
    first = _at(0, "dev-a")
    state = _created({"head_name": "A", "status": "active"}, first)
    again = {**_change(_at(10, "dev-a"), {"head_name": "A", "status": "moved"}),
             "clocks": {"head_name": first}}
    res = merge(state, again, device="dev-a", user="u-a")
    assert res.changed == ["status"]
    assert res.record["fields"]["status"] == _reg("moved", _at(10, "dev-a"), "dev-a", "u-a")
    assert res.record["fields"]["head_name"] == state["fields"]["head_name"]


def test_an_edit_too_far_ahead_is_restamped_and_one_at_the_limit_is_not():
    """merge mutants 46 (a clock equal to the limit re-stamped) and 139 (a
    field re-stamped under no name): DESIGN.md "Clocks": a clock *more*
    than the tolerance ahead is re-stamped, and the answer names the field."""
    state = _created({"head_name": "A", "status": "active"})
    limit, stamped = _at(100, "dev-b"), _at(50, "server", 1)
    edit = {**_change(limit, {"head_name": "B", "status": "moved"}),
            "clocks": {"status": _at(10_000_000, "dev-b")}}
    res = merge(state, edit, device="dev-b", user="u-b", restamp=lambda: stamped,
                max_clock=limit)
    assert res.restamped == ["status"]
    assert res.record["fields"]["head_name"] == _reg("B", limit, "dev-b", "u-b")
    assert res.record["fields"]["status"] == _reg("moved", stamped, "dev-b", "u-b",
                                                  origin=_at(10_000_000, "dev-b"))


def test_a_value_replaced_by_a_concurrent_edit_is_logged_with_the_winner():
    """merge mutant 170 (the winner left out of the conflict): the conflict
    log shows the current value next to the losing one."""
    state = _created({"head_name": "A"})
    res = merge(state, _change(_at(10, "dev-b"), {"head_name": "B"}), device="dev-b",
                user="u-b")
    assert res.conflicts == [Conflict("head_name",
                                      winner=_reg("B", _at(10, "dev-b"), "dev-b", "u-b"),
                                      loser=_reg("A", _at(0, "dev-a"), "dev-a", "u-dev-a"))]
    assert res.lost == []


def _deleted_only(clock, device, seen=None):
    """A record that is only a tombstone: deleted by `device` at `clock`,
    after seeing the field clocks in `seen`."""
    change = {**_change(clock, {}), "deleted": True, "bases": seen or {}}
    return merge(None, change, device=device, user="u-" + device).record


def test_an_edit_older_than_a_delete_loses_unless_the_deleting_device_had_seen_it():
    """_edit_against_tombstone mutants 15-20, 28 (what the deleting device
    had seen ignored), 33 (no winner) and 38 (`lost` naming None): DESIGN.md
    "Merge and conflicts": an edit losing to a newer delete is a conflict,
    and a delete of a value the device had seen is not."""
    edit_clock = _at(5, "dev-a")
    tomb = _reg(True, _at(10, "dev-b"), "dev-b", "u-dev-b", base={})
    res = merge(_deleted_only(_at(10, "dev-b"), "dev-b"),
                _change(edit_clock, {"head_name": "A"}), device="dev-a", user="u-a")
    edit = _reg("A", edit_clock, "dev-a", "u-a")
    assert res.conflicts == [Conflict("head_name", winner=tomb, loser=edit)]
    assert res.lost == ["head_name"] and res.changed == ["head_name"]
    seen = _deleted_only(_at(10, "dev-b"), "dev-b", {"head_name": edit_clock})
    res = merge(seen, _change(edit_clock, {"head_name": "A"}), device="dev-a", user="u-a")
    assert res.conflicts == [] and res.lost == [] and res.changed == ["head_name"]


def test_an_edit_newer_than_a_delete_keeps_the_record_and_logs_the_delete_as_loser():
    """_edit_against_tombstone mutant 45 (no winner): the edit that
    brought the record back is the winner the log shows."""
    res = merge(_deleted_only(_at(10, "dev-b"), "dev-b"),
                _change(_at(20, "dev-a"), {"head_name": "A"}), device="dev-a", user="u-a")
    assert res.conflicts == [Conflict("deleted",
                                      winner=_reg("A", _at(20, "dev-a"), "dev-a", "u-a"),
                                      loser=_reg(True, _at(10, "dev-b"), "dev-b", "u-dev-b",
                                                 base={}))]
    assert res.lost == []


def test_a_delete_against_concurrent_edits_logs_each_side_with_its_winner():
    """_merge_tombstone mutants 77, 93 (no winner) and 98 (`lost` naming
    None): a delete wins over an older concurrent edit of one field and
    loses to a newer edit of another; the delete is what was lost."""
    state = _created({"head_name": "A"}, _at(0, "dev-a"))
    state = merge(state, _change(_at(20, "dev-c"), {"status": "moved"}), device="dev-c",
                  user="u-c").record
    res = merge(state, {**_change(_at(10, "dev-b"), {}), "deleted": True}, device="dev-b",
                user="u-b")
    tomb = _reg(True, _at(10, "dev-b"), "dev-b", "u-b", base={})
    assert res.conflicts == [
        Conflict("head_name", winner=tomb, loser=_reg("A", _at(0, "dev-a"), "dev-a", "u-dev-a")),
        Conflict("deleted", winner=_reg("moved", _at(20, "dev-c"), "dev-c", "u-c"), loser=tomb)]
    assert res.lost == ["deleted"] and res.changed == ["deleted"]


def test_a_delete_losing_to_one_edit_of_two_fields_logs_the_first_field_by_name():
    """_merge_tombstone mutant 86 (`>` → `>=`): when the edit that keeps the
    record set two fields at one clock, the log shows the field first by
    name as the winner, whatever order the record holds its fields in."""
    for data in ({"status": "moved", "head_name": "B"}, {"head_name": "B", "status": "moved"}):
        state = _created({"note": "x"}, _at(0, "dev-b"), device="dev-b")
        state = merge(state, _change(_at(20, "dev-c"), data), device="dev-c", user="u-c").record
        res = merge(state, {**_change(_at(10, "dev-b"), {}), "deleted": True},
                    device="dev-b", user="u-b")
        tomb = _reg(True, _at(10, "dev-b"), "dev-b", "u-b", base={})
        assert res.conflicts == [
            Conflict("deleted", winner=_reg("B", _at(20, "dev-c"), "dev-c", "u-c"), loser=tomb)]


def test_a_record_is_deleted_only_while_its_tombstone_is_newer_than_every_field():
    """is_deleted mutant 13 (`<` → `<=`): a change that sets a field and
    deletes at one clock leaves a tombstone no newer than that field, so the
    record stands (the rule of merge.py's docstring); 1 ms later, it is gone."""
    from schemas.merge import is_deleted, to_wire
    clock = _at(10, "dev-b")
    both = merge(None, {**_change(clock, {"head_name": "A"}), "deleted": True},
                 device="dev-b", user="u-b").record
    assert both["fields"]["head_name"]["hlc"] == both["deleted"]["hlc"] == clock
    assert not is_deleted(both) and to_wire(both)["deleted"] is False
    later = merge(both, {**_change(_at(11, "dev-b"), {}), "deleted": True}, device="dev-b",
                  user="u-b").record
    assert is_deleted(later) and to_wire(later)["deleted"] is True

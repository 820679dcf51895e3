"""Tests written to kill mutants that survived `make mutation` in
schemas/merge.py (docs/mutation.md lists each and why)."""
import pytest

from schemas.clock import format_hlc
from schemas.merge import ClockReused, merge

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

"""The merge: per-field last-writer-wins registers ordered by HLC.

One pure function, called by the server on every pushed change and by the
device on every pulled record, so both sides converge on the same state.

A record's state is JSON (see docs/internals.md)::

    {"id", "form", "form_version", "area",
     "fields": {name: Register}, "deleted": Register | None}

    Register = {"value", "hlc", "device", "user", "base", "origin"}

The merge of states is commutative, associative and idempotent: each
register keeps the value with the largest clock, and clocks are unique per
node (the node id is part of the clock), so the same value always wins.

Conflicts (DESIGN.md "Merge and conflicts") are found whichever change
arrives first: a value loses to a value from another device that was not
edited from it (``base``). Deletes take part too: the tombstone is a register
of its own, and a record counts as deleted while its tombstone is newer than
every field, so an edit made after a delete (by a device that had not seen
it) brings the record back rather than silently disappearing, and both
orders are logged as conflicts for a supervisor to review.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Callable

from .clock import HLC_RE

DELETED = "deleted"


class ClockReused(Exception):
    """The same clock arrived with a different value: a broken device."""

    def __init__(self, field: str):
        super().__init__(f"clock reused with a different value for {field!r}")
        self.field = field


@dataclass
class Conflict:
    field: str
    winner: dict
    loser: dict


@dataclass
class MergeResult:
    record: dict
    changed: list[str] = dc_field(default_factory=list)
    conflicts: list[Conflict] = dc_field(default_factory=list)
    restamped: list[str] = dc_field(default_factory=list)
    lost: list[str] = dc_field(default_factory=list)  # fields where the incoming value lost


def new_record(change: dict) -> dict:
    return {"id": change["id"], "form": change["form"], "form_version": change["form_version"],
            "area": change["area"], "fields": {}, "deleted": None}


def _register(value: Any, hlc: str, device: str, user: str, base: Any = None) -> dict:
    return {"value": value, "hlc": hlc, "device": device, "user": user, "base": base, "origin": None}


def _same_clock(reg: dict, clock: str | None) -> bool:
    return clock is not None and (clock == reg["hlc"] or clock == reg.get("origin"))


def merge(stored: dict | None, change: dict, *, device: str, user: str,
          restamp: Callable[[], str] | None = None, max_clock: str | None = None) -> MergeResult:
    """Merge one change into a stored record (``None`` for a new one).

    :param stored: the record state; not modified.
    :param change: a validated change: ``id, form, form_version, area, data, hlc``
        and optionally ``clocks``, ``bases``, ``deleted`` (and ``deleted_hlc``,
        for pulled records whose tombstone clock differs from ``hlc``).
    :param device: the device the change came from; ``user`` its user.
    :param restamp: server only: gives a fresh server clock for a field whose
        clock is later than ``max_clock`` (too far ahead of the server).
    :raises ClockReused: the same clock already holds a different value.
    """
    record = new_record(change) if stored is None else {
        **stored, "fields": dict(stored["fields"])}
    result = MergeResult(record)
    if change["form_version"] > record["form_version"]:
        record["form_version"] = change["form_version"]
        result.changed.append("form_version")
    hlc, clocks, bases = change["hlc"], change.get("clocks") or {}, change.get("bases") or {}
    fields = record["fields"]

    def stamp(reg: dict, name: str) -> None:
        if restamp is not None and max_clock is not None and reg["hlc"] > max_clock:
            reg["origin"], reg["hlc"] = reg["hlc"], restamp()
            result.restamped.append(name)

    if stored is None:  # a create: every field is new (the common push)
        for name, value in change.get("data", {}).items():
            inc = _register(value, clocks.get(name, hlc), device, user, bases.get(name))
            stamp(inc, name)
            fields[name] = inc
            result.changed.append(name)
        if change.get("deleted") is not None:
            _merge_tombstone(record, change, device, user, bases, stamp, result)
        return result

    for name, value in change.get("data", {}).items():
        clock = clocks.get(name, hlc)
        kept = fields.get(name)
        if kept is not None and _same_clock(kept, clock):
            if kept["value"] != value:
                raise ClockReused(name)
            continue  # a resend: nothing new
        inc = _register(value, clock, device, user, bases.get(name))
        stamp(inc, name)
        if kept is None or inc["hlc"] > kept["hlc"]:
            fields[name] = inc
            result.changed.append(name)
            if (kept is not None and kept["device"] != device and kept["value"] != value
                    and not _same_clock(kept, inc["base"])):
                result.conflicts.append(Conflict(name, winner=inc, loser=kept))
        else:
            if (kept["value"] != value and kept["device"] != device
                    and not _same_clock(inc, kept.get("base"))):
                result.conflicts.append(Conflict(name, winner=kept, loser=inc))
                result.lost.append(name)
        _edit_against_tombstone(record, name, inc, result)

    if "deleted" in change and change["deleted"] is not None:
        _merge_tombstone(record, change, device, user, bases, stamp, result)
    return result


def _edit_against_tombstone(record: dict, name: str, inc: dict, result: MergeResult) -> None:
    """An edit and a delete by two devices that had not seen each other."""
    tomb = record["deleted"]
    if tomb is None or not tomb["value"] or tomb["device"] == inc["device"]:
        return
    seen = (tomb.get("base") or {}).get(name)
    if inc["hlc"] < tomb["hlc"]:
        if not _same_clock(inc, seen):  # the edit loses to a newer delete
            result.conflicts.append(Conflict(name, winner=tomb, loser=inc))
            result.lost.append(name)
    elif record["fields"].get(name) is inc:  # a newer edit: the delete loses
        result.conflicts.append(Conflict(DELETED, winner=inc, loser=tomb))


def _merge_tombstone(record, change, device, user, bases, stamp, result) -> None:
    value = bool(change["deleted"])
    clock = change.get("deleted_hlc") or change["hlc"]
    kept = record["deleted"]
    if kept is not None and _same_clock(kept, clock):
        if kept["value"] != value:
            raise ClockReused(DELETED)
        return
    inc = _register(value, clock, device, user, dict(bases) if value else None)
    stamp(inc, DELETED)
    if kept is not None and inc["hlc"] < kept["hlc"]:
        return  # an older delete or restore: the newer one stands
    record["deleted"] = inc
    result.changed.append(DELETED)
    if not value:
        return
    newest = None  # among fields of one newest edit, the first by name
    for name, reg in sorted(record["fields"].items()):
        if reg["device"] == device or _same_clock(reg, inc["base"].get(name)):
            continue  # the deleting device had seen this value
        if reg["hlc"] < inc["hlc"]:  # the delete wins over a concurrent edit
            result.conflicts.append(Conflict(name, winner=inc, loser=reg))
        elif newest is None or reg["hlc"] > newest["hlc"]:
            newest = reg
    if newest is not None:  # an edit newer than the delete keeps the record
        result.conflicts.append(Conflict(DELETED, winner=newest, loser=inc))
        result.lost.append(DELETED)


def values(record: dict) -> dict:
    """The record's plain ``{field: value}``."""
    return {name: reg["value"] for name, reg in record["fields"].items()}


def record_hlc(record: dict) -> str:
    """The largest clock in the record."""
    clocks = [reg["hlc"] for reg in record["fields"].values()]
    if record["deleted"] is not None:
        clocks.append(record["deleted"]["hlc"])
    return max(clocks)


def is_deleted(record: dict) -> bool:
    """Deleted while the tombstone is newer than every field's value."""
    tomb = record["deleted"]
    if tomb is None or not tomb["value"]:
        return False
    return all(reg["hlc"] < tomb["hlc"] for reg in record["fields"].values())


CLOCK_MODES = ("all", "sparse", "common")


def common_hlc(clocks, top: str) -> str:
    """The clock that most of `clocks` are; of those tied, the newest, so
    `top` (a record's hlc) whenever it ties. `top` when `clocks` is empty."""
    counts: dict[str, int] = {}
    for clock in clocks:
        counts[clock] = counts.get(clock, 0) + 1
    return max(counts.items(), key=lambda item: (item[1], item[0]))[0] if counts else top


def to_wire(record: dict, seq: int | None = None, *, clocks: str = "all") -> dict:
    """The record as pull and push answers carry it (DESIGN.md "Pull").

    :param clocks: ``"all"``: every field's clock (DESIGN's record).
        ``"sparse"``: only the fields whose clock differs from ``hlc``, as in
        a pushed change. ``"common"``: ``common_hlc`` is the clock most
        fields share (absent when that is ``hlc``), and ``clocks`` lists only
        the fields whose clock differs from it: a record edited once lists
        the edited fields, not the untouched ones.
    """
    top = record_hlc(record)
    tomb = record["deleted"]
    fields = record["fields"]
    out = {"id": record["id"], "form": record["form"], "form_version": record["form_version"],
           "area": record["area"], "data": values(record), "deleted": is_deleted(record),
           "hlc": top,
           "tombstone": {"deleted": tomb["value"], "hlc": tomb["hlc"]} if tomb else None}
    if clocks == "all":
        out["clocks"] = {name: reg["hlc"] for name, reg in fields.items()}
    else:
        base = top if clocks == "sparse" else \
            common_hlc([reg["hlc"] for reg in fields.values()], top)
        if base != top:
            out["common_hlc"] = base
        out["clocks"] = {name: reg["hlc"] for name, reg in fields.items() if reg["hlc"] != base}
    if seq is not None:
        out["seq"] = seq
    return out


def relist_clocks(wire: dict, clocks: str) -> dict:
    """`wire` (a `to_wire` record in any clock mode) with its clocks listed
    as `to_wire(..., clocks=clocks)` lists them; changed in place."""
    hlc = wire["hlc"]
    base = wire.pop("common_hlc", None) or hlc
    listed = wire.pop("clocks")
    every = {name: listed.get(name, base) for name in wire["data"]}
    if clocks == "all":
        wire["clocks"] = every
        return wire
    shared = hlc if clocks == "sparse" else common_hlc(list(every.values()), hlc)
    if shared != hlc:
        wire["common_hlc"] = shared
    wire["clocks"] = {name: c for name, c in every.items() if c != shared}
    return wire


def readable_wire(wire) -> bool:
    """Whether `wire` has the shape of a record `to_wire` makes (any clock
    mode): what a device checks before it merges one from a server."""
    if not isinstance(wire, dict):
        return False
    clocks, tomb = wire.get("clocks"), wire.get("tombstone")
    return (all(isinstance(wire.get(k), str) for k in ("id", "form", "area"))
            and type(wire.get("form_version")) is int and isinstance(wire.get("data"), dict)
            and _is_clock(wire.get("hlc"))
            and ("common_hlc" not in wire or _is_clock(wire["common_hlc"]))
            and (clocks is None or isinstance(clocks, dict)
                 and all(_is_clock(c) for c in clocks.values()))
            and (tomb is None or isinstance(tomb, dict) and isinstance(tomb.get("deleted"), bool)
                 and _is_clock(tomb.get("hlc"))))


def _is_clock(value) -> bool:
    return isinstance(value, str) and HLC_RE.match(value) is not None


def from_wire(wire: dict) -> dict:
    """A pulled (or re-stamped) record, in any of the `to_wire` clock modes,
    as a change the device can merge."""
    change = {"id": wire["id"], "form": wire["form"], "form_version": wire["form_version"],
              "area": wire["area"], "data": wire["data"],
              "hlc": wire.get("common_hlc") or wire["hlc"],
              "clocks": wire.get("clocks") or {}}
    if wire.get("tombstone"):
        change["deleted"] = wire["tombstone"]["deleted"]
        change["deleted_hlc"] = wire["tombstone"]["hlc"]
    return change

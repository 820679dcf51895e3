"""A field's min or max: a literal, "today" with an offset, or another field
with an offset; its limit for one record, its message, and a literal bound
as a static check."""
from __future__ import annotations

import datetime as dt

from .today import GRACE, _shift
from .values import _number

UNITS = {"d": "day", "w": "week", "m": "month", "y": "year"}


class _Bound:
    """A min or max: a literal, "today" with an offset, or another field with
    an offset."""

    __slots__ = ("side", "kind", "value", "getter", "source", "offset", "text", "gate", "static",
                 "today")

    def __init__(self, side, kind):
        self.side, self.kind = side, kind
        self.value = self.getter = self.offset = None
        self.source = None     # (name, type) of the other field, if of this group and not computed
        self.text = ""
        self.gate = frozenset()
        self.static = self.today = False

    def limit(self, vals, parent, today):
        """The bound for this record, or None when it cannot be known."""
        if self.static:
            return self.value
        if self.today:
            memo = self.value
            if memo is not None and memo[0] == today:
                return memo[1]
            sign, n, unit = self.offset
            try:
                day = _shift(today, sign, n, unit)
                # A day of grace: a device's "today" may be a day off ours.
                limit = (day + GRACE if self.side == "max" else day - GRACE).isoformat()
            except (OverflowError, ValueError):
                limit = None
            self.value = (today, limit)   # one "today" per day: remember it
            return limit
        other = self.getter(vals, parent)
        if other is None:
            return None
        if self.kind == "number":
            return other + self.offset if self.offset else other
        try:
            day = dt.date.fromisoformat(other[:10])
            if self.offset:
                day = _shift(day, *self.offset)
        except (TypeError, ValueError, OverflowError):
            return None
        return day.isoformat()

    def message(self, limit) -> str:
        if self.kind == "number":
            words = "at least" if self.side == "min" else "at most"
            return f"must be {words} {_number(limit)}{self.text}"
        if self.today and self.side == "max" and self.offset == ("+", 0, "d"):
            return "cannot be in the future"
        words = "on or after" if self.side == "min" else "on or before"
        if self.kind == "time":
            words = "at or after" if self.side == "min" else "at or before"
        return f"must be {words} {limit}{self.text}"

    def violated(self, value, limit) -> bool:
        if self.kind == "date" and len(value) > 10:
            value = value[:10]       # a datetime is bounded by its date
        try:
            return value < limit if self.side == "min" else value > limit
        except TypeError:
            return False


def _offset_words(offset):
    if not offset or offset[1] == 0:
        return ""
    sign, n, unit = offset
    return f" {sign} {n} {UNITS[unit]}{'s' if n != 1 else ''}"


def _static_bound(b):
    """A literal bound as a fast check: value -> message | None."""
    limit, message = b.value, b.message(b.value)
    if b.kind == "date":   # a datetime is bounded by its date
        if b.side == "min":
            return lambda v: message if v[:10] < limit else None
        return lambda v: message if v[:10] > limit else None
    if b.side == "min":
        return lambda v: message if v < limit else None
    return lambda v: message if v > limit else None

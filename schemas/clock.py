"""Hybrid logical clock (HLC) in DESIGN.md's string form.

``2025-03-01T02:03:04.123Z-0000-dev-7f3a``: UTC wall time to the millisecond,
a 4-hex-digit counter, the node id. Every part has a fixed width or comes
last, so plain string comparison is clock order, and the node id makes ties
impossible.

The clock never goes backwards: it keeps the last value it gave (``last``,
which the caller persists) and only moves forward from it, whatever the wall
clock does. Storage is the caller's business; this module is pure.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import date, datetime, timezone
from typing import Callable, NamedTuple

MAX_COUNTER = 0xFFFF
NODE_RE = re.compile(r"^[a-z0-9-]{1,64}\Z")
HLC_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z"
    r"-([0-9a-f]{4})-([a-z0-9-]{1,64})\Z"
)
# The last millisecond a four-digit year can hold: clocks must stay fixed-width.
_MAX_MILLIS = 253402300799999


class Timestamp(NamedTuple):
    millis: int
    counter: int
    node: str


def time_ms() -> int:
    """The wall clock, in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def parse(s: str) -> Timestamp:
    """Split an HLC string; ``ValueError`` names what is wrong."""
    if not isinstance(s, str):
        raise ValueError("a clock must be a string")
    m = HLC_RE.match(s)
    if not m:
        raise ValueError(f"not a clock: expected YYYY-MM-DDTHH:MM:SS.mmmZ-cccc-node, got {s[:80]!r}")
    year, month, day, hour, minute, second, ms, counter, node = m.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                      tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"not a clock: {exc}") from None
    millis = (int(dt.timestamp()) * 1000) + int(ms)
    return Timestamp(millis, int(counter, 16), node)


# `parse`'s checks without building a datetime: the push hot path checks
# every clock of every change. Fields in range by pattern; the day (Feb 30?)
# once per distinct date.
_VALID_RE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                       r"\.[0-9]{3}Z"
                       r"-[0-9a-f]{4}-[a-z0-9-]{1,64}\Z")


@functools.lru_cache(maxsize=1024)
def _valid_day(day: str) -> bool:
    try:
        return date.fromisoformat(day).year >= 1
    except ValueError:
        return False


def is_valid(s: object) -> bool:
    """Whether ``parse(s)`` would succeed."""
    m = _VALID_RE.match(s) if isinstance(s, str) else None
    return m is not None and _valid_day(m.group(1))


def format_hlc(millis: int, counter: int, node: str) -> str:
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter out of range: {counter}")
    if not NODE_RE.match(node):
        raise ValueError(f"node id must match [a-z0-9-]{{1,64}}: {node[:80]!r}")
    if not 0 <= millis <= _MAX_MILLIS:
        raise ValueError(f"time out of range: {millis} ms")
    dt = datetime.fromtimestamp(millis // 1000, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z-{counter:04x}-{node}"


def millis_of(s: str) -> int:
    """The wall-clock part of a clock, in ms since the epoch."""
    return parse(s).millis


def shift(s: str, millis: int) -> str:
    """The clock ``millis`` later (earlier if negative), counter 0, same node.

    Used to build bounds such as "five minutes ahead of the server".
    """
    ts = parse(s)
    return format_hlc(ts.millis + millis, 0, ts.node)


class Clock:
    """One node's hybrid logical clock.

    :param node: the node id (device id, or ``server``).
    :param last: the last clock this node issued or observed, as persisted.
    :param wall: a function giving wall time in ms (tests pass their own).
    """

    def __init__(self, node: str, last: str | None = None, wall: Callable[[], int] = time_ms):
        if not NODE_RE.match(node):
            raise ValueError(f"node id must match [a-z0-9-]{{1,64}}: {node[:80]!r}")
        self.node = node
        self.wall = wall
        self._millis, self._counter = -1, 0
        self.last: str | None = None
        if last is not None:
            ts = parse(last)
            self._millis, self._counter = ts.millis, ts.counter
            self.last = last

    def _issue(self, millis: int, counter: int) -> str:
        if counter > MAX_COUNTER:  # overflow: move 1 ms forward instead
            millis, counter = millis + 1, 0
        self._millis, self._counter = millis, counter
        self.last = format_hlc(millis, counter, self.node)
        return self.last

    def now(self) -> str:
        """A clock for a local event: greater than every clock seen so far."""
        wall = self.wall()
        if wall > self._millis:
            return self._issue(wall, 0)
        return self._issue(self._millis, self._counter + 1)

    def observe(self, remote: str) -> str:
        """Receive ``remote`` (from another node): move past it and past the wall clock."""
        r = parse(remote)
        wall = self.wall()
        top = max(wall, self._millis, r.millis)
        if top == self._millis and top == r.millis:
            counter = max(self._counter, r.counter) + 1
        elif top == self._millis:
            counter = self._counter + 1
        elif top == r.millis:
            counter = r.counter + 1
        else:
            counter = 0
        return self._issue(top, counter)

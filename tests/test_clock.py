"""The hybrid logical clock: format, order, monotonicity, persistence."""

import pytest
from hypothesis import given, strategies as st

from schemas.clock import MAX_COUNTER, Clock, format_hlc, is_valid, parse, shift

NODES = st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)
MILLIS = st.integers(min_value=0, max_value=253402300799999)
COUNTERS = st.integers(min_value=0, max_value=MAX_COUNTER)


def test_format_matches_design_example():
    s = "2025-03-01T02:03:04.123Z-0000-dev-7f3a"
    ts = parse(s)
    assert ts.counter == 0 and ts.node == "dev-7f3a"
    assert format_hlc(*ts) == s


@pytest.mark.parametrize("bad", [
    "", "2025-03-01T02:03:04Z-0000-dev", "2025-03-01T02:03:04.123Z-000g-dev",
    "2025-03-01T02:03:04.123Z-0000-DEV", "2025-13-01T02:03:04.123Z-0000-dev",
    "2025-02-30T02:03:04.123Z-0000-dev", "2025-03-01T02:03:04.123Z-0000-" + "a" * 65,
    "2025-03-01 02:03:04.123Z-0000-dev", 12345, None,
])
def test_malformed_clocks_are_refused(bad):
    assert not is_valid(bad)
    with pytest.raises(ValueError):
        parse(bad)


def _parses(s):
    try:
        parse(s)
    except ValueError:
        return False
    return True


# Clock-shaped strings with any part out of range: each digit position may be
# any digit (days 00-39, hours 00-29, ...), or a non-ASCII digit.
_DIGIT = st.sampled_from("0123456789") | st.sampled_from("0129٣")
_SHAPED = st.tuples(st.lists(_DIGIT, min_size=17, max_size=17), NODES).map(
    lambda t: "{}{}{}{}-{}{}-{}{}T{}{}:{}{}:{}{}.{}{}{}Z-00a0-".format(*t[0]) + t[1])


@given(st.one_of(_SHAPED, st.text(max_size=40), MILLIS.map(lambda m: format_hlc(m, 0, "n"))))
def test_is_valid_is_exactly_whether_parse_succeeds(s):
    assert is_valid(s) == _parses(s)


@given(MILLIS, COUNTERS, NODES, MILLIS, COUNTERS, NODES)
def test_string_order_is_clock_order(m1, c1, n1, m2, c2, n2):
    a, b = format_hlc(m1, c1, n1), format_hlc(m2, c2, n2)
    assert (a < b) == ((m1, c1, n1) < (m2, c2, n2))
    assert parse(a) == (m1, c1, n1)


@given(st.lists(st.one_of(
    st.tuples(st.just("now"), st.integers(-10**9, 10**9)),
    st.tuples(st.just("observe"), st.integers(-10**9, 10**9)),
    st.tuples(st.just("restart"), st.just(0)),
), min_size=1, max_size=60), COUNTERS)
def test_clock_is_monotonic_whatever_the_wall_clock_does(steps, remote_counter):
    """Jumps back and forward, restarts from persisted state, remote clocks:
    every clock issued is strictly greater than all before it and than every
    clock observed."""
    wall = [1_700_000_000_000]
    clock = Clock("dev-a", wall=lambda: wall[0])
    issued = []
    for op, delta in steps:
        wall[0] = max(0, wall[0] + delta)
        if op == "now":
            issued.append(clock.now())
        elif op == "observe":
            remote = format_hlc(max(0, wall[0] + delta // 2), remote_counter, "server")
            got = clock.observe(remote)
            assert got > remote
            issued.append(got)
        else:
            clock = Clock("dev-a", last=clock.last, wall=lambda: wall[0])
    assert issued == sorted(issued) and len(set(issued)) == len(issued)


def test_counter_overflow_moves_one_millisecond_forward():
    clock = Clock("dev-a", last=format_hlc(1000, MAX_COUNTER, "dev-a"), wall=lambda: 0)
    nxt = parse(clock.now())
    assert (nxt.millis, nxt.counter) == (1001, 0)


def test_observe_advances_past_a_remote_clock_far_ahead():
    clock = Clock("dev-a", wall=lambda: 1000)
    remote = format_hlc(5000, 7, "server")
    assert parse(clock.observe(remote))[:2] == (5000, 8)
    assert parse(clock.now())[:2] == (5000, 9)


def test_shift_and_bad_node():
    assert parse(shift("2025-03-01T00:00:00.000Z-0003-server", 300_000)).millis \
        == parse("2025-03-01T00:05:00.000Z-0000-server").millis
    with pytest.raises(ValueError):
        Clock("Bad Node")

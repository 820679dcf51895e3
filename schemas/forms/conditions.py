"""The rule language's building blocks: conditions (skip logic, checks) are
data, compiled by the compiler into closures fn(vals, parent) -> bool made
here. Each is written out per operator because conditions run on every
validation; ``_WORDS`` words them for messages."""
from __future__ import annotations

import operator

def _getter(level, name, part=None):
    if part:
        def get_part(vals, parent):
            point = (vals if level == 0 else parent).get(name)
            return point.get(part) if type(point) is dict else None
        return get_part
    if level == 0:
        return lambda vals, parent: vals.get(name)
    return lambda vals, parent: parent.get(name)


def _ordered(op):
    """An ordering comparison: false with a null (or values of unlike types)."""
    def compare(a, b):
        if a is None or b is None:
            return False
        try:
            return op(a, b)
        except TypeError:
            return False
    return compare


def _literal_test(op, name, value):
    """fn(vals, parent) comparing a field of `vals` with a literal; written
    out per operator because conditions run on every validation."""
    if op == "eq":
        return lambda v, p: v.get(name) == value
    if op == "ne":
        return lambda v, p: v.get(name) != value
    if op == "in":
        return lambda v, p: v.get(name) in value
    if op == "contains":
        def contains(v, p):
            x = v.get(name)
            return type(x) is list and value in x
        return contains
    if value is None:
        return lambda v, p: False
    cmp = _ORDER[op]

    def ordered(v, p):
        x = v.get(name)
        if x is None:
            return False
        try:
            return cmp(x, value)
        except TypeError:
            return False
    return ordered


def _all_of(tests):
    """fn(vals, parent): every test holds (two tests, the usual case, without a loop)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda v, p: bool(first(v, p) and second(v, p))

    def every(v, p):
        for t in tests:
            if not t(v, p):
                return False
        return True
    return every


def _any_of(tests):
    """fn(vals, parent): some test holds (two tests without a loop)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda v, p: bool(first(v, p) or second(v, p))

    def some(v, p):
        for t in tests:
            if t(v, p):
                return True
        return False
    return some


def _any_contained(name, values):
    """fn(vals, parent): the list `name` holds one of `values`; the same
    answer, in the same order of tests, as an "any" of "contains"."""
    def contained(v, p):
        x = v.get(name)
        if type(x) is list:
            for value in values:
                if value in x:
                    return True
        return False
    return contained


def _leaves(leaves, every):
    """fn(vals, parent): all (or any) of the (name, op, literal, ordered)
    leaves hold, each as _literal_test answers it."""
    def test(v, p):
        for name, op, value, ordered in leaves:
            x = v.get(name)
            if not ordered:
                holds = op(x, value)
            elif x is None or value is None:
                holds = False
            else:
                try:
                    holds = op(x, value)
                except TypeError:
                    holds = False
            if not holds if every else holds:
                return not every
        return every
    return test


def _fields_ordered(cmp, name, other):
    """fn(vals, parent) comparing two fields of `vals`, as _ordered does."""
    def ordered(v, p):
        a, b = v.get(name), v.get(other)
        if a is None or b is None:
            return False
        try:
            return cmp(a, b)
        except TypeError:
            return False
    return ordered


_ORDER = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
_SIMPLE = {"eq": operator.eq, "ne": operator.ne, **_ORDER}   # a literal test in one call
_COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "in": lambda a, b: isinstance(b, (list, tuple)) and a in b,
    "gt": _ordered(operator.gt),
    "ge": _ordered(operator.ge),
    "lt": _ordered(operator.lt),
    "le": _ordered(operator.le),
    "contains": lambda a, b: isinstance(a, list) and b in a,
}
_WORDS = {  # operator: (holds, does not hold)
    "eq": ("is {v}", "is not {v}"),
    "ne": ("is not {v}", "is {v}"),
    "in": ("is one of: {v}", "is not one of: {v}"),
    "gt": ("is greater than {v}", "is not greater than {v}"),
    "ge": ("is at least {v}", "is not at least {v}"),
    "lt": ("is less than {v}", "is not less than {v}"),
    "le": ("is at most {v}", "is not at most {v}"),
    "contains": ("includes {v}", "does not include {v}"),
}

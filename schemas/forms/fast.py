"""The fast paths of validation, and what they must agree with.

``_loader`` loads a group's fields without marshmallow's per-field
machinery; ``_complete`` checks a whole clean record's rules with compiled
closures. Both must give exactly what the general path gives: the schema
(schemas/forms/values.py: ``_Parsers``, ``FormField``) and the rule loop
(schemas/forms/evaluate.py: ``_evaluate``). At the first doubt they return
None and the general path, the single source of error messages, answers.
tests/test_forms_fast.py holds the two to the same answers, data, key order,
errors and warnings.
"""
from __future__ import annotations

import datetime as dt
import json
import operator

from marshmallow import ValidationError

from .evaluate import _add, _bounded, _evaluate, _nest
from .model import Result
from .values import _PARSERS, INT_LIMIT, UUID_RE, _Parsers

_NO_VALUE = object()
_FLOAT_MAX = 1.7976931348623157e308   # a float between ±this is finite
_result = tuple.__new__   # Result(...) without the named tuple's own __new__


class _Doubt(Exception):
    """A fast converter cannot vouch for a value: the schema must decide."""


_DOUBT = _Doubt()
_REAL_DATES: set = set()    # "YYYY-MM-DD" texts already found to be real dates


def _real_date(value) -> bool:
    """What _Parsers.date accepts, remembered: the same dates come back in
    record after record, and the regex and parse cost more than a set lookup."""
    if value in _REAL_DATES:
        return True
    try:
        _Parsers.date(None, value)
    except ValidationError:
        return False
    if len(_REAL_DATES) >= 4096:
        _REAL_DATES.clear()
    _REAL_DATES.add(value)
    return True


def _converter(spec, checks):
    """value -> canonical value for one non-null input field, raising at any
    doubt. The common clean case is one specialised test; anything else runs
    the FormField's very parser and static checks (`checks`), so a value is
    accepted only when the schema would accept it, in the same form."""
    if spec.type == "repeat":
        return _entries_converter(spec, checks)
    parse = _PARSERS[spec.type]

    def general(value):
        value = parse(spec, value)
        for check in checks:
            if check(value):
                raise _DOUBT
        return value

    kind = spec.type
    lo, hi = spec.limits if checks else (None, None)   # a warn field's checks come later
    if kind == "integer":
        lo = 1 - INT_LIMIT if lo is None else max(lo, 1 - INT_LIMIT)
        hi = INT_LIMIT - 1 if hi is None else min(hi, INT_LIMIT - 1)

        def integer(value):
            if type(value) is int and lo <= value <= hi:
                return value
            return general(value)
        return integer
    if kind == "decimal":
        lo = -_FLOAT_MAX if lo is None else lo
        hi = _FLOAT_MAX if hi is None else hi

        def decimal(value):
            if type(value) is float and lo <= value <= hi:   # NaN and ±inf fail
                return value
            return general(value)
        return decimal
    if kind == "date":
        # A date is ASCII digits and "-": every one sorts after "" and before "~".
        lo = "" if lo is None else lo
        hi = "~" if hi is None else hi

        def date(value):
            if type(value) is str and _real_date(value) and lo <= value <= hi:
                return value
            return general(value)
        return date
    if kind == "ref":
        match = UUID_RE.match

        def ref(value):
            if type(value) is str and match(value):
                return value.lower()
            raise _DOUBT
        return ref
    if kind == "multi_choice":
        order = spec.choice_order

        def multi_choice(value):
            if type(value) is not list:
                raise _DOUBT
            for item in value:
                if type(item) is not str or item not in order:
                    raise _DOUBT
            if len(value) > 1:
                if len(set(value)) != len(value):
                    raise _DOUBT
                value = sorted(value, key=order.__getitem__)
            else:
                value = list(value)
            for check in checks:     # counts
                if check(value):
                    raise _DOUBT
            return value
        return multi_choice
    return general


def _entries_converter(spec, checks):
    """A repeat's entries, each loaded fast (raising at the first doubt)."""
    group = spec.group

    def entries(value):
        if type(value) is not list:
            raise _DOUBT
        inputs, load = group.inputs, group.load
        out = []
        for entry in value:
            if type(entry) is not dict or not entry.keys() <= inputs:
                raise _DOUBT
            clean = load(entry)
            if clean is None:
                raise _DOUBT
            out.append(clean)
        for check in checks:     # counts
            if check(out):
                raise _DOUBT
        return out
    return entries


_CHOICE, _BOOLEAN, _NUMBER, _DATE, _OTHER = range(5)


def _values(names):
    """fn(data) -> the tuple of data's values for `names` (KeyError if one is
    absent): operator.itemgetter, which gives a bare value for one name."""
    if len(names) == 1:
        name = names[0]
        return lambda data: (data[name],)
    if not names:
        return lambda data: ()
    return operator.itemgetter(*names)


class _Shape:
    """The first tier's plan for records with one tuple of keys: the fields
    present, by kind of test, with what they are tested against."""

    __slots__ = ("choices", "flags", "numbers", "dates", "others", "order")

    def __init__(self, keys, by_name, order):
        plans = [by_name[k] for k in keys]
        self.order = order   # the keys in the schema's order; None: already in it
        self.choices = tuple((p[1], p[2]) for p in plans if p[0] == _CHOICE)
        self.flags = tuple(p[1] for p in plans if p[0] == _BOOLEAN)
        self.numbers = tuple(p[1:] for p in plans if p[0] == _NUMBER)
        self.dates = tuple(p[1:] for p in plans if p[0] == _DATE)
        self.others = tuple((p[1], p[2]) for p in plans if p[0] == _OTHER)


def _loader(group):
    """fn(data, whole=False) -> ``schema.load(data, partial=True)`` for data
    whose every field is valid, else None; with `whole`, None also when data
    has a key that is no input field.

    The validation hot path: marshmallow's per-field machinery costs ~3 µs a
    field. This runs the same checks in two tiers. The first takes the
    common case: known keys (planned once per tuple of keys) and every value
    of its canonical type and within its literal limits, tested a kind at a
    time (a choice a set lookup, a number a range); the data is copied whole,
    in the schema's key order, and the few values that need it (a ref
    lowercased, a multi_choice ordered) converted. Anything else goes to the second
    tier, a converter per field in schema order (so the dict is the same,
    key order too). At the first doubt it returns None and the schema, the
    single source of error messages, runs instead. tests/test_forms_fast.py
    holds the two to the same answers.
    """
    steps, by_name = [], {}
    for name, field in group.schema.load_fields.items():
        spec, checks = field.spec, tuple(field._checks)
        kind = spec.type
        lo, hi = spec.limits if checks else (None, None)   # a warn field's checks come later
        if kind == "choice":
            allowed = frozenset(spec.choice_order)
            steps.append((name, _CHOICE, allowed))
            by_name[name] = (_CHOICE, name, allowed)
            continue
        if kind == "boolean":
            steps.append((name, _BOOLEAN, None))
            by_name[name] = (_BOOLEAN, name)
            continue
        convert = _converter(spec, checks)
        steps.append((name, _OTHER, convert))
        if kind == "integer":
            by_name[name] = (_NUMBER, name, int, 1 - INT_LIMIT if lo is None else max(lo, 1 - INT_LIMIT),
                             INT_LIMIT - 1 if hi is None else min(hi, INT_LIMIT - 1))
        elif kind == "decimal":   # NaN and ±inf fail these limits
            by_name[name] = (_NUMBER, name, float, -_FLOAT_MAX if lo is None else lo,
                             _FLOAT_MAX if hi is None else hi)
        elif kind == "date":
            # A date is ASCII digits and "-": every one sorts after "" and before "~".
            by_name[name] = (_DATE, name, "" if lo is None else lo, "~" if hi is None else hi)
        else:
            by_name[name] = (_OTHER, name, convert)
    steps, inputs = tuple(steps), group.inputs
    position = {name: i for i, (name, _, _) in enumerate(steps)}
    shapes: dict[tuple, _Shape | None] = {}   # None: some key unknown

    def shape_of(keys):
        positions = [position.get(k, -1) for k in keys]
        shape = None
        if -1 not in positions:
            order = None if positions == sorted(positions) else \
                tuple(k for _, k in sorted(zip(positions, keys)))
            shape = _Shape(keys, by_name, order)
        if len(shapes) >= 1024:
            shapes.clear()
        shapes[keys] = shape
        return shape

    def load(data, whole=False):
        keys = tuple(data)
        shape = shapes.get(keys) or keys not in shapes and shape_of(keys)
        if not shape:
            return None if whole and not data.keys() <= inputs else load_each(data)
        for name, allowed in shape.choices:
            value = data[name]
            if type(value) is not str or value not in allowed:
                return load_each(data)
        for name in shape.flags:
            value = data[name]
            if value is not True and value is not False:
                return load_each(data)
        for name, kind, lo, hi in shape.numbers:
            value = data[name]
            if type(value) is not kind or not lo <= value <= hi:
                return load_each(data)
        for name, lo, hi in shape.dates:
            value = data[name]
            if type(value) is not str or not (value in _REAL_DATES or _real_date(value)) \
                    or not lo <= value <= hi:
                return load_each(data)
        out = dict(data) if shape.order is None else {k: data[k] for k in shape.order}
        try:
            for name, convert in shape.others:
                value = out[name]
                if value is not None:
                    out[name] = convert(value)
        except Exception:   # _Doubt, ValidationError or anything odd: the schema decides
            return None
        return out

    def load_each(data):
        out = {}
        get = data.get
        try:
            for name, kind, arg in steps:
                value = get(name, _NO_VALUE)
                if value is _NO_VALUE:
                    continue
                if value is not None:
                    if kind is _CHOICE:
                        if type(value) is not str or value not in arg:
                            return None
                    elif kind is _BOOLEAN:
                        if value is not True and value is not False:
                            return None
                    else:
                        value = arg(value)
                out[name] = value
        except Exception:   # _Doubt, ValidationError or anything odd: the schema decides
            return None
        return out
    return load


def _complete(group):
    """fn(data, today) -> the Result of validating a whole record, or None
    when the record has any error (then the general path words them).

    The rules of ``_evaluate`` for a complete record without type errors,
    compiled: fields sharing a skip-logic condition test it once, required
    fields are read in one itemgetter, "today" limits are computed once per
    day and the other bounds are closures; only warnings (which the clean
    case may have) are worded here, in the order the general path adds them.
    """
    load, derivers = group.load, group.derivers
    # What CompiledForm.compute answers, from the values derived here; not
    # when a repeat has computed fields of its own (compute derives those).
    computed_names = tuple(s.name for s in group.specs if s.type == "computed")
    own_computed = not any(r.group.computed for r in group.repeats)
    required, by_condition = [], {}
    for spec in group.rules:
        if spec.relevant is None:
            required.append(spec)
            continue
        key = json.dumps(spec.definition["relevant"], sort_keys=True)
        test, names, needed = by_condition.setdefault(key, (spec.relevant, [], []))
        names.append(spec.name)
        if spec.required:
            needed.append(spec)
    required = _filled(required)
    conditional = tuple((test, tuple(names), frozenset(names), _filled(needed) if needed else None)
                        for test, names, needed in by_condition.values())
    today_bounds, on_today, on_fields, warn_specs = [], [], [], []
    for spec in group.bounded:
        if spec.warn:
            warn_specs.append(spec)
            continue
        for b in spec.bounds:
            if b.today and spec.type != "computed":   # a date or datetime text
                today_bounds.append(b)
                on_today.append((spec.name, len(today_bounds) - 1, b.side == "min"))
            else:
                on_fields.append((spec.name, _bound_test(spec, b)))
    today_bounds, on_today, on_fields = tuple(today_bounds), tuple(on_today), tuple(on_fields)
    memo = [(None, ())]   # (today, the limit of each "today" bound)
    repeats = tuple(group.repeats)
    checks = tuple((c.when, c.test, c.warn, c.field, c.message) for c in group.checks)

    def validate(data, today):
        clean = load(data, True)
        if clean is None:
            return None
        if derivers:
            vals = dict(clean)
            for derive in derivers:
                derive(vals, None)
        else:
            vals = clean
        if not required(vals):
            return None
        get = vals.get
        for test, names, name_set, needed in conditional:
            if needed is None and name_set.isdisjoint(vals):
                continue    # asked or not, nothing to check
            if test(vals, None):
                if needed is not None and not needed(vals):
                    return None
            else:
                for name in names:
                    value = get(name)
                    if not (value is None or value == "" or value == []):
                        return None
        if on_today:
            day, limits = memo[0]
            if day != today:
                limits = tuple(b.limit(None, None, today) for b in today_bounds)
                memo[0] = today, limits
            for name, index, is_min in on_today:
                value, limit = get(name), limits[index]
                if value is not None and limit is not None and (
                        value[:10] < limit if is_min else value[:10] > limit):
                    return None
        for name, violated in on_fields:
            value = get(name)
            if value is not None and violated(vals, value, today):
                return None
        warnings = {}
        for spec in warn_specs:
            _bounded(spec, vals, None, None, today, (), warnings)
        for spec in repeats:
            entries = clean.get(spec.name)
            if not entries:
                continue
            for index, entry in enumerate(entries):
                entry_errors, entry_warnings = {}, {}
                _evaluate(spec.group, entry, entry, vals, True, None, today,
                          entry_errors, entry_warnings, ())
                if entry_errors:
                    return None
                if entry_warnings:
                    _nest(warnings, spec.name, str(index), entry_warnings)
        for when, test, warn, field, message in checks:
            if when is not None and not when(vals, None):
                continue
            if not test(vals, None):
                if not warn:
                    return None
                _add(warnings, field, message)
        computed = {name: vals[name] for name in computed_names} if own_computed else None
        return _result(Result, (clean, {}, warnings, computed))
    return validate


def _filled(specs):
    """fn(vals) -> whether each of `specs` has a value in loaded `vals` (not
    absent, null, "" or []). Only text can load as "", and only a list as []."""
    values = _values([spec.name for spec in specs])
    emptiable = tuple(spec.name for spec in specs
                      if spec.type in ("string", "text", "multi_choice", "repeat"))

    def filled(vals):
        try:
            if None in values(vals):
                return False
        except KeyError:
            return False
        for name in emptiable:
            if not vals[name]:
                return False
        return True
    return filled


def _bound_test(spec, b):
    """fn(vals, value, today) -> whether a bound on today or another field
    is violated, as b.limit and b.violated say; a date bounded by another
    date field (perhaps a few days or weeks on) is written out."""
    other, other_type = b.source or (None, None)
    if (b.kind == "date" and other is not None and spec.type in ("date", "datetime")
            and b.offset is None and other_type == "date"):
        is_min = b.side == "min"

        def after_date(vals, value, today):
            # A loaded date is its own isoformat(): the limit is the value.
            limit = vals.get(other)
            if limit is None:
                return False
            return value[:10] < limit if is_min else value[:10] > limit
        return after_date
    if (b.kind == "date" and other is not None and spec.type in ("date", "datetime")
            and (b.offset is None or b.offset[2] in "dw")):
        delta = None
        if b.offset:
            sign, n, unit = b.offset
            delta = dt.timedelta(days=-n if sign == "-" else n) * (7 if unit == "w" else 1)
        is_min, fromisoformat = b.side == "min", dt.date.fromisoformat

        def after_field(vals, value, today):
            start = vals.get(other)
            if start is None:
                return False
            try:
                day = fromisoformat(start[:10])
                limit = (day + delta if delta else day).isoformat()
            except (TypeError, ValueError, OverflowError):
                return False
            return value[:10] < limit if is_min else value[:10] > limit
        return after_field

    def violated(vals, value, today):
        limit = b.limit(vals, None, today)
        return limit is not None and b.violated(value, limit)
    return violated

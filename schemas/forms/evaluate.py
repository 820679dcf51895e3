"""The general path of validation: computed fields derived, and the
cross-field rules of a group (skip logic, required fields, bounds on today
or another field, checks) evaluated with their messages.

``FAST`` switches the fast paths (schemas/forms/fast.py and the written-out
rule loop here) on; it lives here, the lowest module that reads it, and
``schemas.forms.FAST`` reads and sets this very flag.
"""
from __future__ import annotations

import inspect

from .values import _blank

REQUIRED = "is required"
# The exceptions a compute function's input may raise, making its result
# null (as computations.Function.__call__ catches them).
_COMPUTE_ERRORS = (TypeError, ValueError, AttributeError, OverflowError)

# The fast paths of validation (False forces the schema and the general rule
# loop; tests/test_forms_fast.py compares the two).
FAST = True


def _derive(group, vals, parent):
    """Add the group's computed values to `vals` (null when not relevant)."""
    for derive in group.derivers:
        derive(vals, parent)


def _deriver(spec):
    """fn(vals, parent) setting one computed value: what spec.function
    answers (null when an input is null or unreadable), without its generic
    call; a function of two fields of the record, the usual case, is written
    out."""
    name, fn, relevant, inputs = spec.name, spec.function.fn, spec.relevant, spec.inputs
    # Parameters whose null is passed on as None (computations.Function.optional).
    optional = spec.function.optional
    params = inspect.signature(fn).parameters
    if (relevant is None and not optional and len(inputs) == 2 and inputs[0][1] == inputs[1][1] == 0
            and sorted(params) == sorted(i[0] for i in inputs)
            and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())):
        # Called positionally, in the order the function names its parameters.
        order = list(params)
        (_, _, f1), (_, _, f2) = sorted(inputs, key=lambda i: order.index(i[0]))

        def derive_two(vals, parent):
            a, b = vals.get(f1), vals.get(f2)
            if a is None or b is None:
                vals[name] = None
                return
            try:
                vals[name] = fn(a, b)
            except _COMPUTE_ERRORS:
                vals[name] = None
        return derive_two

    def derive(vals, parent):
        if relevant is not None and not relevant(vals, parent):
            vals[name] = None
            return
        args = {}
        for param, level, field in inputs:
            value = (vals if level == 0 else parent).get(field)
            if value is None and param not in optional:
                vals[name] = None
                return
            args[param] = value
        try:
            vals[name] = fn(**args)
        except _COMPUTE_ERRORS:
            vals[name] = None
    return derive


def _add(target, name, message):
    target.setdefault(name, []).append(message)


def _evaluate(group, clean, raw, parent, complete, present, today, errors, warnings, bad):
    """The cross-field rules of one group (the record, or one repeat entry).

    `complete`: every field of the group is here (absent means no value);
    `present`: the top-level fields of a change (None for a whole record);
    `bad`: top-level fields with type errors, whose rules are skipped.
    """
    if group.computed:
        vals = dict(clean)
        _derive(group, vals, parent)
    else:
        vals = clean
    rules = group.rules
    if FAST and complete and present is None and not bad:
        # A whole record (not a repeat entry of a change) without type errors,
        # as every push's merged record:
        # every rule applies; the loop below, written out for speed.
        for spec in rules:
            relevant, value = spec.relevant, vals.get(spec.name)
            if relevant is not None and not relevant(vals, parent):
                if not (value is None or value == "" or value == []):
                    _add(errors, spec.name, spec.rel_text)
            elif spec.required and (value is None or value == "" or value == []):
                _add(errors, spec.name, REQUIRED)
        rules = ()
    for spec in rules:
        name = spec.name
        if not complete and name not in raw:
            continue
        if name in bad:
            continue
        known = spec.relevant is None or (
            (present is None or spec.rel_gate <= present) and (not bad or spec.rel_gate.isdisjoint(bad)))
        if not known:
            continue
        asked = spec.relevant is None or spec.relevant(vals, parent)
        value = vals.get(name)
        if not asked:
            if not _blank(value):
                _add(errors, name, spec.rel_text)
        elif spec.required and _blank(value):
            if complete or name in raw:
                _add(errors, name, REQUIRED)
    for spec in group.bounded:
        _bounded(spec, vals, parent, present, today, bad, warnings if spec.warn else errors)
    for spec in group.repeats:
        entries = clean.get(spec.name)
        if not entries or spec.name in errors:
            continue
        for index, entry in enumerate(entries):
            entry_errors, entry_warnings = {}, {}
            _evaluate(spec.group, entry, entry, vals, True, present, today,
                      entry_errors, entry_warnings, bad)
            if entry_errors:
                _nest(errors, spec.name, str(index), entry_errors)
            if entry_warnings:
                _nest(warnings, spec.name, str(index), entry_warnings)
    for check in group.checks:
        if check.field in errors:
            continue    # one problem at a time: "is required" says enough
        if present is not None and not check.gate <= present:
            continue
        if bad and not check.gate.isdisjoint(bad):
            continue
        if check.when is not None and not check.when(vals, parent):
            continue
        if not check.test(vals, parent):
            _add(warnings if check.warn else errors, check.field, check.message)


def _bounded(spec, vals, parent, present, today, bad, target):
    """A field's bounds on "today" or another field, and a warn-only field's
    static checks: their messages go to `target`."""
    value = vals.get(spec.name)
    if value is None or spec.name in bad:
        return
    if spec.warn and spec.type != "computed":
        for check in spec.static:
            message = check(value)
            if message:
                _add(target, spec.name, message)
    for b in spec.bounds:
        if present is not None and not b.gate <= present:
            continue
        if bad and not b.gate.isdisjoint(bad):
            continue
        limit = b.limit(vals, parent, today)
        if limit is not None and b.violated(value, limit):
            _add(target, spec.name, b.message(limit))


def _nest(target, name, index, messages):
    """Put an entry's messages under a repeat; the repeat's own messages, if
    any, move to the key "_"."""
    holder = target.get(name)
    if holder is None:
        holder = target[name] = {}
    elif isinstance(holder, list):
        holder = target[name] = {"_": holder}
    holder[index] = messages

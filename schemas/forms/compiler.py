"""The compiler: checks a definition and builds its groups of fields, with
their computed fields ordered, skip logic, bounds and checks compiled to
closures. Every problem is a FormDefinitionError naming the source and the
field.
"""
from __future__ import annotations

import json
import math
import re

from marshmallow import ValidationError

from .. import compute as computations
from .bounds import _Bound, _offset_words, _static_bound
from .conditions import (
    _COMPARE, _ORDER, _SIMPLE, _WORDS, _all_of, _any_contained, _any_of, _fields_ordered,
    _getter, _leaves, _literal_test,
)
from .evaluate import _deriver
from .fast import _loader
from .messages import CONDITION_WORDS, EMPTY, JOINERS, LANGUAGES, NOT_ASKED, english, text_problem
from .model import FormDefinitionError, _Check, _expand, _Group, _Spec
from .values import _PARSERS, _fmt, _number, _Parsers, _schema

TYPES = (
    "string", "text", "integer", "decimal", "boolean", "date", "time", "datetime",
    "choice", "multi_choice", "ref", "geopoint", "repeat", "computed",
)
COMMON_KEYS = frozenset({"name", "type", "label", "hint", "unit", "required", "relevant", "warn"})
TYPE_KEYS = {
    "string": {"min_length", "max_length", "pattern"},
    "text": {"min_length", "max_length", "pattern"},
    "integer": {"min", "max"},
    "decimal": {"min", "max"},
    "date": {"min", "max"},
    "datetime": {"min", "max"},
    "time": {"min", "max"},
    "boolean": set(),
    "choice": {"choices"},
    "multi_choice": {"choices", "min_count", "max_count"},
    "ref": {"ref"},
    "geopoint": set(),
    "repeat": {"fields", "min_count", "max_count", "checks"},
    "computed": {"compute", "min", "max"},
}
FORM_KEYS = frozenset({"id", "version", "title", "restricted_to", "fields", "checks"})
CHECK_KEYS = frozenset({"field", "assert", "when", "message", "warn"})
OPERATORS = ("eq", "ne", "in", "gt", "ge", "lt", "le", "contains")

# Same rule as wire.FIELD_NAME_RE: field names travel as keys of clocks/bases.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
FORM_ID_RE = NAME_RE
TODAY_RE = re.compile(r"^today(?:([+-])(\d{1,5})([dwmy]))?\Z")
OFFSET_RE = re.compile(r"^([+-])(\d{1,5})([dwmy])\Z")
GEOPOINT_PARTS = ("lat", "lon", "accuracy_m")


class _Compiler:
    """Checks a definition and builds its groups; every problem is a
    FormDefinitionError naming the source and the field."""

    def __init__(self, source):
        self.source = source
        self.uses_today = False
        # The form's own messages in other languages: {English: {lang: text}}
        # (check messages given as objects, "is not asked when …").
        self.texts = {}

    def fail(self, where, problem):
        where = f" {where}:" if where else ""
        raise FormDefinitionError(f"{self.source}:{where} {problem}")

    # -- structure
    def form(self, d):
        for key in d:
            if key not in FORM_KEYS:
                self.fail("", f"unknown key {key!r} (allowed: {', '.join(sorted(FORM_KEYS))})")
        for key in ("id", "version", "title", "fields"):
            if key not in d:
                self.fail("", f"lacks {key!r}")
        if not isinstance(d["id"], str) or not FORM_ID_RE.match(d["id"]):
            self.fail("", "id must be lowercase letters, digits and _ (at most 64), starting with a letter")
        if type(d["version"]) is not int or d["version"] < 1:
            self.fail("", "version must be a whole number of at least 1")
        if isinstance(d["title"], dict):
            problem = text_problem(d["title"])
            if problem:
                self.fail("", f"title {problem}")
        elif not isinstance(d["title"], str) or not d["title"].strip():
            self.fail("", "title must be non-empty text")
        roles = d.get("restricted_to")
        if roles is not None and (not isinstance(roles, list) or not roles
                                  or not all(isinstance(r, str) and r for r in roles)):
            self.fail("", "restricted_to must be null or a non-empty list of role names")
        top = self.group(d["fields"], None, "")
        self.computed(top)
        for spec in top.specs:
            if spec.type == "repeat":
                self.computed(spec.group)
        self.rules(top)
        for spec in top.specs:
            if spec.type == "repeat":
                self.rules(spec.group)
        checks = d.get("checks", [])
        if not isinstance(checks, list):
            self.fail("", "checks must be a list")
        top.checks = [self.check(c, i, top) for i, c in enumerate(checks)]
        for spec in top.specs:
            if spec.type == "repeat":
                # A repeat's own checks: per entry, reading its fields and the record's.
                entry_checks = spec.definition.get("checks", [])
                if not isinstance(entry_checks, list):
                    self.fail(f"field '{spec.path}'", "checks must be a list")
                spec.group.checks = [self.check(c, i, spec.group, f"field '{spec.path}' ")
                                     for i, c in enumerate(entry_checks)]
        return top

    def group(self, items, parent, prefix):
        where = f"field '{prefix[:-1]}'" if prefix else ""
        if not isinstance(items, list) or not items:
            self.fail(where, "fields must be a non-empty list")
        group = _Group(parent)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                self.fail(where, f"fields[{index}] must be an object")
            name = item.get("name")
            if not isinstance(name, str) or not NAME_RE.match(name):
                self.fail(f"{where or ''} fields[{index}]".strip(),
                          f"name {name!r} must be lowercase letters, digits and _ "
                          f"(at most 64), starting with a letter")
            if name in group.by_name:
                self.fail(f"field '{prefix}{name}'", "is defined twice")
            spec = self.field(item, prefix + name, parent)
            group.specs.append(spec)
            group.by_name[name] = spec
        group.inputs = frozenset(s.name for s in group.specs if s.type != "computed")
        group.derived = frozenset(s.name for s in group.specs if s.type == "computed")
        group.repeats = [s for s in group.specs if s.type == "repeat"]
        return group

    def field(self, d, path, parent):
        where = f"field '{path}'"
        kind = d.get("type")
        if not isinstance(kind, str) or kind not in TYPE_KEYS:
            self.fail(where, f"unknown type {kind!r} (known: {', '.join(TYPES)})")
        allowed = COMMON_KEYS | TYPE_KEYS[kind]
        for key in d:
            if key not in allowed:
                if any(key in keys for keys in TYPE_KEYS.values()):
                    self.fail(where, f"{key!r} does not apply to a {kind} field")
                self.fail(where, f"unknown key {key!r}")
        spec = _Spec(d, path)
        for flag in ("required", "warn"):
            if flag in d and type(d[flag]) is not bool:
                self.fail(where, f"{flag} must be true or false")
        spec.required, spec.warn = d.get("required", False), d.get("warn", False)
        for key in ("label", "hint", "unit"):
            problem = text_problem(d[key]) if key in d else None
            if problem:
                self.fail(where, f"{key} {problem}")
        if kind == "computed" and spec.required:
            self.fail(where, "a computed field cannot be required")
        for low, high in (("min_length", "max_length"), ("min_count", "max_count")):
            for key in (low, high):
                if key in d and (type(d[key]) is not int or d[key] < 0):
                    self.fail(where, f"{key} must be a whole number of at least 0")
            if low in d and high in d and d[low] > d[high]:
                self.fail(where, f"{low} is larger than {high}")
        if "min_length" in d:
            n = d["min_length"]
            spec.static.append(lambda v: f"must be at least {n} characters long" if len(v) < n else None)
        if "max_length" in d:
            n2 = d["max_length"]
            spec.static.append(lambda v: f"must be at most {n2} characters long" if len(v) > n2 else None)
        if "pattern" in d:
            try:
                regex = re.compile(d["pattern"]) if isinstance(d["pattern"], str) else None
            except re.error as e:
                self.fail(where, f"pattern is not a valid regular expression ({e})")
            if regex is None:
                self.fail(where, "pattern must be text")
            spec.static.append(lambda v: None if regex.fullmatch(v) else "is not in the expected format")
        if kind in ("choice", "multi_choice"):
            self.choices(spec, d, where)
        if kind == "ref" and (not isinstance(d.get("ref"), str) or not FORM_ID_RE.match(d["ref"])):
            self.fail(where, "a ref field needs 'ref': the id of the form it points to")
        if kind == "repeat":
            if parent is not None:
                self.fail(where, "a repeat cannot hold another repeat")
            spec.group = None  # built once the parent group exists (see rules)
        counted = "entries" if kind == "repeat" else "choices selected"
        if "min_count" in d:
            c1 = d["min_count"]
            spec.static.append(lambda v: f"must have at least {c1} {counted}" if len(v) < c1 else None)
        if "max_count" in d:
            c2 = d["max_count"]
            spec.static.append(lambda v: f"must have at most {c2} {counted}" if len(v) > c2 else None)
        if kind == "computed":
            c = d.get("compute")
            if not isinstance(c, dict) or set(c) - {"function", "inputs"} or "function" not in c:
                self.fail(where, "compute must be {\"function\": name, \"inputs\": {parameter: field}}")
        return spec

    def choices(self, spec, d, where):
        choices = d.get("choices")
        if not isinstance(choices, list) or not choices:
            self.fail(where, "a choice field needs a non-empty list of choices")
        for index, c in enumerate(choices):
            if not isinstance(c, dict) or set(c) - {"value", "label"} \
                    or not isinstance(c.get("value"), str) or not c["value"] \
                    or text_problem(c.get("label", "")):
                self.fail(where, f"choices[{index}] must be {{\"value\": text, \"label\": text}} "
                                 f"(a label may be {{\"en\": text, \"vi\": text}})")
            if c["value"] in spec.choice_order:
                self.fail(where, f"choice {c['value']!r} is listed twice")
            spec.choice_order[c["value"]] = index
        spec.choice_list = ", ".join(spec.choice_order)
        spec.choice_message = f"must be one of: {spec.choice_list}"

    # -- computed fields
    def computed(self, group):
        """Resolve computed inputs, order them so each follows what it reads,
        and record the input fields each is derived from."""
        for spec in group.specs:
            if spec.type == "repeat" and spec.group is None:
                spec.group = self.group(spec.definition.get("fields"), group, spec.path + ".")
        pending = {}
        for spec in group.specs:
            if spec.type != "computed":
                continue
            where = f"field '{spec.path}'"
            c = spec.definition["compute"]
            name = c["function"]
            if not isinstance(name, str):
                self.fail(where, "compute function must be a name")
            if name in computations.RESERVED:
                self.fail(where, f"function {name!r} {computations.RESERVED[name]}")
            function = computations.REGISTRY.get(name)
            if function is None:
                self.fail(where, f"unknown compute function {name!r} "
                                 f"(known: {', '.join(sorted(computations.REGISTRY))})")
            inputs = c.get("inputs", {})
            if not isinstance(inputs, dict) or set(inputs) != set(function.params):
                self.fail(where, f"{name} takes inputs {', '.join(function.params)}")
            resolved, reads, definitions = [], set(), {}
            for param, field_name in inputs.items():
                found = group.resolve(field_name) if isinstance(field_name, str) else None
                if found is None:
                    self.fail(where, f"input {param!r} names a missing field {field_name!r}")
                level, other = found
                other_type = other.definition.get("type")
                if other_type == "computed":
                    other_type = computations.REGISTRY[other.definition["compute"]["function"]].result
                if other_type not in function.params[param]:
                    self.fail(where, f"input {param!r} must be a {' or '.join(sorted(function.params[param]))} "
                                     f"field, not {field_name!r} ({other_type})")
                resolved.append((param, level, field_name))
                reads.add((level, other))
                definitions[param] = other.definition
            if function.check:
                problem = function.check(definitions)
                if problem:
                    self.fail(where, problem)
            spec.function, spec.inputs = function, tuple(resolved)
            spec.result_type = function.result
            if "relevant" in spec.definition:
                spec.relevant, rel_reads = self.condition(spec.definition["relevant"], group, where)
                reads |= rel_reads
            pending[spec.name] = (spec, reads)
        # Order: each computed field after the computed fields it reads.
        done, order = set(), []

        def visit(name, trail):
            if name in done:
                return
            if name in trail:
                self.fail(f"field '{pending[name][0].path}'", "computed fields depend on each other in a cycle")
            spec, reads = pending[name]
            for level, other in reads:
                if level == 0 and other.name in pending:
                    visit(other.name, trail | {name})
            spec.reads = frozenset(_expand(reads))
            done.add(name)
            order.append(spec)

        for name in pending:
            visit(name, frozenset())
        group.computed = order
        group.derivers = tuple(_deriver(spec) for spec in order)

    # -- skip logic, bounds, checks
    def rules(self, group):
        for spec in group.specs:
            where = f"field '{spec.path}'"
            d = spec.definition
            if "relevant" in d:
                if spec.relevant is None:
                    spec.relevant, reads = self.condition(d["relevant"], group, where)
                else:  # computed: compiled with its inputs
                    reads = {(lvl, s) for lvl, s in spec.reads}
                spec.rel_gate = group.gate(reads)
                spec.rel_text = "is not asked when " + self.describe(d["relevant"], False, True)
                self.texts[spec.rel_text] = {
                    lang: NOT_ASKED[lang].format(cond=self.describe(d["relevant"], False, True, lang))
                    for lang in LANGUAGES if lang != "en"}
            for side in ("min", "max"):
                if side in d:
                    spec.bounds.append(self.bound(spec, side, d[side], group, where))
            self.min_le_max(spec, where)
            if spec.type != "computed" and (spec.required or spec.relevant is not None):
                group.rules.append(spec)
            static_bounds = [b for b in spec.bounds if b.static]
            if not spec.warn and spec.type != "computed":
                for b in static_bounds:
                    spec.static.append(_static_bound(b))
                spec.limits = tuple(next((b.value for b in static_bounds if b.side == side), None)
                                    for side in ("min", "max"))
                spec.bounds = [b for b in spec.bounds if not b.static]
            if spec.bounds or (spec.warn and spec.static):
                group.bounded.append(spec)
        group.schema = _schema(group)
        group.load = _loader(group)

    def min_le_max(self, spec, where):
        lows = [b for b in spec.bounds if b.side == "min" and b.static]
        highs = [b for b in spec.bounds if b.side == "max" and b.static]
        if lows and highs and lows[0].value > highs[0].value:
            self.fail(where, "min is larger than max")

    def bound(self, spec, side, raw, group, where):
        kind = spec.type
        if kind == "computed":
            kind = spec.result_type if spec.result_type != "boolean" else None
            if kind is None:
                self.fail(where, f"{side} does not apply to a true/false computed field")
        kind = {"integer": "number", "decimal": "number", "date": "date", "datetime": "date",
                "time": "time"}[kind]
        b = _Bound(side, kind)
        if isinstance(raw, dict):
            if set(raw) - {"field", "offset"} or "field" not in raw:
                self.fail(where, f"{side} must be a literal, \"today…\" or {{\"field\": name, \"offset\": …}}")
            found = group.resolve(raw["field"]) if isinstance(raw["field"], str) else None
            if found is None:
                self.fail(where, f"{side} names a missing field {raw['field']!r}")
            level, other = found
            other_kind = other.result_type if other.type == "computed" else other.type
            wanted = ("integer", "decimal") if kind == "number" else ("date", "datetime")
            if kind == "time" or other_kind not in wanted:
                self.fail(where, f"{side} cannot be bounded by {raw['field']!r} ({other_kind})")
            b.getter = _getter(level, raw["field"])
            if level == 0 and other.type != "computed":
                b.source = raw["field"], other.type
            b.gate = group.gate({(level, other)})
            offset = raw.get("offset")
            if kind == "number":
                if offset is not None and (type(offset) not in (int, float) or not math.isfinite(offset)):
                    self.fail(where, f"{side} offset must be a number")
                b.offset = offset or 0
                shift = f" + {_number(offset)}" if b.offset > 0 else f" - {_number(-offset)}" if b.offset else ""
                b.text = f" ({raw['field']}{shift})"
            else:
                if offset is not None:
                    m = OFFSET_RE.match(offset) if isinstance(offset, str) else None
                    if not m:
                        self.fail(where, f"{side} offset must look like \"+42d\" (d, w, m or y)")
                    b.offset = (m.group(1), int(m.group(2)), m.group(3))
                b.text = f" ({raw['field']}{_offset_words(b.offset)})"
            return b
        if kind == "number":
            if type(raw) not in (int, float) or not math.isfinite(raw):
                self.fail(where, f"{side} must be a number or {{\"field\": name, \"offset\": number}}")
            b.value, b.static = raw, True
            return b
        if kind == "time":
            try:
                b.value, b.static = _Parsers.time(None, raw), True
            except ValidationError:
                self.fail(where, f"{side} must be a time (HH:MM)")
            return b
        m = TODAY_RE.match(raw) if isinstance(raw, str) else None
        if m:
            sign, n, unit = m.groups()
            b.offset = (sign or "+", int(n or 0), unit or "d")
            b.today = self.uses_today = True
            return b
        try:
            b.value, b.static = _Parsers.date(None, raw), True
        except ValidationError:
            self.fail(where, f"{side} must be a date (YYYY-MM-DD), \"today\" with an optional offset "
                             f"(\"today-42d\"), or {{\"field\": name, \"offset\": \"+42d\"}}")
        return b

    def check(self, d, index, group, within=""):
        where = f"{within}check {index}"
        if not isinstance(d, dict):
            self.fail(where, "must be an object")
        for key in d:
            if key not in CHECK_KEYS:
                self.fail(where, f"unknown key {key!r} (allowed: {', '.join(sorted(CHECK_KEYS))})")
        name = d.get("field")
        if not isinstance(name, str) or name not in group.by_name:
            self.fail(where, f"field {name!r} is not a field of this form")
        where = f"{within}check {index} (field '{name}')"
        for key in ("assert", "message"):
            if key not in d:
                self.fail(where, f"lacks {key!r}")
        message = d["message"]
        problem = text_problem(message)
        if problem or not english(message).strip():
            self.fail(where, f"message {problem or 'must be non-empty text'}")
        if isinstance(message, dict):
            self.texts.setdefault(english(message), {k: v for k, v in message.items() if k != "en"})
        if "warn" in d and type(d["warn"]) is not bool:
            self.fail(where, "warn must be true or false")
        check = _Check()
        check.field, check.message, check.warn = name, english(message), d.get("warn", False)
        check.test, reads = self.condition(d["assert"], group, where)
        check.when = None
        if "when" in d:
            check.when, when_reads = self.condition(d["when"], group, where)
            reads = reads | when_reads
        check.gate = group.gate(reads)
        return check

    def condition(self, c, group, where):
        """Compile a condition to fn(vals, parent) -> bool, with the
        (level, spec) pairs it reads."""
        if not isinstance(c, dict) or not c:
            self.fail(where, f"a condition must be an object, not {c!r}")
        if len(c) == 1 and ("all" in c or "any" in c):
            key = "all" if "all" in c else "any"
            parts = c[key]
            if not isinstance(parts, list) or not parts:
                self.fail(where, f"{key!r} needs a non-empty list of conditions")
            compiled = [self.condition(p, group, where) for p in parts]
            tests = tuple(t for t, _ in compiled)
            reads = set().union(*(r for _, r in compiled))
            first = parts[0]
            leaves = [self.leaf(p, group, where) for p in parts]
            if len(parts) > 1 and None not in leaves:
                # Fields against literals ("ga_weeks" at least 4 and at most
                # 44; both pressures known): one closure, no nested calls.
                return _leaves(tuple(leaves), key == "all"), reads
            if key == "all":
                return _all_of(tests), reads
            if len(parts) > 1 and all(isinstance(p, dict) and set(p) == {"field", "contains"}
                                      and p["field"] == first["field"] for p in parts):
                # "any of these ticked" (danger signs): one lookup of the list.
                level, spec, _ = self.operand(first["field"], group, where)
                values = tuple(self.literal(spec, "contains", p["contains"], where) for p in parts)
                test = _any_contained(spec.name, values)
                if level == 1:
                    return (lambda v, p: test(p, None)), reads
                return test, reads
            return _any_of(tests), reads
        if len(c) == 1 and "not" in c:
            test, reads = self.condition(c["not"], group, where)
            return (lambda v, p: not test(v, p)), reads
        ops = [k for k in c if k in OPERATORS]
        if set(c) - set(OPERATORS) - {"field"} or "field" not in c or len(ops) != 1:
            self.fail(where, f"a condition is {{\"field\": name, <one of {', '.join(OPERATORS)}>: value}} "
                             f"or all/any/not, not {json.dumps(c)}")
        op = ops[0]
        level, spec, part = self.operand(c["field"], group, where)
        reads = {(level, spec)}
        get = _getter(level, spec.name, part)
        value = c[op]
        if isinstance(value, dict):
            other = value.get("field") if set(value) == {"field"} else None
            level2, spec2, part2 = self.operand(other, group, where)
            reads.add((level2, spec2))
            if level == level2 == 0 and not part and not part2 and op in _ORDER:
                return _fields_ordered(_ORDER[op], spec.name, spec2.name), reads
            rhs = _getter(level2, spec2.name, part2)
            compare = _COMPARE[op]
            return (lambda v, p: compare(get(v, p), rhs(v, p))), reads
        if part:
            if op == "contains" or any(type(i) not in (int, float) for i in (value if op == "in" else [value])
                                       if i is not None):
                self.fail(where, f"{c['field']!r} is a number")
            compare, literal = _COMPARE[op], tuple(value) if op == "in" else value
            return (lambda v, p: compare(get(v, p), literal)), reads
        value = self.literal(spec, op, value, where)
        test = _literal_test(op, c["field"], value)
        if level == 1:
            return (lambda v, p: test(p, None)), reads
        return test, reads

    def leaf(self, c, group, where):
        """(name, op, literal, ordered) for a condition comparing a field of
        this group with a literal by eq, ne, gt, ge, lt or le; else None."""
        ops = [k for k in c if k != "field"] if isinstance(c, dict) else ()
        if len(ops) != 1 or ops[0] not in _SIMPLE or isinstance(c[ops[0]], dict):
            return None
        op = ops[0]
        level, spec, part = self.operand(c.get("field"), group, where)
        if level != 0 or part:
            return None
        return spec.name, _SIMPLE[op], self.literal(spec, op, c[op], where), op in _ORDER

    def operand(self, name, group, where):
        """(level, spec, part) for a field a condition reads; "gps.lat" reads
        one part (lat, lon or accuracy_m) of a geopoint."""
        found = group.resolve(name) if isinstance(name, str) else None
        part = None
        if found is None and isinstance(name, str) and "." in name:
            base, part = name.split(".", 1)
            found = group.resolve(base)
            if found is not None and (found[1].type != "geopoint" or part not in GEOPOINT_PARTS):
                self.fail(where, f"{name!r}: only a geopoint has parts ({', '.join(GEOPOINT_PARTS)})")
        if found is None:
            self.fail(where, f"a condition names a missing field {name!r}")
        return found[0], found[1], part

    def literal(self, spec, op, value, where):
        """A literal in canonical form (so "08:00" equals the stored
        "08:00:00"); a literal the field can never hold is a typo: refused."""
        if op == "in" and (not isinstance(value, list) or not value):
            self.fail(where, "'in' needs a non-empty list of values")
        if op == "contains" and spec.type != "multi_choice":
            self.fail(where, f"'contains' is for multi_choice fields; {spec.name!r} is {spec.type}")
        kind = spec.result_type if spec.type == "computed" else spec.type
        parse = _PARSERS.get(kind)
        if kind == "multi_choice" and op == "contains":
            parse = _Parsers.choice     # one value of the list
        out = []
        for item in (value if op == "in" else [value]):
            if item is not None and parse is not None and kind not in ("string", "text"):
                try:
                    item = parse(spec, item)
                except ValidationError as e:
                    problem = e.messages[0] if isinstance(e.messages, list) else e.messages
                    self.fail(where, f"{item!r} cannot be a value of {spec.name!r}: it {problem}")
            out.append(item)
        return tuple(out) if op == "in" else out[0]

    def describe(self, c, holds, top=False, lang="en"):
        """The condition in words, as it holds (or fails), in `lang`."""
        if "all" in c or "any" in c:
            key = "all" if "all" in c else "any"
            joiner = JOINERS[lang][0 if (key == "all") == holds else 1]
            text = joiner.join(self.describe(p, holds, False, lang) for p in c[key])
            return text if top or len(c[key]) == 1 else f"({text})"
        if "not" in c:
            return self.describe(c["not"], not holds, top, lang)
        op = next(k for k in c if k in OPERATORS)
        value = c[op]
        if isinstance(value, dict):
            shown = value["field"]
        elif op == "in":
            shown = ", ".join(_fmt(v).strip("'") for v in value)
        else:
            shown = _fmt(value)
        if lang == "en":
            return f"{c['field']} " + _WORDS[op][0 if holds else 1].format(v=shown)
        if value is None:
            shown = EMPTY[lang]
        return f"{c['field']} " + CONDITION_WORDS[lang][op][0 if holds else 1].format(v=shown)

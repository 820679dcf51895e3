"""Form definitions: load them, check them, compile them once, validate records.

A form is data (DESIGN.md "Forms are data"): a JSON file naming fields, their
types and bounds, skip logic (``relevant``), computed fields and form-level
checks. Conditions are data too, never code. This module turns a definition
into a ``CompiledForm`` whose validators the server and every device share, so
a device validates offline exactly as the server will.

Validation has two layers. Per field, a marshmallow schema checks the type,
literal bounds, lengths, patterns and choices, and puts the value in canonical
form (so equal values compare equal in the merge: ``52.5 == 52.50``, NFC text,
multi_choice in definition order). Across fields, compiled closures check skip
logic, required fields, bounds on "today" or on another field, and the form's
checks. Three modes: ``validate_create`` (a complete new record),
``validate_change`` (only the fields present, and only the rules whose inputs
are all present) and ``validate_record`` (a merged record, every rule).

Decisions worth knowing:

- Canonical values: integer an int (``3.0`` → ``3``, booleans refused, within
  64 bits); decimal a float; time ``HH:MM:SS``; datetime its ``isoformat()``
  with the offset as sent (``Z`` → ``+00:00``); ref lowercase; text NFC with
  whitespace kept; multi_choice in definition order; geopoint floats.
- Required means a value: null, ``""`` and ``[]`` count as missing.
- "today" is the date in ``FIELDSYNC_TIMEZONE`` (default Asia/Ho_Chi_Minh);
  every today-relative bound widens by one day on its accepting side.
- One problem at a time: rules reading a field with a type error are skipped,
  and so is a check whose field already has an error ("is required").
- A repeat travels whole: in a change its entries are checked completely, but
  their rules that read the parent record wait until those fields are present.
- Message keys beyond field names: ``_record`` (data is not an object),
  ``_entry`` (a repeat entry is not an object), ``_`` (a repeat's own messages
  when its entries have messages too).
"""
from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import inspect
import json
import math
import operator
import os
import re
import unicodedata
from importlib import resources
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import EXCLUDE, Schema, ValidationError, fields as mm, missing

from . import compute as computations

TYPES = (
    "string", "text", "integer", "decimal", "boolean", "date", "time", "datetime",
    "choice", "multi_choice", "ref", "geopoint", "repeat", "computed",
)
COMMON_KEYS = frozenset({"name", "type", "label", "required", "relevant", "warn"})
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
    "repeat": {"fields", "min_count", "max_count"},
    "computed": {"compute", "min", "max"},
}
FORM_KEYS = frozenset({"id", "version", "title", "restricted_to", "fields", "checks"})
CHECK_KEYS = frozenset({"field", "assert", "when", "message", "warn"})
OPERATORS = ("eq", "ne", "in", "gt", "ge", "lt", "le", "contains")

# Same rule as wire.FIELD_NAME_RE: field names travel as keys of clocks/bases.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
FORM_ID_RE = NAME_RE
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?\Z")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})\Z")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
TODAY_RE = re.compile(r"^today(?:([+-])(\d{1,5})([dwmy]))?\Z")
OFFSET_RE = re.compile(r"^([+-])(\d{1,5})([dwmy])\Z")
BUNDLED_RE = re.compile(r"^v([1-9]\d*)\.json\Z")

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
GRACE = dt.timedelta(days=1)
INT_LIMIT = 2 ** 63
GEOPOINT_PARTS = ("lat", "lon", "accuracy_m")
UNITS = {"d": "day", "w": "week", "m": "month", "y": "year"}

UNKNOWN = "unknown field"
DERIVED = "computed; it is derived, never sent"
REQUIRED = "is required"
# The exceptions a compute function's input may raise, making its result
# null (as computations.Function.__call__ catches them).
_COMPUTE_ERRORS = (TypeError, ValueError, AttributeError, OverflowError)


class FormDefinitionError(ValueError):
    """A form definition is malformed; the message names the file and the field."""


class Result(NamedTuple):
    """The outcome of a validation.

    ``data`` holds the normalised values; ``errors`` and ``warnings`` map a
    field to its messages, and a repeat to ``{"<index>": {field: [...]}}``.
    """

    data: dict
    errors: dict
    warnings: dict
    #: ``compute(data)``, when the validation already derived it (a complete
    #: record on the fast path); else None.
    computed: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------- loading

def load_definition(path_or_dict, source=None) -> dict:
    """Read (from a JSON file or a dict) and check a form definition.

    :param path_or_dict: a path to a ``.json`` file, or the definition itself.
    :param source: how error messages name the definition (default: the path,
        else ``form '<id>'``).
    :raises FormDefinitionError: on any problem, naming the source and field.
    """
    if isinstance(path_or_dict, (str, os.PathLike)):
        source = source or str(path_or_dict)
        try:
            with open(path_or_dict, encoding="utf-8") as f:
                definition = json.load(f)
        except OSError as e:
            raise FormDefinitionError(f"{source}: cannot be read ({e.strerror})") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise FormDefinitionError(f"{source}: is not valid JSON ({e})") from None
    else:
        definition = path_or_dict
    _compile(definition, source)
    return definition


def bundled_definitions() -> list[dict]:
    """Every definition shipped as package data (``schemas/forms/<id>/v<n>.json``),
    sorted by id and version; works from an installed wheel in any folder."""
    found = []
    root = resources.files(__package__).joinpath("forms")
    if not root.is_dir():
        return []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        for item in folder.iterdir():
            match = BUNDLED_RE.match(item.name)
            if not match:
                continue
            source = f"schemas/forms/{folder.name}/{item.name}"
            try:
                definition = json.loads(item.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise FormDefinitionError(f"{source}: is not valid JSON ({e})") from None
            load_definition(definition, source)
            if definition["id"] != folder.name or definition["version"] != int(match.group(1)):
                raise FormDefinitionError(
                    f"{source}: holds id {definition['id']!r} version {definition['version']}; "
                    f"the file must be schemas/forms/<id>/v<version>.json")
            found.append(definition)
    found.sort(key=lambda d: (d["id"], d["version"]))
    return found


def definition_sha256(definition: dict) -> str:
    """The sha256 of the canonical JSON of a definition (sorted keys, no spaces,
    UTF-8): the content hash that makes a published version immutable."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- registry

_CACHE: dict[tuple, "CompiledForm"] = {}


def compile_form(definition: dict, source=None) -> "CompiledForm":
    """The compiled form for a definition, built once per (id, version, sha256).

    :raises FormDefinitionError: when the definition is malformed.
    """
    return _compile(definition, source)


def _compile(definition, source):
    if not isinstance(definition, dict):
        raise FormDefinitionError(f"{source or 'form definition'}: must be a JSON object")
    try:
        sha = definition_sha256(definition)
    except (TypeError, ValueError) as e:
        raise FormDefinitionError(f"{source or 'form definition'}: is not plain JSON ({e})") from None
    key = (definition.get("id"), definition.get("version"), sha)
    form = _CACHE.get(key) if isinstance(key[0], str) and type(key[1]) is int else None
    if form is None:
        if source is None:
            source = f"form {definition.get('id')!r}" if isinstance(definition.get("id"), str) \
                else "form definition"
        form = CompiledForm(definition, sha, source)
        _CACHE[key] = form
    return form


class FormRegistry:
    """The compiled forms one process knows, by id and version."""

    def __init__(self, definitions=()):
        self._forms: dict[tuple[str, int], CompiledForm] = {}
        for definition in definitions:
            self.add(definition)

    def add(self, definition: dict) -> "CompiledForm":
        """Compile and add a definition; the same version with other content is
        refused (a changed definition must take a new version)."""
        form = compile_form(definition)
        known = self._forms.get((form.id, form.version))
        if known is not None and known.sha256 != form.sha256:
            raise FormDefinitionError(
                f"form {form.id!r}: version {form.version} is already known with other content; "
                f"a changed definition must take a new version")
        self._forms[(form.id, form.version)] = form
        return form

    def get(self, form_id: str, version: int) -> "CompiledForm | None":
        return self._forms.get((form_id, version))

    def latest(self, form_id: str) -> "CompiledForm | None":
        versions = [f for (i, _), f in self._forms.items() if i == form_id]
        return max(versions, key=lambda f: f.version) if versions else None

    def all(self) -> list["CompiledForm"]:
        return [self._forms[k] for k in sorted(self._forms)]


# --------------------------------------------------------------------------- today

_ZONES: dict[str, ZoneInfo] = {}


def local_today(tz_name: str | None = None) -> dt.date:
    """Today's date in the deployment time zone (``tz_name``, else
    ``FIELDSYNC_TIMEZONE``, default Asia/Ho_Chi_Minh): the "today" of every bound."""
    name = tz_name or os.environ.get("FIELDSYNC_TIMEZONE") or DEFAULT_TIMEZONE
    zone = _ZONES.get(name)
    if zone is None:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"FIELDSYNC_TIMEZONE={name!r} is not a known time zone") from None
        _ZONES[name] = zone
    return dt.datetime.now(zone).date()


def _shift(day: dt.date, sign: str, n: int, unit: str) -> dt.date:
    """`day` moved by n days/weeks/months/years; the 31st or 29 February clamp
    to the month's last day."""
    n = -n if sign == "-" else n
    if unit == "d":
        return day + dt.timedelta(days=n)
    if unit == "w":
        return day + dt.timedelta(weeks=n)
    months = n * 12 if unit == "y" else n
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


# --------------------------------------------------------------------------- values

def _fmt(value) -> str:
    """A value as a person reads it in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "empty"
    return str(value)


def _number(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _blank(value) -> bool:
    return value is None or value == "" or value == []


class _Parsers:
    """Per type: check a JSON value and return its canonical form, or raise
    ValidationError with a plain-language message."""

    @staticmethod
    def text(spec, value):
        if type(value) is not str:
            raise ValidationError("must be text")
        return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)

    @staticmethod
    def integer(spec, value):
        kind = type(value)
        if kind is float and math.isfinite(value) and value.is_integer():
            value, kind = int(value), int
        if kind is int:
            if -INT_LIMIT < value < INT_LIMIT:
                return value
            raise ValidationError("is too large")   # SQLite's JSON holds 64-bit integers
        raise ValidationError("must be a whole number")

    @staticmethod
    def decimal(spec, value):
        kind = type(value)
        if kind is float and math.isfinite(value):
            return value
        if kind is int:
            try:
                return float(value)
            except OverflowError:
                pass
        raise ValidationError("must be a number")

    @staticmethod
    def boolean(spec, value):
        if value is True or value is False:
            return value
        raise ValidationError("must be true or false")

    @staticmethod
    def date(spec, value):
        if type(value) is not str or not DATE_RE.match(value):
            raise ValidationError("must be a date (YYYY-MM-DD)")
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValidationError("is not a real date") from None
        return value

    @staticmethod
    def time(spec, value):
        match = TIME_RE.match(value) if type(value) is str else None
        if not match:
            raise ValidationError("must be a time (HH:MM or HH:MM:SS)")
        hours, minutes, seconds = match.groups()
        return f"{hours}:{minutes}:{seconds or '00'}"

    @staticmethod
    def datetime(spec, value):
        if type(value) is not str or not DATETIME_RE.match(value):
            raise ValidationError("must be a date and time with its UTC offset "
                                  "(e.g. 2025-03-01T08:30:00+07:00)")
        try:
            return dt.datetime.fromisoformat(value).isoformat()
        except ValueError:
            raise ValidationError("is not a real date and time") from None

    @staticmethod
    def choice(spec, value):
        if type(value) is str and value in spec.choice_order:
            return value
        raise ValidationError(spec.choice_message)

    @staticmethod
    def multi_choice(spec, value):
        if type(value) is not list:
            raise ValidationError("must be a list of choices")
        order = spec.choice_order
        problems = []
        for item in value:
            if type(item) is not str or item not in order:
                problems.append(f"{_fmt(item)} is not one of: {spec.choice_list}")
        if problems:
            raise ValidationError(problems)
        if len(set(value)) != len(value):
            twice = sorted({v for v in value if value.count(v) > 1}, key=order.__getitem__)
            raise ValidationError([f"lists {_fmt(v)} more than once" for v in twice])
        return sorted(value, key=order.__getitem__)

    @staticmethod
    def ref(spec, value):
        if type(value) is str and UUID_RE.match(value):
            return value.lower()
        raise ValidationError("must be a record id (a UUID)")

    @staticmethod
    def geopoint(spec, value):
        if type(value) is not dict:
            raise ValidationError("must be an object with lat and lon")
        problems = [f"{k!r} is not a geopoint key (lat, lon, accuracy_m)"
                    for k in value if k not in ("lat", "lon", "accuracy_m")]
        point = {}
        for key, low, high in (("lat", -90, 90), ("lon", -180, 180), ("accuracy_m", 0, math.inf)):
            v = value.get(key)
            if v is None:
                if key != "accuracy_m":
                    problems.append(f"{key} is required")
            elif type(v) not in (int, float) or not math.isfinite(v):
                problems.append(f"{key} must be a number")
            elif not low <= v <= high:
                problems.append(f"{key} must be between {low} and {high}" if high != math.inf
                                else f"{key} must be at least {low}")
            else:
                point[key] = float(v)
        if problems:
            raise ValidationError(problems)
        return point


_PARSERS = {
    "string": _Parsers.text, "text": _Parsers.text, "integer": _Parsers.integer,
    "decimal": _Parsers.decimal, "boolean": _Parsers.boolean, "date": _Parsers.date,
    "time": _Parsers.time, "datetime": _Parsers.datetime, "choice": _Parsers.choice,
    "multi_choice": _Parsers.multi_choice, "ref": _Parsers.ref, "geopoint": _Parsers.geopoint,
}


class FormField(mm.Field):
    """One form field as a marshmallow field: type check, canonical form, and
    the checks that need no other value (literal bounds, length, pattern,
    counts) unless the field only warns."""

    def __init__(self, spec, **kwargs):
        super().__init__(allow_none=True, **kwargs)
        self.spec = spec
        self._parse = _PARSERS.get(spec.type) or self._entries
        # A field that only warns has its static checks run after this pass.
        self._checks = () if spec.warn else spec.static

    def deserialize(self, value, attr=None, data=None, **kwargs):
        # The hot path of every push: no pre_load or validators are ever set
        # on these fields, so skip marshmallow's generic steps.
        if value is None or value is missing:
            return value
        return self._deserialize(value, attr, data)

    def _deserialize(self, value, attr, data, **kwargs):
        value = self._parse(self.spec, value)
        problems = None
        for check in self._checks:
            message = check(value)
            if message:
                problems = (problems or []) + [message]
        if problems:
            raise ValidationError(problems)
        return value

    def _entries(self, spec, value):
        """A repeat: a list of objects, each checked by the repeat's own
        schema; errors by entry index (``{"0": {"sex": [...]}}``)."""
        if type(value) is not list:
            raise ValidationError("must be a list of entries")
        group = spec.group
        out, problems = [], {}
        for index, entry in enumerate(value):
            if type(entry) is not dict:
                problems[str(index)] = {"_entry": ["must be an object of field values"]}
                continue
            entry_errors = group.extra_keys(entry)
            try:
                clean = group.schema.load(entry, partial=True)
            except ValidationError as e:
                entry_errors.update(e.messages)
                clean = None
            if entry_errors:
                problems[str(index)] = entry_errors
            else:
                out.append(clean)
        if problems:
            raise ValidationError(problems)
        return out


# --------------------------------------------------------------------------- compiled pieces

class _Spec:
    """One field of a compiled form (or of a repeat entry)."""

    __slots__ = ("name", "path", "type", "definition", "required", "warn", "relevant",
                 "rel_gate", "rel_text", "bounds", "static", "choice_order", "choice_message",
                 "choice_list", "group", "function", "inputs", "reads", "result_type", "limits")

    def __init__(self, definition, path):
        self.definition = definition
        self.name = definition.get("name")
        self.path = path
        self.type = definition.get("type")
        self.required = False
        self.warn = False
        self.relevant = None
        self.rel_gate = frozenset()
        self.rel_text = ""
        self.bounds = []         # bounds checked after the marshmallow pass
        self.static = []         # value -> message | None, no other value needed
        self.limits = (None, None)   # the literal (min, max) among static
        self.choice_order = {}
        self.group = None        # a repeat's entry group
        self.function = None
        self.inputs = ()         # computed: (parameter, level, field name)
        self.reads = None        # computed: expanded (level, spec) it depends on
        self.result_type = None


class _Group:
    """The fields of a form, or of one entry of a repeat (whose names resolve
    to the entry's fields first, then the parent record's)."""

    def __init__(self, parent):
        self.parent = parent
        self.specs: list[_Spec] = []
        self.by_name: dict[str, _Spec] = {}
        self.inputs: frozenset = frozenset()
        self.derived: frozenset = frozenset()
        self.computed: list[_Spec] = []
        self.derivers: tuple = ()         # fn(vals, parent) per computed field, in order
        self.rules: list[_Spec] = []      # required or relevant
        self.bounded: list[_Spec] = []    # dynamic bounds or warn-only static checks
        self.repeats: list[_Spec] = []
        self.checks: list[_Check] = []
        self.schema = None
        self.load = None                  # data -> clean dict, or None (see _loader)

    def resolve(self, name):
        """(level, spec) for a name: level 0 is this group, 1 the parent."""
        if name in self.by_name:
            return 0, self.by_name[name]
        if self.parent is not None and name in self.parent.by_name:
            return 1, self.parent.by_name[name]
        return None

    def extra_keys(self, data) -> dict:
        """Messages for keys that are no input field of this group."""
        if data.keys() <= self.inputs:
            return {}
        return {k: [DERIVED if k in self.derived else UNKNOWN] for k in data if k not in self.inputs}

    def gate(self, reads) -> frozenset:
        """The top-level field names a rule reading `reads` needs in a change."""
        level = 1 if self.parent is not None else 0
        return frozenset(s.name for lvl, s in _expand(reads) if lvl == level)


def _expand(reads):
    """Replace computed fields by the input fields they are derived from."""
    out = set()
    for level, spec in reads:
        if spec.type == "computed":
            out.update((max(level, lvl), s) for lvl, s in spec.reads)
        else:
            out.add((level, spec))
    return out


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


class _Check:
    """A form-level check: `assert` must hold (when `when` holds), else the
    message goes to `field`."""

    __slots__ = ("field", "test", "when", "message", "warn", "gate")


# --------------------------------------------------------------------------- conditions

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


# --------------------------------------------------------------------------- the compiler

class _Compiler:
    """Checks a definition and builds its groups; every problem is a
    FormDefinitionError naming the source and the field."""

    def __init__(self, source):
        self.source = source
        self.uses_today = False

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
        if not isinstance(d["title"], str) or not d["title"].strip():
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
        if "label" in d and not isinstance(d["label"], str):
            self.fail(where, "label must be text")
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
                    or not isinstance(c.get("label", ""), str):
                self.fail(where, f"choices[{index}] must be {{\"value\": text, \"label\": text}}")
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

    def check(self, d, index, group):
        where = f"check {index}"
        if not isinstance(d, dict):
            self.fail(where, "must be an object")
        for key in d:
            if key not in CHECK_KEYS:
                self.fail(where, f"unknown key {key!r} (allowed: {', '.join(sorted(CHECK_KEYS))})")
        name = d.get("field")
        if not isinstance(name, str) or name not in group.by_name:
            self.fail(where, f"field {name!r} is not a field of this form")
        where = f"check {index} (field '{name}')"
        for key in ("assert", "message"):
            if key not in d:
                self.fail(where, f"lacks {key!r}")
        if not isinstance(d["message"], str) or not d["message"].strip():
            self.fail(where, "message must be non-empty text")
        if "warn" in d and type(d["warn"]) is not bool:
            self.fail(where, "warn must be true or false")
        check = _Check()
        check.field, check.message, check.warn = name, d["message"], d.get("warn", False)
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

    def describe(self, c, holds, top=False):
        """The condition in words, as it holds (or fails)."""
        if "all" in c or "any" in c:
            key = "all" if "all" in c else "any"
            joiner = " and " if (key == "all") == holds else " or "
            text = joiner.join(self.describe(p, holds) for p in c[key])
            return text if top or len(c[key]) == 1 else f"({text})"
        if "not" in c:
            return self.describe(c["not"], not holds, top)
        op = next(k for k in c if k in OPERATORS)
        value = c[op]
        if isinstance(value, dict):
            shown = value["field"]
        elif op == "in":
            shown = ", ".join(_fmt(v).strip("'") for v in value)
        else:
            shown = _fmt(value)
        return f"{c['field']} " + _WORDS[op][0 if holds else 1].format(v=shown)


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


# The fast paths of validation (False forces the schema and the general rule
# loop; tests/test_forms_fast.py compares the two).
FAST = True
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


def _schema(group):
    """The marshmallow schema of a group's input fields (unknown keys are
    reported by extra_keys, with our own wording)."""
    declared = {}
    for spec in group.specs:
        if spec.type == "repeat":
            if spec.group is not None:
                declared[spec.name] = FormField(spec)
        elif spec.type != "computed":
            declared[spec.name] = FormField(spec)
    return Schema.from_dict(declared, name="FormSchema")(unknown=EXCLUDE)


# --------------------------------------------------------------------------- the compiled form

class CompiledForm:
    """One version of one form, compiled: its marshmallow schema and rules."""

    def __init__(self, definition, sha256, source):
        self.definition = json.loads(json.dumps(definition))  # a private copy
        compiler = _Compiler(source)
        self._top = compiler.form(self.definition)
        self._complete = _complete(self._top)
        self._uses_today = compiler.uses_today
        d = self.definition
        self.id, self.version, self.title = d["id"], d["version"], d["title"]
        self.restricted_to = d.get("restricted_to")
        self.sha256 = sha256
        self.source = source
        self.schema = self._top.schema
        self.field_names = [s.name for s in self._top.specs if s.type != "computed"]
        self.computed_names = [s.name for s in self._top.specs if s.type == "computed"]
        self.fields = {s.name: s.definition for s in self._top.specs}

    def __repr__(self):
        return f"<CompiledForm {self.id} v{self.version}>"

    def validate_create(self, data, today=None) -> Result:
        """A new record: every field it holds, all rules (required, skip logic,
        bounds, checks)."""
        return self._validate(data, True, today)

    def validate_record(self, data, today=None) -> Result:
        """A merged record's values: every rule, as for a create."""
        return self._validate(data, True, today)

    def validate_change(self, data, today=None) -> Result:
        """An edit: only the fields present; a cross-field rule only when every
        field it reads is in the change (the merged record is checked after)."""
        return self._validate(data, False, today)

    def compute(self, data) -> dict:
        """The computed fields of a record's (normalised) values; a repeat with
        computed fields gives a list with one dict per entry."""
        top = self._top
        vals = dict(data)
        _derive(top, vals, None)
        out = {s.name: vals[s.name] for s in top.computed}
        for rep in top.repeats:
            if rep.group.computed:
                entries = data.get(rep.name)
                if isinstance(entries, list):
                    out[rep.name] = []
                    for entry in entries:
                        ev = dict(entry) if isinstance(entry, dict) else {}
                        _derive(rep.group, ev, vals)
                        out[rep.name].append({s.name: ev[s.name] for s in rep.group.computed})
        return {k: out[k] for k in self.computed_names + [r.name for r in top.repeats] if k in out}

    def _validate(self, data, complete, today):
        if not isinstance(data, dict):
            return Result({}, {"_record": ["must be an object of field values"]}, {})
        if today is None and self._uses_today:
            today = local_today()
        if FAST and complete:
            result = self._complete(data, today)
            if result is not None:
                return result
        top = self._top
        errors = top.extra_keys(data)
        clean = top.load(data) if FAST else None
        if clean is None:
            try:
                clean = top.schema.load(data, partial=True)
            except ValidationError as e:
                clean = e.valid_data or {}
                errors.update(e.messages)
        warnings = {}
        present = None if complete else data.keys()
        bad = frozenset(errors) if errors else ()
        _evaluate(top, clean, data, None, complete, present, today, errors, warnings, bad)
        return Result(clean, errors, warnings)


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
    params = inspect.signature(fn).parameters
    if (relevant is None and len(inputs) == 2 and inputs[0][1] == inputs[1][1] == 0
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
            if value is None:
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


def describe_errors(errors: dict, prefix="") -> list[str]:
    """Flatten ``{field: [...]} / {repeat: {"0": {...}}}`` into lines such as
    ``baby[0].sex: must be one of: male, female`` (for the CLI and logs)."""
    lines = []
    for name, messages in errors.items():
        if isinstance(messages, dict):
            for index, inner in messages.items():
                if isinstance(inner, dict):
                    lines += describe_errors(inner, f"{prefix}{name}[{index}].")
                else:
                    lines += [f"{prefix}{name}: {m}" for m in inner]
        else:
            lines += [f"{prefix}{name}: {m}" for m in messages]
    return lines

"""Field values: a parser per type (check a JSON value, give its canonical
form), the marshmallow ``FormField`` that runs it with the field's static
checks, and the schema of a group's input fields.

Canonical values: integer an int (``3.0`` → ``3``, booleans refused, within
64 bits); decimal a float; time ``HH:MM:SS``; datetime its ``isoformat()``
with the offset as sent (``Z`` → ``+00:00``); ref lowercase; text NFC with
whitespace kept; multi_choice in definition order; geopoint floats.
"""
from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata

from marshmallow import EXCLUDE, Schema, ValidationError, fields as mm, missing

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?\Z")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})\Z")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
INT_LIMIT = 2 ** 63


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

"""The wire format both sides share: a change, a push batch, the limits.

A push is checked in two steps (DESIGN.md "Push"): the envelope
(``PushSchema``), whose errors fail the whole request, then each change
(``ChangeSchema``), whose errors reject that change only, so its neighbours
still apply. The form's own schema then checks ``data``.
"""

from __future__ import annotations

import re
from datetime import datetime

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from .clock import HLC_RE, is_valid

LIMITS = {
    "max_records_per_batch": 1000,
    "max_batch_bytes": 16 * 1024 * 1024,
    "pull_limit_default": 500,
    "pull_limit_max": 5000,
}

AREA_RE = re.compile(r"^[A-Z0-9]+(\.[A-Z0-9]+)*\Z")
DEVICE_ID_RE = re.compile(r"^[a-z0-9-]{1,64}\Z")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
MAX_AREA_LENGTH = 64


def area_covers(scopes, area: str) -> bool:
    """True when one of ``scopes`` is ``area`` or an ancestor on a dot boundary.

    ``QN.LM`` covers ``QN.LM`` and ``QN.LM.03``, never ``QN.LMX``.
    """
    return any(area == s or area.startswith(s + ".") for s in scopes)


class HLCField(fields.String):
    """An HLC string; malformed clocks are errors."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not is_valid(value):
            raise ValidationError("not a clock: expected YYYY-MM-DDTHH:MM:SS.mmmZ-cccc-node")
        return value


class StrictInteger(fields.Integer):
    """An integer that refuses booleans and fractions."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class UUIDString(fields.String):
    """A UUID, kept as its canonical lower-case string."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not UUID_RE.match(value):
            raise ValidationError("not a UUID")
        return value.lower()


class StrictBoolean(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class ClockMap(fields.Dict):
    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(validate=validate.Regexp(FIELD_NAME_RE)),
                         values=HLCField(), **kwargs)


class ChangeSchema(Schema):
    """One change to one record (DESIGN.md "Records and changes on the wire")."""

    class Meta:
        unknown = RAISE

    id = UUIDString(required=True)
    form = fields.String(required=True, validate=validate.Regexp(FIELD_NAME_RE))
    form_version = StrictInteger(required=True, validate=validate.Range(min=1, max=10_000))
    area = fields.String(required=True, validate=[validate.Length(max=MAX_AREA_LENGTH),
                                                  validate.Regexp(AREA_RE)])
    data = fields.Dict(keys=fields.String(), required=True)
    hlc = HLCField(required=True)
    clocks = ClockMap(load_default=dict)
    bases = ClockMap(load_default=dict)
    deleted = StrictBoolean(load_default=None)

    @validates_schema(skip_on_field_errors=True)
    def _clocks_name_fields(self, change, **kwargs):
        stray = sorted(set(change["clocks"]) - set(change["data"]))
        if stray:
            raise ValidationError(f"clocks for fields this change does not set: {', '.join(stray)}",
                                  "clocks")
        if not change["deleted"]:
            stray = sorted(set(change["bases"]) - set(change["data"]))
            if stray:
                raise ValidationError(f"bases for fields this change does not set: {', '.join(stray)}",
                                      "bases")


class DeviceTime(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError("not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            raise ValidationError("needs a UTC offset, e.g. 2025-03-01T09:00:00+07:00")
        return parsed


class PushSchema(Schema):
    """The push envelope; each entry of ``records`` is checked by ``ChangeSchema``."""

    class Meta:
        unknown = RAISE

    device_id = fields.String(required=True, validate=validate.Regexp(DEVICE_ID_RE))
    batch_id = fields.String(required=True, validate=[validate.Length(min=1, max=128),
                                                      validate.Regexp(r"^[A-Za-z0-9._:-]+\Z")])
    device_time = DeviceTime(required=True)
    app_version = fields.String(required=True, validate=validate.Length(max=64))
    records = fields.List(fields.Dict(), required=True,
                          validate=validate.Length(max=LIMITS["max_records_per_batch"]))


CHANGE_SCHEMA = ChangeSchema()
PUSH_SCHEMA = PushSchema()


_CHANGE_KEYS = frozenset(ChangeSchema._declared_fields)
_REQUIRED_KEYS = frozenset(name for name, f in ChangeSchema._declared_fields.items() if f.required)


def _clock_map(value) -> dict | None:
    """A ``ClockMap`` value as the schema loads it, or None when it is not clean."""
    if type(value) is not dict:
        return None
    for name, hlc in value.items():
        if type(name) is not str or not FIELD_NAME_RE.match(name) or \
                type(hlc) is not str or not is_valid(hlc):
            return None
    return dict(value)


def _fast_change(raw) -> dict | None:
    """``CHANGE_SCHEMA.load(raw)`` for a well-formed change, else None.

    The push hot path: marshmallow costs ~25 µs per change, mostly per-field
    machinery. This checks exactly the schema's rules on the common, clean
    shape and returns the identical dict; anything unusual (a wrong type, a
    missing or unknown key, a stray clock) returns None, and the schema, the
    single source of error messages, runs instead. tests/test_wire_fast.py
    holds the two to the same answers.
    """
    if type(raw) is not dict:
        return None
    keys = raw.keys()
    if not (keys >= _REQUIRED_KEYS and keys <= _CHANGE_KEYS):
        return None
    rid, form, version, area = raw["id"], raw["form"], raw["form_version"], raw["area"]
    data, hlc = raw["data"], raw["hlc"]
    if (type(rid) is not str or not UUID_RE.match(rid)
            or type(form) is not str or not FIELD_NAME_RE.match(form)
            or type(version) is not int or not 1 <= version <= 10_000
            or type(area) is not str or len(area) > MAX_AREA_LENGTH or not AREA_RE.match(area)
            or type(data) is not dict or type(hlc) is not str or not is_valid(hlc)):
        return None
    for name in data:
        if type(name) is not str:
            return None
    clocks = _clock_map(raw["clocks"]) if "clocks" in keys else {}
    bases = _clock_map(raw["bases"]) if "bases" in keys else {}
    deleted = raw.get("deleted")
    if clocks is None or bases is None or (deleted is not None and type(deleted) is not bool):
        return None
    if not clocks.keys() <= data.keys() or (not deleted and not bases.keys() <= data.keys()):
        return None  # stray clocks or bases: the schema words the error
    # Key order as the schema's (declaration order).
    return {"id": rid.lower(), "form": form, "form_version": version, "area": area,
            "data": dict(data), "hlc": hlc, "clocks": clocks, "bases": bases,
            "deleted": deleted}


def load_change(raw: dict) -> tuple[dict | None, dict]:
    """Check one change's envelope: ``(change, {})`` or ``(None, errors by key)``."""
    change = _fast_change(raw)
    if change is not None:
        return change, {}
    try:
        return CHANGE_SCHEMA.load(raw), {}
    except ValidationError as exc:
        return None, exc.messages


__all__ = ["LIMITS", "AREA_RE", "DEVICE_ID_RE", "HLC_RE", "area_covers", "ChangeSchema",
           "PushSchema", "load_change", "CHANGE_SCHEMA", "PUSH_SCHEMA", "INCLUDE"]

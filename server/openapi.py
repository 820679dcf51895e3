"""The OpenAPI 3.0 description served at `GET /api/openapi.json`.

Written by hand as data, next to the code it describes; tests check it
against live answers. Blueprints that are installed separately (exports,
review) add their operations through a module-level `OPENAPI_PATHS` dict.
"""
import importlib

from schemas.merge import CLOCK_MODES

from . import __version__

HLC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z-[0-9a-f]{4}-[a-z0-9-]{1,64}$"
AREA_PATTERN = r"^[A-Z0-9]+(\.[A-Z0-9]+)*$"
DEVICE_PATTERN = r"^[a-z0-9-]{1,64}$"


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema):
    return {"application/json": {"schema": schema}}


def _error(description):
    return {"description": description, "content": _json(_ref("Error"))}


AUTH_ERRORS = {"401": _error("Missing, invalid, expired or revoked token.")}


def _schemas(limits):
    hlc = {"type": "string", "pattern": HLC_PATTERN}
    clock_map = {"type": "object", "additionalProperties": hlc}
    return {
        "Error": {
            "type": "object", "required": ["error", "message", "details"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                           "details": {"type": "object"}}},
        "Limits": {
            "type": "object",
            "required": ["max_records_per_batch", "max_batch_bytes", "pull_limit_default",
                         "pull_limit_max"],
            "properties": {k: {"type": "integer"} for k in (
                "max_records_per_batch", "max_batch_bytes", "pull_limit_default",
                "pull_limit_max")}},
        "Index": {
            "type": "object", "required": ["version", "server_time", "hlc", "limits"],
            "properties": {"version": {"type": "string"},
                           "server_time": {"type": "string", "format": "date-time"},
                           "hlc": hlc, "limits": _ref("Limits")}},
        "LoginRequest": {
            "type": "object", "additionalProperties": False,
            "required": ["username", "password", "device_id"],
            "properties": {"username": {"type": "string", "minLength": 1, "maxLength": 64},
                           "password": {"type": "string", "minLength": 1, "maxLength": 1024},
                           "device_id": {"type": "string", "pattern": DEVICE_PATTERN},
                           "app_version": {"type": "string", "maxLength": 64}}},
        "User": {
            "type": "object", "required": ["username", "role", "areas"],
            "properties": {"username": {"type": "string"},
                           "role": {"type": "string",
                                    "enum": ["health_worker", "supervisor", "admin"]},
                           "areas": {"type": "array", "items": {"type": "string"}}}},
        "LoginResponse": {
            "type": "object", "required": ["token", "expires_at", "user", "hlc"],
            "properties": {"token": {"type": "string"},
                           "expires_at": {"type": "string", "format": "date-time"},
                           "user": _ref("User"), "hlc": hlc}},
        "Change": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "form", "form_version", "area", "data", "hlc"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "form": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,63}$"},
                "form_version": {"type": "integer", "minimum": 1, "maximum": 10000},
                "area": {"type": "string", "pattern": AREA_PATTERN, "maxLength": 64},
                "data": {"type": "object"},
                "hlc": hlc, "clocks": clock_map, "bases": clock_map,
                "deleted": {"type": "boolean", "nullable": True}}},
        "PushRequest": {
            "type": "object", "additionalProperties": False,
            "required": ["device_id", "batch_id", "device_time", "app_version", "records"],
            "properties": {
                "device_id": {"type": "string", "pattern": DEVICE_PATTERN},
                "batch_id": {"type": "string", "minLength": 1, "maxLength": 128,
                             "pattern": r"^[A-Za-z0-9._:-]+$"},
                "device_time": {"type": "string", "format": "date-time"},
                "app_version": {"type": "string", "maxLength": 64},
                "records": {"type": "array", "items": _ref("Change"),
                            "maxItems": limits["max_records_per_batch"]}}},
        "Record": {
            "type": "object",
            "required": ["id", "form", "form_version", "area", "data", "deleted", "hlc",
                         "clocks"],
            "properties": {
                "id": {"type": "string"}, "form": {"type": "string"},
                "form_version": {"type": "integer"}, "area": {"type": "string"},
                "data": {"type": "object"}, "deleted": {"type": "boolean"}, "hlc": hlc,
                "clocks": clock_map,
                "common_hlc": dict(hlc, description="Pulls with clocks=common: the clock "
                                   "of every field not in clocks (absent: hlc)."),
                "tombstone": {"type": "object", "nullable": True,
                              "properties": {"deleted": {"type": "boolean"}, "hlc": hlc}},
                "seq": {"type": "integer", "nullable": True}}},
        "Result": {
            "type": "object", "required": ["id", "status"],
            "properties": {
                "id": {"type": "string", "nullable": True},
                "status": {"type": "string", "enum": ["applied", "unchanged", "conflict",
                                                      "rejected", "forbidden"]},
                "code": {"type": "string", "enum": [
                    "invalid", "unknown_form", "unknown_version", "identity_mismatch",
                    "clock_reused"]},
                "errors": {"type": "object", "description": "Messages by field: at most "
                           "the first 20 of a change (server/rejections.py)."},
                "errors_omitted": {"type": "integer", "minimum": 1, "description":
                                   "How many more messages the change had (absent: none)."},
                "warnings": {"type": "object"},
                "record": _ref("Record")}},
        "PushResponse": {
            "type": "object", "required": ["results", "hlc", "skew"],
            "properties": {
                "results": {"type": "array", "items": _ref("Result")},
                "hlc": hlc,
                "skew": {"type": "object", "nullable": True,
                         "required": ["seconds", "restamped"],
                         "properties": {"seconds": {"type": "number"},
                                        "restamped": {"type": "integer"}}}}},
        "PullResponse": {
            "type": "object", "required": ["records", "cursor", "more", "hlc"],
            "properties": {"records": {"type": "array", "items": _ref("Record")},
                           "cursor": {"type": "string"}, "more": {"type": "boolean"},
                           "hlc": hlc}},
        "Forms": {
            "type": "object", "required": ["forms"],
            "properties": {"forms": {"type": "array", "items": {
                "type": "object", "required": ["id", "version", "fields"]}}}},
        "Device": {
            "type": "object",
            "required": ["device_id", "user", "app_version", "last_push", "last_pull",
                         "records_rejected", "clock_skew_seconds"],
            "properties": {
                "device_id": {"type": "string"},
                "user": {"type": "string", "nullable": True},
                "areas": {"type": "array", "items": {"type": "string"}},
                "app_version": {"type": "string", "nullable": True},
                "last_push": {"type": "string", "nullable": True},
                "last_pull": {"type": "string", "nullable": True},
                "records_rejected": {"type": "integer"},
                "clock_skew_seconds": {"type": "number", "nullable": True},
                "restamped": {"type": "integer"}}},
    }


def _paths(limits):
    bearer = [{"bearer": []}]
    return {
        "/api/v1/": {"get": {
            "summary": "Server version, time, clock and limits (no auth).",
            "operationId": "index", "security": [],
            "responses": {"200": {"description": "OK", "content": _json(_ref("Index"))}}}},
        "/api/v1/auth/login": {"post": {
            "summary": "Sign in on a device; returns a token for that device.",
            "operationId": "login", "security": [],
            "requestBody": {"required": True, "content": _json(_ref("LoginRequest"))},
            "responses": {
                "200": {"description": "Signed in", "content": _json(_ref("LoginResponse"))},
                "400": _error("Malformed request."),
                "401": _error("Wrong username or password (or a disabled account: the "
                              "same answer)."),
                "409": _error("device_taken: the device belongs to another user until an "
                              "admin releases it."),
                "413": _error("Body too large."),
                "415": _error("Unsupported Content-Encoding."),
                "429": _error("Too many failed sign-ins; see Retry-After."),
                "503": _error("unavailable: the server's password checks are all busy (or "
                              "its database is); nothing was counted; see Retry-After.")}}},
        "/api/v1/auth/logout": {"post": {
            "summary": "Revoke this token.", "operationId": "logout", "security": bearer,
            "responses": {"200": {"description": "Revoked", "content": _json({
                "type": "object", "required": ["revoked"],
                "properties": {"revoked": {"type": "boolean"}}})}, **AUTH_ERRORS}}},
        "/api/v1/forms": {"get": {
            "summary": "Every published form version the user may write or read.",
            "operationId": "forms", "security": bearer,
            "description": "The answer carries a weak `ETag`; sent back in `If-None-Match`, "
                           "it is answered 304 with no body while the definitions are "
                           "unchanged.",
            "parameters": [{"name": "If-None-Match", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK", "content": _json(_ref("Forms"))},
                          "304": {"description": "Not Modified: the definitions the "
                                                 "`If-None-Match` tag stands for are current."},
                          **AUTH_ERRORS}}},
        "/api/v1/sync/push": {"post": {
            "summary": "Push a batch of changes (one transaction; idempotent per batch id).",
            "operationId": "push", "security": bearer,
            "description": "The body may be sent with `Content-Encoding: gzip`; the "
                           "size limit applies to the decompressed body.",
            "requestBody": {"required": True, "content": _json(_ref("PushRequest"))},
            "responses": {
                "200": {"description": "One result per change, in request order.",
                        "content": _json(_ref("PushResponse"))},
                "400": _error("Malformed JSON or envelope; nothing stored."),
                **AUTH_ERRORS,
                "403": _error("device_id is not the token's device."),
                "409": _error("Batch id reused with a different body."),
                "413": _error("Too many records or too many bytes."),
                "415": _error("Unsupported Content-Encoding."),
                "503": _error("Database busy or full; nothing stored; see Retry-After.")}}},
        "/api/v1/sync/pull": {"get": {
            "summary": "Records changed after the cursor, in scope, in commit order.",
            "operationId": "pull", "security": bearer,
            "parameters": [
                {"name": "cursor", "in": "query", "required": False,
                 "description": "The `cursor` of the previous page, as given (at most 200 "
                                "characters); empty or absent: from the start.",
                 "schema": {"type": "string", "maxLength": 200}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1,
                            "maximum": limits["pull_limit_max"]}},
                {"name": "clocks", "in": "query", "required": False,
                 "description": "all (default): every field's clock; sparse: only the "
                                "clocks that differ from the record's hlc, as in a push; "
                                "common: only the clocks that differ from the record's "
                                "common_hlc (the clock most of its fields share; absent "
                                "when that is its hlc).",
                 "schema": {"type": "string", "enum": list(CLOCK_MODES)}}],
            "responses": {
                "200": {"description": "A page of records.",
                        "content": _json(_ref("PullResponse"))},
                "400": _error("Invalid cursor, limit or clocks."),
                **AUTH_ERRORS,
                "409": _error("resync_required: scope changed; pull from the start.")}}},
        "/api/v1/devices": {"get": {
            "summary": "Devices in the caller's areas (supervisors) or all (admins).",
            "operationId": "devices", "security": bearer,
            "responses": {"200": {"description": "OK", "content": _json({
                "type": "object", "required": ["devices"],
                "properties": {"devices": {"type": "array", "items": _ref("Device")}}})},
                **AUTH_ERRORS, "403": _error("Health workers may not list devices.")}}},
        "/api/openapi.json": {"get": {
            "summary": "This document.", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.0",
                                  "content": _json({"type": "object"})}}}},
    }


def spec(limits):
    """The whole document, with the limits this server enforces."""
    paths = _paths(limits)
    components = {"schemas": _schemas(limits),
                  "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    for name in ("exports", "review", "indicators"):
        try:
            module = importlib.import_module(f"server.api.{name}")
        except ImportError:
            continue
        paths.update(getattr(module, "OPENAPI_PATHS", {}))
        components["schemas"].update(getattr(module, "OPENAPI_SCHEMAS", {}))
    return {"openapi": "3.0.3",
            "info": {"title": "fieldsync sync server", "version": __version__,
                     "description": "Offline-first sync of health records (DESIGN.md)."},
            "servers": [{"url": "/"}],
            "security": [{"bearer": []}],
            "paths": paths, "components": components}

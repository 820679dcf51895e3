"""`GET /api/v1/exports/<form>.<csv|xlsx|jsonl>` and `all.<xlsx|zip>`.

Streamed from one read snapshot (server/exports/). Every export is
audited before its first byte leaves: who, what, the filters, the row count,
and whether it includes restricted forms (a restricted read).
"""
import re

from flask import Blueprint, Response, current_app, g, request

from .. import exports
from ..auth import audit, require_auth
from ..catalog import Catalog
from ..db import get_db, write_transaction
from ..errors import ApiError

bp = Blueprint("exports", __name__)

# ASCII digits only: str.isdigit() also accepts '²', which int() refuses (a 500).
_DIGITS = re.compile(r"^[0-9]{1,9}\Z")

PARAMS = ("area", "since", "until", "after", "version", "include_deleted", "bom", "repeat")


def _params():
    """The query parameters, checked; an unknown one is an error, never ignored
    (a mistyped `aera=` must not quietly export every area)."""
    unknown = sorted(set(request.args) - set(PARAMS))
    if unknown:
        raise ApiError("invalid_parameter", f"Unknown parameter {unknown[0]!r}; an export "
                       f"takes {', '.join(PARAMS)}.", 400, details={"parameter": unknown[0]})
    args = request.args
    out = {"area": args.get("area") or None, "since": args.get("since") or None,
           "until": args.get("until") or None, "after": args.get("after") or None,
           "repeat": args.get("repeat") or None}
    try:
        out["include_deleted"] = exports.parse_bool(args.get("include_deleted", ""),
                                                    "include_deleted")
        out["bom"] = exports.parse_bool(args.get("bom", ""), "bom")
    except exports.ExportError as exc:
        raise ApiError("invalid_parameter", str(exc), 400, details={"parameter": exc.field})
    version = args.get("version")
    if version:
        if not _DIGITS.match(version) or int(version) < 1:
            raise ApiError("invalid_parameter", "version must be a positive whole number.",
                           400, details={"parameter": "version"})
        out["version"] = int(version)
    else:
        out["version"] = None
    return out


def _error(exc):
    if isinstance(exc, exports.ExportDenied):
        return ApiError("forbidden", str(exc), 403, details={"parameter": exc.field})
    if isinstance(exc, exports.ExportNotFound):
        return ApiError("not_found", str(exc), 404, details={"parameter": exc.field})
    return ApiError("invalid_parameter", str(exc), 400, details={"parameter": exc.field})


@bp.get("/api/v1/exports/<name>")
@require_auth(roles=("supervisor", "admin"))
def export(name):
    target, dot, fmt = name.rpartition(".")
    if not dot or not target:
        raise ApiError("not_found", "Ask for <form>.<csv|xlsx|jsonl> or all.<xlsx|zip>.", 404)
    params = _params()
    db = get_db()
    cfg = current_app.config
    try:
        job = exports.open_export(cfg["DB"], Catalog(db), g.user, target, fmt,
                                  tz=cfg["TIMEZONE"], tmpdir=cfg.get("EXPORT_TMPDIR"),
                                  chunk=cfg.get("EXPORT_CHUNK_RECORDS", exports.CHUNK),
                                  **params)
    except exports.ExportError as exc:
        raise _error(exc) from None
    try:
        with write_transaction(db):
            audit(db, g.user["username"], "export", job.details)
            if job.restricted:
                audit(db, g.user["username"], "restricted_read",
                      {"forms": job.restricted, "via": "export", "rows": job.count})
    except BaseException:
        job.close()
        raise
    headers = {
        "Content-Disposition": f'attachment; filename="{job.filename}"',
        "Cache-Control": "no-store",        # health records: never kept by a proxy
        "X-Fieldsync-Count": str(job.count),
    }
    # Pass as `after` next time for "every record changed since this export":
    # exact, in commit order (README "Export").
    headers["X-Fieldsync-Next-After"] = str(job.next_after)
    if job.next_since:
        # Kept for older scripts: as `since` (inclusive) it repeats the rows
        # of the newest commit; `after` does not.
        headers["X-Fieldsync-Next-Since"] = job.next_since
    if job.length is not None:
        headers["Content-Length"] = str(job.length)
    response = Response(job.chunks, mimetype=job.content_type.split(";")[0], headers=headers)
    response.content_type = job.content_type
    # Already streamed, never buffered or re-encoded by a later hook.
    response.direct_passthrough = True
    response.call_on_close(job.close)
    return response


def _err(description):
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_BINARY = {"schema": {"type": "string", "format": "binary"}}

#: Merged into GET /api/openapi.json by server/openapi.py.
OPENAPI_PATHS = {
    "/api/v1/exports/{name}": {"get": {
        "summary": "The current state of a form (or all forms), streamed from one snapshot.",
        "operationId": "export", "security": [{"bearer": []}],
        "description": "`name` is `<form>.<csv|xlsx|jsonl>`, `all.xlsx` (a sheet per form "
                       "and per repeat) or `all.zip` (a CSV per form and per repeat). "
                       "Supervisors (their areas) and admins only. Headers: "
                       "`X-Fieldsync-Count` (records), `X-Fieldsync-Next-After` (pass as "
                       "`after` next time: every record changed since this export, once, "
                       "in its current state), `X-Fieldsync-Next-Since` (older: the newest "
                       "commit time, inclusive, so it repeats that commit's rows), "
                       "`Content-Length` for XLSX. An empty parameter is the same as none.",
        "parameters": [
            {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": r"^[a-z0-9_]+\.(csv|xlsx|jsonl|zip)$"}},
            {"name": "area", "in": "query", "schema": {
                "type": "string", "pattern": r"^([A-Z0-9]+(\.[A-Z0-9]+)*)?$"}},
            {"name": "since", "in": "query", "schema": {"type": "string"},
             "description": "ISO 8601, inclusive, on server commit time."},
            {"name": "until", "in": "query", "schema": {"type": "string"},
             "description": "ISO 8601, exclusive, on server commit time."},
            {"name": "after", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1},
             "description": "The `X-Fieldsync-Next-After` of an earlier export: only the "
                            "records changed since it (exclusive, in commit order). 400 "
                            "if it is past the newest change (another or restored "
                            "database)."},
            {"name": "version", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 999999999}},
            {"name": "include_deleted", "in": "query", "schema": {"type": "string",
                                                                   "enum": ["0", "1"]}},
            {"name": "bom", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}},
            {"name": "repeat", "in": "query", "schema": {"type": "string"},
             "description": "CSV only: the entries of this repeat field."}],
        "responses": {
            "200": {"description": "The export.", "headers": {
                "X-Fieldsync-Count": {"required": True, "schema": {"type": "integer"}},
                "X-Fieldsync-Next-After": {"required": True, "schema": {"type": "integer"}},
                "X-Fieldsync-Next-Since": {"schema": {"type": "string"}}}, "content": {
                "text/csv": _BINARY, "application/x-ndjson": _BINARY,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _BINARY,
                "application/zip": _BINARY}},
            "400": _err("Bad parameter or format."),
            "401": _err("Missing, invalid, expired or revoked token."),
            "403": _err("Not a supervisor or admin, area outside yours, or a restricted form."),
            "404": _err("No such form, version or repeat.")}}},
}

"""Conflict review for supervisors (DESIGN.md "Merge and conflicts").

- `GET /api/v1/conflicts`: the conflict log in the user's areas, filters
  `status` (open/resolved), `area`, `form`; paged by `after` (an entry id)
  and `limit`. Health workers may list the open entries of their areas
  (`status=open`, required for them): their device shows both values
  whichever edit arrived first (docs/internals.md "Contract additions").
- `POST /api/v1/conflicts/<id>/resolve` with `{"value": v}` or
  `{"keep": "current"}`: the choice is written as a new change with a fresh
  server clock (`storage.apply_server_change`), so it wins over both sides
  and reaches every device on its next pull. Other open entries for the same
  record and field are settled by it too and marked resolved with it.
- `GET /api/v1/invalid_merges`: records flagged `invalid_merge` (two valid
  concurrent edits that together break a rule), with the rules they break,
  filters `area`, `form`. They are fixed by an ordinary edit on a device.

A conflict in another area, or of a form the role may not read, is answered
404 as if it did not exist. Listing a restricted form's conflicts is audited
as a restricted read; every resolution is audited.
"""
import json
import re

from flask import Blueprint, current_app, g, jsonify, request

from .. import clock, exports
from ..auth import audit, require_auth
from ..body import read_json
from ..catalog import Catalog
from ..db import get_db, read_snapshot, write_transaction
from ..errors import ApiError
from ..scope import covers
from ..storage import apply_server_change, get_record
from schemas.forms import local_today

bp = Blueprint("review", __name__)

ROLES = ("supervisor", "admin")
LIMIT_DEFAULT, LIMIT_MAX = 500, 5000
DELETED = "deleted"
# ASCII digits only: str.isdigit() also accepts '²', which int() refuses (a 500).
# 19 digits hold every value up to 2**62.
_DIGITS = re.compile(r"^[0-9]{1,19}\Z")


def _check_params(allowed):
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError("invalid_parameter", f"Unknown parameter {unknown[0]!r}; this "
                       f"endpoint takes {', '.join(allowed)}.", 400,
                       details={"parameter": unknown[0]})


def _int_param(name, default, low, high):
    text = request.args.get(name)
    if text is None or text == "":
        return default
    if not _DIGITS.match(text) or not low <= int(text) <= high:
        raise ApiError("invalid_parameter", f"{name} must be a whole number from {low} "
                       f"to {high}.", 400, details={"parameter": name})
    return int(text)


def _scope_where(column="area"):
    """The WHERE fragment for the user's areas, narrowed by `?area=`."""
    area = request.args.get("area") or None
    if area is not None:
        from schemas.wire import AREA_RE
        if not AREA_RE.match(area):
            raise ApiError("invalid_parameter", "area must be an area code like QN.LM.03.",
                           400, details={"parameter": "area"})
    scopes = exports.narrowed_areas(g.user.get("areas") or [], area, g.user["role"] == "admin")
    if scopes == []:
        raise ApiError("forbidden", f"Area {area} is outside your areas.", 403,
                       details={"parameter": "area"})
    return exports.area_clause(scopes, column)


def _hidden_forms(catalog):
    """Form ids whose records (and so conflicts) this user may not read, and
    the restricted ones (their reads are audited)."""
    return set(catalog.unreadable_forms(g.user)), set(catalog.restricted_forms())


def _form_filter(sql, params, hidden):
    """Narrow a listing to `?form=` and away from forms the user may not read."""
    form = request.args.get("form")
    if form:
        sql += " AND form = ?"
        params = params + [form]
    if hidden:
        sql += " AND form NOT IN (%s)" % ", ".join("?" * len(hidden))
        params = params + sorted(hidden)
    return sql, params


def _conflict_out(row):
    return {"id": row["id"], "record_id": row["record_id"], "form": row["form"],
            "area": row["area"], "field": row["field"],
            "current": json.loads(row["current"]), "losing": json.loads(row["losing"]),
            "status": row["status"], "created_at": row["created_at"],
            "resolved_at": row["resolved_at"], "resolved_by": row["resolved_by"],
            "resolution": json.loads(row["resolution"]) if row["resolution"] else None}


@bp.get("/api/v1/conflicts")
@require_auth()
def list_conflicts():
    _check_params(("status", "area", "form", "after", "limit"))
    status = request.args.get("status") or None
    if status not in (None, "open", "resolved"):
        raise ApiError("invalid_parameter", "status must be open or resolved.", 400,
                       details={"parameter": "status"})
    if g.user["role"] not in ROLES and status != "open":
        raise ApiError("forbidden", "Health workers may list only open conflicts "
                       "(status=open).", 403, details={"role": g.user["role"]})
    limit = _int_param("limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    after = _int_param("after", 0, 0, 2 ** 62)
    where, params = _scope_where()
    db = get_db()
    hidden, restricted = _hidden_forms(Catalog(db))
    sql = f"SELECT * FROM conflicts WHERE id > ? AND {where}"
    params = [after] + params
    if status:
        sql += " AND status = ?"
        params.append(status)
    sql, params = _form_filter(sql, params, hidden)
    rows = list(db.query(sql + " ORDER BY id LIMIT ?", params + [limit + 1]))
    more = len(rows) > limit
    rows = rows[:limit]
    read = sorted({r["form"] for r in rows} & restricted)
    if read:
        with write_transaction(db):
            audit(db, g.user["username"], "restricted_read",
                  {"forms": read, "via": "conflicts",
                   "conflicts": [r["id"] for r in rows if r["form"] in read]})
    out = {"conflicts": [_conflict_out(r) for r in rows], "more": more}
    if more:
        out["next_after"] = rows[-1]["id"]
    return jsonify(out)


def _choice(body):
    """The resolution asked for: ("value", v) or ("keep", None)."""
    keys = set(body)
    if keys == {"value"}:
        return "value", body["value"]
    if keys == {"keep"} and body["keep"] == "current":
        return "keep", None
    raise ApiError("invalid_resolution", 'Send {"value": v} to write a value, or '
                   '{"keep": "current"} to keep the value that won.', 400,
                   details={"keys": sorted(keys)[:5]})


def _change_for(choice, value, conflict, state):
    """(data, deleted) for apply_server_change.

    An ordinary field: the chosen value, or the field's value as it stands now
    (keep current never undoes a newer edit made since the conflict). The
    `deleted` pseudo-field (an edit and a delete crossed): a value of true
    deletes, false restores; keep current writes the record's present state
    again. A deleted record is never revived by "keep current" on one of its
    fields: a fresh edit would outrank the tombstone, so the tombstone is
    rewritten instead.
    """
    field = conflict["field"]
    fields = state["fields"]
    tomb = state.get("deleted")
    deleted_now = bool(tomb and tomb["value"]
                       and all(r["hlc"] < tomb["hlc"] for r in fields.values()))
    if field == DELETED:
        if choice == "keep":
            return {}, deleted_now
        if not isinstance(value, bool):
            raise ApiError("invalid_value", "This conflict is between an edit and a delete: "
                           'send {"value": true} to delete the record or {"value": false} '
                           "to keep it.", 400, details={"field": DELETED})
        return {}, value
    if choice == "keep":
        if deleted_now:
            return {}, True
        return {field: fields[field]["value"] if field in fields else None}, None
    return {field: value}, None


#: SQLite's largest integer: a bigger id names no conflict (and would not bind).
_MAX_ID = 2 ** 63 - 1


def _conflict_row(db, conflict_id):
    if not 0 <= conflict_id <= _MAX_ID:
        return None
    cursor = db.execute("SELECT * FROM conflicts WHERE id = ?", [conflict_id])
    row = cursor.fetchone()
    return dict(zip([c[0] for c in cursor.description], row)) if row else None


@bp.post("/api/v1/conflicts/<int:conflict_id>/resolve")
@require_auth(roles=ROLES)
def resolve(conflict_id):
    body = read_json(limit=1024 * 1024)
    choice, value = _choice(body)
    conflict, record, settled = resolve_conflict(get_db(), conflict_id, choice, value)
    return jsonify({"conflict": conflict, "record": record, "settled": settled})


def resolve_conflict(db, conflict_id, choice, value):
    """Resolve a conflict as `g.user`: the API's resolve and the console's.

    :param choice: "keep" (the current value) or "value" (write `value`).
    :returns: (the conflict as listed, the record's new wire state, ids of
        other entries it settled); raises `ApiError` 404/409/400/403.
    """
    catalog = Catalog(db)
    hidden, _ = _hidden_forms(catalog)
    cfg = current_app.config
    with write_transaction(db):
        conflict = _conflict_row(db, conflict_id)
        if conflict is None or not covers(g.user, conflict["area"]) \
                or conflict["form"] in hidden:
            raise ApiError("not_found", f"No conflict {conflict_id} in your areas.", 404)
        if conflict["status"] != "open":
            raise ApiError("already_resolved", f"Conflict {conflict_id} was resolved by "
                           f"{conflict['resolved_by']} at {conflict['resolved_at']}.", 409,
                           details={"resolution": json.loads(conflict["resolution"] or "null")})
        stored = get_record(db, conflict["record_id"])
        data, deleted = _change_for(choice, value, conflict, stored["state"])
        result = apply_server_change(
            db, conflict["record_id"], data, g.user, deleted=deleted, catalog=catalog,
            tolerance_seconds=cfg["CLOCK_TOLERANCE_SECONDS"], tz_name=cfg["TIMEZONE"])
        if result["status"] == "rejected":
            raise ApiError("invalid_value", "The chosen value is not valid for this field; "
                           "nothing was written.", 400, details={"errors": result["errors"]})
        if result["status"] not in ("applied", "unchanged"):
            raise ApiError("forbidden", "You may not write this record.", 403,
                           details={"errors": result.get("errors", {})})
        record = result["record"]
        now = clock.now_iso()
        resolution = {"keep": "current"} if choice == "keep" else {"value": value}
        resolution.update({"hlc": record["hlc"], "seq": record.get("seq"),
                           "status": result["status"]})
        db.execute("UPDATE conflicts SET status = 'resolved', resolved_at = ?, resolved_by = ?, "
                   "resolution = ? WHERE id = ?",
                   [now, g.user["username"], json.dumps(resolution), conflict_id])
        # The same field's other open entries are settled by this write too.
        settled = [r[0] for r in db.execute(
            "SELECT id FROM conflicts WHERE record_id = ? AND field = ? AND status = 'open' "
            "AND id != ?", [conflict["record_id"], conflict["field"], conflict_id])]
        for other in settled:
            db.execute("UPDATE conflicts SET status = 'resolved', resolved_at = ?, "
                       "resolved_by = ?, resolution = ? WHERE id = ?",
                       [now, g.user["username"],
                        json.dumps({"settled_by": conflict_id, **resolution}), other])
        audit(db, g.user["username"], "conflict_resolve",
              {"conflict": conflict_id, "record_id": conflict["record_id"],
               "field": conflict["field"], "choice": choice, "settled": settled})
        done = _conflict_row(db, conflict_id)
    return _conflict_out(done), record, settled


@bp.get("/api/v1/invalid_merges")
@require_auth(roles=ROLES)
def invalid_merges():
    _check_params(("area", "form", "after", "limit"))
    limit = _int_param("limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    after = _int_param("after", 0, 0, 2 ** 62)
    where, params = _scope_where()
    db = get_db()
    catalog = Catalog(db)
    hidden, restricted = _hidden_forms(catalog)
    # flags is a small JSON list; the LIKE prefilter is exact because the
    # flag names are fixed identifiers, and json_each confirms it.
    sql = ("SELECT id, form, form_version, area, data, flags, updated_at, updated_by, device, "
           "seq FROM records WHERE seq > ? AND deleted = 0 AND flags LIKE '%invalid_merge%' "
           "AND EXISTS (SELECT 1 FROM json_each(records.flags) WHERE value = 'invalid_merge') "
           f"AND {where}")
    params = [after] + params
    sql, params = _form_filter(sql, params, hidden)
    with read_snapshot(db):
        rows = db.execute(sql + " ORDER BY seq LIMIT ?", params + [limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    out = []
    today = local_today(current_app.config["TIMEZONE"])  # as push judged it
    for rid, form_id, version, area, data, flags, updated_at, updated_by, device, seq in rows:
        values = json.loads(data)
        compiled = catalog.get(form_id, version)
        errors = compiled.validate_record(values, today=today).errors if compiled else {}
        out.append({"id": rid, "form": form_id, "form_version": version, "area": area,
                    "data": values, "flags": json.loads(flags), "errors": errors,
                    "updated_at": updated_at, "updated_by": updated_by, "device": device,
                    "seq": seq})
    read = sorted({r["form"] for r in out} & restricted)
    if read:
        with write_transaction(db):
            audit(db, g.user["username"], "restricted_read",
                  {"forms": read, "via": "invalid_merges",
                   "records": [r["id"] for r in out if r["form"] in read]})
    answer = {"records": out, "more": more}
    if more:
        answer["next_after"] = rows[-1][-1]
    return jsonify(answer)


def _err(description):
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


# Empty (`area=`) is the same as no area: every area of the caller.
_AREA = {"type": "string", "pattern": r"^([A-Z0-9]+(\.[A-Z0-9]+)*)?$"}
_PAGING = [{"name": "after", "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2 ** 62}},
           {"name": "limit", "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}}]

#: Merged into GET /api/openapi.json by server/openapi.py.
OPENAPI_SCHEMAS = {
    "ConflictSide": {"type": "object", "required": ["value", "hlc", "device", "user"],
                     "properties": {"value": {}, "hlc": {"type": "string"},
                                    "device": {"type": "string", "nullable": True},
                                    "user": {"type": "string", "nullable": True}}},
    "Conflict": {"type": "object",
                 "required": ["id", "record_id", "form", "area", "field", "current", "losing",
                              "status"],
                 "properties": {"id": {"type": "integer"}, "record_id": {"type": "string"},
                                "form": {"type": "string"}, "area": {"type": "string"},
                                "field": {"type": "string"},
                                "current": _ref("ConflictSide"), "losing": _ref("ConflictSide"),
                                "status": {"type": "string", "enum": ["open", "resolved"]},
                                "created_at": {"type": "string"},
                                "resolved_at": {"type": "string", "nullable": True},
                                "resolved_by": {"type": "string", "nullable": True},
                                "resolution": {"type": "object", "nullable": True}}},
}

OPENAPI_PATHS = {
    "/api/v1/conflicts": {"get": {
        "summary": "The conflict log in the caller's areas (supervisors, admins; health "
                   "workers: status=open only, their areas and readable forms).",
        "operationId": "conflicts", "security": [{"bearer": []}],
        "parameters": [
            {"name": "status", "in": "query",
             "schema": {"type": "string", "enum": ["open", "resolved"]}},
            {"name": "area", "in": "query", "schema": _AREA},
            {"name": "form", "in": "query", "schema": {"type": "string"}}, *_PAGING],
        "responses": {
            "200": {"description": "A page of conflicts, oldest first.", "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["conflicts", "more"],
                    "properties": {"conflicts": {"type": "array", "items": _ref("Conflict")},
                                   "more": {"type": "boolean"},
                                   "next_after": {"type": "integer"}}}}}},
            "400": _err("Bad parameter."),
            "401": _err("Missing, invalid, expired or revoked token."),
            "403": _err("A health worker without status=open, or an area outside yours.")}}},
    "/api/v1/conflicts/{id}/resolve": {"post": {
        "summary": "Resolve a conflict: the choice is written with a fresh server clock.",
        "operationId": "resolve_conflict", "security": [{"bearer": []}],
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [
                {"type": "object", "required": ["value"], "additionalProperties": False,
                 "properties": {"value": {}}},
                {"type": "object", "required": ["keep"], "additionalProperties": False,
                 "properties": {"keep": {"type": "string", "enum": ["current"]}}}]}}}},
        "responses": {
            "200": {"description": "Resolved; the new record state.", "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["conflict", "record", "settled"],
                    "properties": {"conflict": _ref("Conflict"), "record": {"type": "object"},
                                   "settled": {"type": "array",
                                               "items": {"type": "integer"}}}}}}},
            "400": _err("Not a valid resolution, or the value fails the form's rules."),
            "401": _err("Missing, invalid, expired or revoked token."),
            "403": _err("Health workers may not resolve conflicts."),
            "404": _err("No such conflict in your areas."),
            "409": _err("Already resolved.")}}},
    "/api/v1/invalid_merges": {"get": {
        "summary": "Records flagged invalid_merge, with the rules they break.",
        "operationId": "invalid_merges", "security": [{"bearer": []}],
        "parameters": [{"name": "area", "in": "query", "schema": _AREA},
                       {"name": "form", "in": "query", "schema": {"type": "string"}},
                       *_PAGING],
        "responses": {
            "200": {"description": "A page of flagged records.", "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["records", "more"],
                    "properties": {"records": {"type": "array", "items": {"type": "object"}},
                                   "more": {"type": "boolean"},
                                   "next_after": {"type": "integer"}}}}}},
            "400": _err("Bad parameter."),
            "401": _err("Missing, invalid, expired or revoked token."),
            "403": _err("Health worker, or an area outside yours.")}}},
}

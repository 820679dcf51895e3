"""`GET /api/v1/indicators` and `GET /api/v1/worklists/<name>` (issue 15).

Supervisors see their areas, admins every area, health workers nothing
(403). Read from the `facts` table (server/indicators/facts.py), never from
the records themselves.
"""
from flask import Blueprint, g, jsonify, request

from .. import worklists
from ..auth import require_auth
from ..catalog import Catalog
from ..db import get_db
from ..errors import ApiError
from ..indicators import labels, query

bp = Blueprint("indicators", __name__)


def _check(allowed):
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError("invalid_parameter", f"Unknown parameter {unknown[0]!r}; this "
                       f"endpoint takes {', '.join(allowed)}.", 400,
                       details={"parameter": unknown[0]})


def _api_error(exc):
    status = 403 if isinstance(exc, query.Denied) else 400
    code = "forbidden" if status == 403 else "invalid_parameter"
    return ApiError(code, str(exc), status, details={"parameter": exc.field})


@bp.get("/api/v1/indicators")
@require_auth()
def get_indicators():
    _check(("area", "from", "to", "lang"))
    lang = labels.pick_lang(request.args.get("lang"), request.headers.get("Accept-Language"))
    db = get_db()
    try:
        area = query.parse_area(request.args.get("area"))
        start = query.parse_date(request.args.get("from"), "from")
        end = query.parse_date(request.args.get("to"), "to")
        answer = query.indicator_report(db, g.user, Catalog(db), area, start, end, lang)
    except query.BadParameter as exc:
        raise _api_error(exc) from None
    return jsonify(answer)


@bp.get("/api/v1/worklists/<name>")
@require_auth()
def get_worklist(name):
    _check(("area", "on", "lang"))
    db = get_db()
    try:
        area = query.parse_area(request.args.get("area"))
        on = query.parse_date(request.args.get("on"), "on", required=False)
        answer = worklists.worklist(db, g.user, name, area, on)
    except query.BadParameter as exc:
        raise _api_error(exc) from None
    except KeyError:
        raise ApiError("not_found", f"No work list named {name[:40]!r}; the lists are "
                       f"{', '.join(worklists.NAMES)}.", 404, details={"parameter": "name"})
    return jsonify(answer)


_ERR = {"description": "Error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_CELL = {"type": "object", "required": ["numerator", "denominator", "value"], "properties": {
    "numerator": {"type": "integer", "nullable": True},
    "denominator": {"type": "integer", "nullable": True},
    "value": {"type": "number", "nullable": True,
              "description": "A percentage (one decimal), or the count when the "
                             "denominator is null."}}}
OPENAPI_SCHEMAS = {
    "IndicatorReport": {"type": "object", "required": ["area", "from", "to", "indicators"],
                        "properties": {
        "area": {"type": "string", "nullable": True}, "from": {"type": "string"},
        "to": {"type": "string"}, "lang": {"type": "string", "enum": ["vi", "en"]},
        "indicators": {"type": "array", "items": {
            "type": "object", "required": ["id", "label", "numerator", "denominator",
                                           "value", "by"],
            "properties": {**_CELL["properties"], "id": {"type": "string"},
                           "label": {"type": "string"},
                           "by": {"type": "object", "additionalProperties": {
                               "type": "object", "additionalProperties": _CELL}},
                           "extra": {"type": "object"},
                           "withheld": {"type": "boolean"}}}}}},
    "WorkList": {"type": "object", "required": ["name", "area", "on", "rows"], "properties": {
        "name": {"type": "string"}, "area": {"type": "string", "nullable": True},
        "on": {"type": "string"},
        "rows": {"type": "array", "items": {
            "type": "object", "required": ["person", "area", "fact", "date", "days_overdue"],
            "properties": {
                "person": {"type": "object", "properties": {
                    "id": {"type": "string", "nullable": True},
                    "name": {"type": "string", "nullable": True}}},
                "area": {"type": "string"}, "fact": {"type": "string"},
                "date": {"type": "string", "nullable": True},
                "days_overdue": {"type": "integer"}, "details": {"type": "object"}}}}}},
}


def _q(name, description, required=False, fmt=None):
    schema = {"type": "string", **({"format": fmt} if fmt else {})}
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


OPENAPI_PATHS = {
    "/api/v1/indicators": {"get": {
        "summary": "DOMAIN.md §2 indicators for an area and a period (supervisors, admins).",
        "operationId": "indicators", "security": [{"bearer": []}],
        "parameters": [_q("area", "An area code (default: the caller's areas)."),
                       _q("from", "First day of the period.", True, "date"),
                       _q("to", "Last day (the status indicators' reference date).", True,
                          "date"),
                       _q("lang", "vi or en (default: Accept-Language, then vi).")],
        "responses": {"200": {"description": "The indicators", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/IndicatorReport"}}}},
            "400": _ERR, "401": _ERR, "403": _ERR}}},
    "/api/v1/worklists/{name}": {"get": {
        "summary": "A work list for an area (supervisors, admins).",
        "operationId": "worklist", "security": [{"bearer": []}],
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": list(worklists.NAMES)}},
                       _q("area", "An area code (default: the caller's areas)."),
                       _q("on", "Reference date (default: today).", False, "date"),
                       _q("lang", "Accepted for symmetry; rows carry codes.")],
        "responses": {"200": {"description": "The rows, most overdue first", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/WorkList"}}}},
            "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR}}},
}

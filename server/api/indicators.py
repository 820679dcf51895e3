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

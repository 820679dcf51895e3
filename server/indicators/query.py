"""Parameters, scope and the answer of an indicator report or a work list,
shared by the API (server/api/indicators.py) and the CLI (report.py)."""
from datetime import date

from schemas.wire import AREA_RE

from ..db import read_snapshot
from ..exports import area_clause, narrowed_areas
from . import compute, labels

ROLES = ("supervisor", "admin")


class BadParameter(ValueError):
    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


class Denied(BadParameter):
    """Outside the user's areas or role (403)."""


def parse_area(area):
    if area in (None, ""):
        return None
    if not AREA_RE.match(area):
        raise BadParameter("area", "area must be an area code like QN.LM.03.")
    return area


def parse_date(text, field, required=True):
    if text in (None, ""):
        if required:
            raise BadParameter(field, f"{field} is required (a date, YYYY-MM-DD).")
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise BadParameter(field, f"{field} must be a date as YYYY-MM-DD, not {text[:20]!r}.")


def scope(user, area):
    """`(clause, params, scopes)` for `area` within the user's areas.

    :raises Denied: a health worker, or `area` outside the user's areas.
    """
    if user["role"] not in ROLES:
        raise Denied("role", "Indicators and work lists are for supervisors and admins.")
    scopes = narrowed_areas(user.get("areas") or [], area, user["role"] == "admin")
    if scopes == []:
        raise Denied("area", f"Area {area} is outside your areas.")
    clause, params = area_clause(scopes)
    return clause, params, scopes


def indicator_report(db, user, catalog, area, start, end, lang="vi"):
    """The `GET /api/v1/indicators` answer."""
    if end < start:
        raise BadParameter("to", "to must not be before from.")
    clause, params, scopes = scope(user, area)
    cp_allowed = "cp_report" not in catalog.unreadable_forms(user)
    with read_snapshot(db):
        rows = compute.indicators(db, clause, params, scopes, start, end, cp_allowed)
    for row in rows:
        row["label"] = labels.label(row["id"], lang)
    return {"area": area, "from": start.isoformat(), "to": end.isoformat(), "lang": lang,
            "indicators": [{k: row[k] for k in ("id", "label", "numerator", "denominator",
                                                  "value", "by")} | {
                k: row[k] for k in ("extra", "withheld") if k in row} for row in rows]}

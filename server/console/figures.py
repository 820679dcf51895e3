"""Console pages for the indicators and the work lists (issue 16).

Every figure comes from the functions the API views call
(`indicators.query.indicator_report`, `worklists.worklist`), with the signed-in
user, so scope (areas, role, cp_report) is enforced exactly as the API does;
downloads use report.py's writers. The chart of an indicator by month is the
same report called once per month of the period (at most `MAX_MONTHS`).
"""
import io
from datetime import date, timedelta

from flask import current_app, g, render_template, request, send_file, url_for
from flask_babel import get_locale
from flask_babel import gettext as _

from schemas.forms import local_today

from .. import worklists
from ..catalog import Catalog
from ..db import get_db
from ..indicators import query, report
from ..scope import covers
from .blueprint import bp
from .session import error_page, signed_in

#: The months charted; a longer period charts its last twelve.
MAX_MONTHS = 12
#: Shown on the dashboard, for the current quarter.
HEADLINE = ("anc4", "facility_delivery", "wasting", "sam", "mam")


def list_names():
    """{list: label} in the page language (labels here so Babel extracts them)."""
    return {
        "sam_mam": _("Children with SAM or MAM to follow up"),
        "danger_signs_not_referred": _("Danger signs not referred"),
        "no_home_visit_day7": _("No home visit in the first 7 days after birth"),
        "no_home_visit_day42": _("No home visit in the 42 days after birth"),
        "anc_overdue": _("Antenatal check-up overdue"),
        "past_edd_no_outcome": _("Past the due date with no outcome recorded"),
        "deaths": _("Deaths to review"),
        "hi_expiring_30d": _("Health insurance card expiring within 30 days"),
        "growth_overdue": _("Growth monitoring overdue"),
    }


def _lang():
    return str(get_locale() or "vi")


def quarter_of(day):
    first = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return first, _month_end(date(first.year, first.month + 2, 1))


def _month_end(first):
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def months(start, end):
    """[(first, last)] of each calendar month meeting [start, end], clipped to it."""
    out, first = [], date(start.year, start.month, 1)
    while first <= end:
        last = _month_end(first)
        out.append((max(first, start), min(last, end)))
        first = last + timedelta(days=1)
    return out


def _today():
    return local_today(current_app.config["TIMEZONE"])


def period(args):
    """(start, end, selected) from `?period=2026-Q1|2026-03` or `?from=&to=`;
    the current quarter by default. :raises query.BadParameter:"""
    chosen = (args.get("period") or "").strip()
    if args.get("from") or args.get("to"):
        start = query.parse_date(args.get("from"), "from")
        end = query.parse_date(args.get("to"), "to")
        if end < start:
            raise query.BadParameter("to", "to is before from")
        return start, end, ""
    try:
        if len(chosen) == 7 and chosen[4] == "-" and chosen[5] == "Q" and chosen[6] in "1234":
            return (*quarter_of(date(int(chosen[:4]), 3 * int(chosen[6]) - 2, 1)), chosen)
        if len(chosen) == 7 and chosen[4] == "-":
            first = date(int(chosen[:4]), int(chosen[5:]), 1)
            return first, _month_end(first), chosen
    except ValueError:
        pass
    if chosen:
        raise query.BadParameter("period", _("Choose a quarter (2026-Q1) or a month (2026-03)."))
    start, end = quarter_of(_today())
    return start, end, f"{start.year}-Q{(start.month + 2) // 3}"


def period_choices(today):
    """The last eight quarters and the last twelve months, newest first."""
    quarters, (q, _end) = [], quarter_of(today)
    for _i in range(8):
        quarters.append(f"{q.year}-Q{(q.month + 2) // 3}")
        q = quarter_of(q - timedelta(days=1))[0]
    month_list, m = [], date(today.year, today.month, 1)
    for _i in range(12):
        month_list.append(f"{m.year}-{m.month:02d}")
        m = date(m.year - (m.month == 1), (m.month - 2) % 12 + 1, 1)
    return quarters, month_list


def _params():
    """(area, start, end, selected) or an error page to answer."""
    area = query.parse_area((request.args.get("area") or "").strip().upper() or None)
    start, end, selected = period(request.args)
    return area, start, end, selected


def _refuse(exc):
    """The page for a refused parameter, in the page language."""
    if isinstance(exc, query.Denied):
        return error_page(403, _("These figures are outside your areas.")
                          if exc.field == "area" else
                          _("Indicators and work lists are for supervisors and admins."))
    if exc.field == "area":
        return error_page(400, _("Type an area code like QN.LM.03."))
    if exc.field == "period":
        return error_page(400, str(exc))
    return error_page(400, _("Dates are written YYYY-MM-DD, and the period must not end "
                             "before it starts."))


def spark(values, percent):
    """A small line chart of monthly values (None: no denominator) as SVG geometry."""
    width, height, pad = 150, 36, 3
    known = [v for v in values if v is not None]
    if not known:
        return None
    top = 100.0 if percent else max(max(known), 1)
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    points = []
    for i, v in enumerate(values):
        if v is not None:
            points.append((round(pad + i * step, 1),
                           round(height - pad - (height - 2 * pad) * min(v, top) / top, 1)))
    return {"width": width, "height": height, "points": points,
            "line": " ".join(f"{x},{y}" for x, y in points)}


def indicator_table(db, user, area, start, end, lang, by_month=True):
    """The API's answer plus, per indicator, its monthly values and sparkline."""
    catalog = Catalog(db)
    answer = query.indicator_report(db, user, catalog, area, start, end, lang)
    if not by_month:
        return answer, []
    spans = months(start, end)[-MAX_MONTHS:]
    monthly = [query.indicator_report(db, user, catalog, area, a, b, lang)["indicators"]
               for a, b in spans]
    for i, ind in enumerate(answer["indicators"]):
        values = [m[i]["value"] for m in monthly]
        ind["months"] = [(f"{a.year}-{a.month:02d}", v) for (a, _b), v in zip(spans, values)]
        ind["spark"] = spark(values, ind["denominator"] is not None)
    return answer, spans


def _area_choices(db):
    return sorted(set(g.user.get("areas") or []))


@bp.get("/indicators")
@signed_in()
def indicators():
    db = get_db()
    try:
        area, start, end, selected = _params()
        answer, spans = indicator_table(db, g.user, area, start, end, _lang())
    except query.BadParameter as exc:
        return _refuse(exc)
    quarters, month_list = period_choices(_today())
    return render_template(
        "indicators.html", answer=answer, area=area or "", start=start, end=end,
        selected=selected, quarters=quarters, month_list=month_list,
        areas=_area_choices(db), custom=not selected)


def _download(writer, answer, fmt, stem):
    buf = io.BytesIO()
    writer(answer, fmt, buf)
    buf.seek(0)
    mime = "text/csv" if fmt == "csv" else \
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return send_file(buf, mimetype=mime, as_attachment=True, download_name=f"{stem}.{fmt}")


@bp.get("/indicators/download")
@signed_in()
def indicators_download():
    fmt = request.args.get("format", "xlsx")
    if fmt not in ("csv", "xlsx"):
        return error_page(400, _("Choose CSV or XLSX."))
    db = get_db()
    try:
        area, start, end, _selected = _params()
        answer, _spans = indicator_table(db, g.user, area, start, end, _lang(), by_month=False)
    except query.BadParameter as exc:
        return _refuse(exc)
    stem = f"indicators_{area or 'all'}_{start.isoformat()}_{end.isoformat()}"
    return _download(report.write_indicators, answer, fmt, stem)


def _person_links(rows, catalog):
    """Mark the rows whose person the user may open in the console."""
    readable = "person" not in catalog.unreadable_forms(g.user)
    for r in rows:
        r["linked"] = bool(readable and r["person"]["id"] and covers(g.user, r["area"]))


def sam_mam_count(db, user, area=None):
    return len(worklists.worklist(db, user, "sam_mam", area,
                                  tz_name=current_app.config["TIMEZONE"])["rows"])


@bp.get("/worklists")
@signed_in()
def worklists_page():
    db = get_db()
    try:
        area = query.parse_area((request.args.get("area") or "").strip().upper() or None)
        counts = [(name, title, len(worklists.worklist(
            db, g.user, name, area, tz_name=current_app.config["TIMEZONE"])["rows"]))
            for name, title in list_names().items()]
    except query.BadParameter as exc:
        return _refuse(exc)
    return render_template("worklists.html", counts=counts, area=area or "",
                           areas=_area_choices(db), today=_today())


@bp.get("/worklists/<name>")
@signed_in()
def worklist_page(name):
    titles = list_names()
    if name not in titles:
        return error_page(404, _("There is no such work list."))
    db = get_db()
    fmt = request.args.get("format")
    try:
        area = query.parse_area((request.args.get("area") or "").strip().upper() or None)
        answer = worklists.worklist(db, g.user, name, area,
                                    tz_name=current_app.config["TIMEZONE"])
    except query.BadParameter as exc:
        return _refuse(exc)
    if fmt == "csv":
        return _download(report.write_worklist, answer, "csv",
                         f"{name}_{area or 'all'}_{answer['on']}")
    _person_links(answer["rows"], Catalog(db))
    return render_template("worklist.html", answer=answer, name=name, title=titles[name],
                           area=area or "", areas=_area_choices(db))


def headline(db, user):
    """The dashboard's figures: HEADLINE for the current quarter and the SAM/MAM
    count, or None when the user has no area to report on."""
    start, end = quarter_of(_today())
    try:
        answer = query.indicator_report(db, user, Catalog(db), None, start, end, _lang())
        count = sam_mam_count(db, user)
    except query.BadParameter:
        return None
    rows = [i for i in answer["indicators"] if i["id"] in HEADLINE]
    return {"indicators": rows, "sam_mam": count, "start": start, "end": end,
            "period": f"{start.year}-Q{(start.month + 2) // 3}"}

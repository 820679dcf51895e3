"""Console pages for supervisors and admins: dashboard, conflicts, downloads, records."""
import json
from datetime import datetime, timedelta, timezone

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from ..api.devices import device_rows
from ..api.review import DELETED, resolve_conflict
from ..auth import audit
from ..catalog import Catalog
from ..db import get_db, write_transaction
from ..errors import ApiError
from ..scope import covers
from ..storage import get_record
from . import figures, queries
from .blueprint import bp
from .session import signed_in
from .text import label, parse_time, sort_key, tz

#: A device whose last push or pull is older than this is "behind".
BEHIND = timedelta(days=1)
CHART_DAYS = 30
#: Conflicts per page: a page with choice lists stays well under 100 KB.
PAGE = 25


def _forms(catalog):
    """{form_id: newest definition} the user may read, by title."""
    hidden = set(catalog.unreadable_forms(g.user))
    newest = {}
    for form in catalog.all():
        d = form.definition
        if d["id"] not in hidden:
            newest[d["id"]] = d
    return dict(sorted(newest.items(), key=lambda kv: sort_key(label(kv[1].get("title", kv[0])))))


def _last_sync(device):
    times = [parse_time(device["last_push"]), parse_time(device["last_pull"])]
    times = [t for t in times if t]
    return max(times) if times else None


@bp.get("/")
@signed_in()
def dashboard():
    db = get_db()
    catalog = Catalog(db)
    hidden = catalog.unreadable_forms(g.user)
    now = datetime.now(timezone.utc)
    devices = device_rows(db, g.user)
    for d in devices:
        d["last_sync"] = _last_sync(d)
        d["behind"] = d["last_sync"] is None or now - d["last_sync"] > BEHIND
    devices.sort(key=lambda d: (d["last_sync"] or datetime.min.replace(tzinfo=timezone.utc)))
    refused = queries.refused_since(db, queries.day_start_utc(tz()))
    visible = {d["device_id"] for d in devices}
    refused = {k: v for k, v in refused.items() if k in visible}
    conflicts, open_total = queries.open_conflicts(db, g.user, hidden, limit=10)
    since = now - timedelta(days=CHART_DAYS)
    counts = queries.records_per_form_area(db, g.user, hidden,
                                           since.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    forms = _forms(catalog)
    return render_template(
        "dashboard.html", devices=devices[:50], device_total=len(devices),
        behind_total=sum(d["behind"] for d in devices), refused=refused,
        refused_total=sum(refused.values()), conflicts=conflicts, open_total=open_total,
        chart=_chart(counts, forms), forms=forms, chart_days=CHART_DAYS,
        headline=figures.headline(db, g.user))


def _chart(counts, forms):
    """A stacked horizontal bar per form (a segment per area), as SVG geometry."""
    per_form, areas = {}, []
    for form, area, n in counts:
        per_form.setdefault(form, []).append((area, n))
        if area not in areas:
            areas.append(area)
    areas.sort()
    if not per_form:
        return None
    top = max(sum(n for _, n in parts) for parts in per_form.values())
    left, width, row = 190, 360, 26
    bars = []
    for i, (form, parts) in enumerate(sorted(per_form.items())):
        x, segments = left, []
        for area, n in sorted(parts):
            w = max(1.0, width * n / top)
            segments.append({"x": round(x, 1), "w": round(w, 1), "n": n, "area": area,
                             "cls": f"a{areas.index(area) % 8}"})
            x += w
        title = label(forms[form].get("title", form)) if form in forms else form
        bars.append({"y": 8 + i * row, "form": form, "title": title, "segments": segments,
                     "total": sum(n for _, n in parts), "end": round(x + 6, 1)})
    return {"bars": bars, "height": 16 + len(bars) * row, "left": left,
            "legend": [(a, f"a{i % 8}") for i, a in enumerate(areas)]}


# -- conflicts ---------------------------------------------------------------

def _field_spec(catalog, form_id, version, field):
    form = catalog.get(form_id, version) or None
    if form is None:
        versions = catalog.versions(form_id)
        form = catalog.get(form_id, versions[-1]) if versions else None
    if form is None:
        return None
    return next((s for s in form.definition["fields"] if s["name"] == field), None)


def _conflict_view(row, catalog, stored):
    version = stored["state"]["form_version"] if stored else 1
    spec = _field_spec(catalog, row["form"], version, row["field"])
    return {"id": row["id"], "record_id": row["record_id"], "form": row["form"],
            "area": row["area"], "field": row["field"], "spec": spec,
            "field_label": label(spec["label"]) if spec else row["field"],
            "current": json.loads(row["current"]), "losing": json.loads(row["losing"]),
            "created_at": row["created_at"], "status": row["status"],
            "resolved_by": row.get("resolved_by"), "resolved_at": row.get("resolved_at")}


@bp.get("/conflicts")
@signed_in()
def conflicts():
    db = get_db()
    catalog = Catalog(db)
    hidden = catalog.unreadable_forms(g.user)
    after = request.args.get("after", "")
    after = int(after) if after.isascii() and after.isdigit() and len(after) < 19 else 0
    rows, total = queries.open_conflicts(db, g.user, hidden, after=after, limit=PAGE + 1,
                                         form=request.args.get("form") or None)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    stored = {r["record_id"]: get_record(db, r["record_id"]) for r in rows}
    items = [_conflict_view(r, catalog, stored.get(r["record_id"])) for r in rows]
    restricted = sorted({i["form"] for i in items} & set(catalog.restricted_forms()))
    if restricted:
        with write_transaction(db):
            audit(db, g.user["username"], "restricted_read",
                  {"forms": restricted, "via": "console_conflicts"})
    return render_template("conflicts.html", items=items, total=total,
                           next_after=rows[-1]["id"] if more else None,
                           forms=_forms(catalog), DELETED=DELETED)


def parse_typed(spec, text):
    """A value typed in the console, as the field's type stores it.

    Only the shape is read here; the form's own rules (ranges, choices) are
    checked by the resolve path, which refuses a bad value with its message.
    """
    text = (text or "").strip()
    kind = spec.get("type") if spec else "string"
    if text == "":
        return None
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ApiError("invalid_value", _("Type a whole number."), 400) from None
    if kind == "decimal":
        try:
            return float(text.replace(",", "."))
        except ValueError:
            raise ApiError("invalid_value", _("Type a number."), 400) from None
    if kind == "boolean" or (spec and spec["name"] == DELETED):
        if text.lower() in ("true", "1", "yes", "có"):
            return True
        if text.lower() in ("false", "0", "no", "không"):
            return False
        raise ApiError("invalid_value", _("Choose yes or no."), 400)
    if kind == "multi_choice":
        return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    return text


@bp.post("/conflicts/<int:conflict_id>/resolve")
@signed_in()
def resolve(conflict_id):
    """Keep the current value, take the losing one, or write a typed one: the
    API's resolve (`review.resolve_conflict`), so devices pull the result."""
    db = get_db()
    action = request.form.get("action")
    catalog = Catalog(db)
    if action == "keep":
        choice, value = "keep", None
    elif action in ("losing", "value"):
        row = db.execute("SELECT form, area, field, losing, record_id FROM conflicts "
                         "WHERE id = ?", [conflict_id]).fetchone() \
            if 0 <= conflict_id < 2 ** 63 else None
        if row is None or not covers(g.user, row[1]) \
                or row[0] in catalog.unreadable_forms(g.user):
            abort(404)
        if action == "losing":
            choice, value = "value", json.loads(row[3])["value"]
        else:
            stored = get_record(db, row[4])
            version = stored["state"]["form_version"] if stored else 1
            spec = _field_spec(catalog, row[0], version, row[2]) or {"name": row[2],
                                                                   "type": "string"}
            if row[2] == DELETED:
                spec = {"name": DELETED, "type": "boolean"}
            raw = request.form.getlist("value") if spec.get("type") == "multi_choice" \
                and len(request.form.getlist("value")) > 1 else request.form.get("value")
            choice = "value"
            value = raw if isinstance(raw, list) else parse_typed(spec, raw)
    else:
        abort(400)
    conflict, record, settled = resolve_conflict(db, conflict_id, choice, value)
    flash(_("Conflict %(id)s resolved; devices receive the value on their next sync.",
            id=conflict_id), "ok")
    return redirect(request.form.get("back") == "record"
                    and url_for("console.record", record_id=conflict["record_id"])
                    or url_for("console.conflicts"))


# -- downloads ---------------------------------------------------------------

@bp.get("/downloads")
@signed_in()
def downloads():
    db = get_db()
    catalog = Catalog(db)
    areas = queries.areas_in_scope(db, g.user, catalog.unreadable_forms(g.user))
    return render_template("downloads.html", forms=_forms(catalog), areas=areas,
                           available=_export_view() is not None)


def _export_view():
    """The API's export view, undecorated (the console authenticated already)."""
    try:
        from ..api import exports as exports_api
    except ImportError:
        return None
    view = exports_api.export
    return getattr(view, "__wrapped__", None)


@bp.get("/downloads/<name>")
@signed_in()
def download(name):
    """Streams the export exactly as `GET /api/v1/exports/<name>` does (same
    checks, audit and streaming); the page's form sends the same parameters."""
    view = _export_view()
    if view is None:
        abort(404)
    return view(name)


# -- records -----------------------------------------------------------------

@bp.get("/records")
@signed_in()
def records():
    db = get_db()
    catalog = Catalog(db)
    hidden = catalog.unreadable_forms(g.user)
    forms = _forms(catalog)
    form = request.args.get("form") or None
    if form and form not in forms:
        form = None
    area = (request.args.get("area") or "").strip().upper() or None
    query = (request.args.get("q") or "").strip()[:100] or None
    rows = queries.browse(db, g.user, hidden, queries.name_fields(catalog), form=form,
                          area=area, query=query)
    if query:  # a search lists names in Vietnamese order; browsing, newest first
        rows.sort(key=lambda r: sort_key(r["name"] or ""))
    restricted = sorted({r["form"] for r in rows} & set(catalog.restricted_forms()))
    if restricted:
        with write_transaction(db):
            audit(db, g.user["username"], "restricted_read",
                  {"forms": restricted, "via": "console_records"})
    return render_template("records.html", rows=rows, forms=forms, form=form, area=area,
                           query=query or "",
                           areas=queries.areas_in_scope(db, g.user, hidden))


def _choice_label(spec, value):
    choices = {c["value"]: label(c.get("label", c["value"])) for c in spec.get("choices") or []}
    if not choices:
        return None
    if isinstance(value, list):
        return ", ".join(choices.get(v, str(v)) for v in value)
    return choices.get(value)


@bp.get("/records/<record_id>")
@signed_in()
def record(record_id):
    """One record: fields in form order, links, history and losing values.

    A record outside the user's areas, or of a form their role may not read,
    is answered 404, as if it did not exist (a guessed URL learns nothing).
    """
    db = get_db()
    catalog = Catalog(db)
    hidden = catalog.unreadable_forms(g.user)
    stored = get_record(db, record_id) if len(record_id) <= 64 else None
    if stored is None or not covers(g.user, stored["area"]) or stored["form"] in hidden:
        abort(404)
    state = stored["state"]
    form = catalog.get(stored["form"], state["form_version"])
    definition = form.definition if form else {"fields": [], "title": stored["form"]}
    row = queries.record_row(db, record_id)
    names = queries.name_fields(catalog)
    regs = state["fields"]
    fields, refs = [], []
    for spec in definition["fields"]:
        name = spec["name"]
        reg = regs.get(name)
        value = reg["value"] if reg else row["computed"].get(name)
        if spec.get("type") == "ref" and isinstance(value, str):
            refs.append(value)
        fields.append({"name": name, "label": label(spec.get("label", name)),
                       "type": spec.get("type"), "value": value,
                       "choice": _choice_label(spec, value), "reg": reg,
                       "ref": spec.get("ref")})
    known = {f["name"] for f in fields}
    extra = [{"name": n, "label": n, "type": None, "value": r["value"], "choice": None,
              "reg": r, "ref": None} for n, r in sorted(regs.items()) if n not in known]
    linked = {}
    for rid, (f, a, n) in queries.names_of(db, refs, names).items():
        if covers(g.user, a) and f not in hidden:
            linked[rid] = {"form": f, "name": n}
    kids = []
    for other in _forms(catalog).values():
        for spec in other["fields"]:
            if spec.get("type") == "ref" and spec.get("ref") == stored["form"]:
                for child in queries.children(db, g.user, hidden, names, other["id"],
                                              spec["name"], record_id):
                    kids.append({**child, "title": label(other.get("title", other["id"]))})
    kids.sort(key=lambda k: (k["title"], sort_key(k["name"] or "")))
    history = [_conflict_view(c, catalog, stored) for c in queries.record_conflicts(db, record_id)]
    if stored["form"] in catalog.restricted_forms():
        with write_transaction(db):
            audit(db, g.user["username"], "restricted_read",
                  {"forms": [stored["form"]], "via": "console_record", "records": [record_id]})
    return render_template("record.html", record=stored, row=row, fields=fields + extra,
                           title=label(definition.get("title", stored["form"])),
                           linked=linked, children=kids, conflicts=history,
                           tombstone=state.get("deleted"))

"""The app's pages. Each reads the device through `web.client()`; a form page
renders the compiled definition (`describe_fields`), never its own labels."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (Blueprint, current_app, flash, g, jsonify, redirect, render_template,
                   request, url_for)
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..client import Client
from ..errors import AuthError, FieldsyncError, InvalidRecord, ServerUnreachable
from ..i18n import say
from ..store import keys
from . import entry, locking
from .cases import Cases, fold
from .syncjob import conflicts_of
from .web import LANGUAGE_COOKIE, LANGUAGES, client, close_client, page_language

bp = Blueprint("app", __name__)

STATES = ("pending", "sent", "acknowledged", "conflict", "rejected", "forbidden")


def _safe_next(target):
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/") \
            or target.startswith("//") or "\\" in target:
        return url_for("app.home")
    return target


@bp.before_request
def _signed_in():
    if request.endpoint in ("app.unlock", "app.set_language", "app.static") or \
            request.endpoint is None:
        return None
    try:
        device = client()
    except keys.PassphraseNeeded:
        target = None
        if request.method == "GET":
            target = request.full_path if request.query_string else request.path
        return redirect(url_for("app.unlock", next=target))
    if device.user is None and request.endpoint != "app.sign_in":
        return redirect(url_for("app.sign_in"))
    return None


# -- sign-in and language ------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    device = client()
    server = request.form.get("server", device.server or "").strip()
    username = request.form.get("username", (device.user or {}).get("username", "")).strip()
    # A plain folder is encrypted with a new passphrase before the token is stored.
    new_passphrase = not device.encrypted
    message, status = None, 200
    if request.method == "POST":
        passphrase = request.form.get("passphrase", "")
        message = new_passphrase and locking.new_passphrase_problem(
            passphrase, request.form.get("passphrase2", ""), _)
        if message:
            status = 400                 # refused before anything is sent or stored
        else:
            if new_passphrase:
                device = _encrypted_client(passphrase)
            message, status = _log_in(device, server, username, request.form.get("password", ""))
            if message is None:
                flash(_("Signed in. You can work without a connection from now on."), "ok")
                return redirect(url_for("app.home"))
    return render_template("sign_in.html", server=server, username=username,
                           message=message, new_passphrase=new_passphrase), status


def _log_in(device, server, username, password):
    """(None, 200) when signed in, else the page's message and status."""
    try:
        device.login(server, username, password)
    except ServerUnreachable:
        return _("The server did not answer. Check the server address and "
                 "the connection (signal, Wi-Fi), then try again."), 503
    except AuthError as exc:
        if getattr(exc, "code", None) == "too_many_attempts":
            return _("Too many wrong passwords: this account is locked for a few minutes. "
                     "Wait, or ask your supervisor to unlock it."), 429
        return _("Wrong username or password. If you forgot the password, ask your "
                 "supervisor."), 401
    except FieldsyncError as exc:  # this device taken by another user, a bad address…
        return say(exc, page_language()), 400
    return None, 200


def _encrypted_client(passphrase):
    """This request's device, its folder encrypted now with `passphrase`
    (a plain `device.db` already there is migrated), the key kept."""
    close_client()
    device = Client(current_app.config["DATA_DIR"], lang=page_language(),
                    passphrase=passphrase)
    g.client = device
    locking.keep(device, passphrase)
    return device


@bp.route("/unlock", methods=["GET", "POST"])
def unlock():
    """The passphrase of an encrypted folder whose session key is gone."""
    target = _safe_next(request.args.get("next"))
    if not locking.encrypted():
        return redirect(target)
    message, status = None, 200
    if request.method == "POST":
        passphrase = request.form.get("passphrase", "")
        if not passphrase:
            message, status = _("Type the passphrase of this device's data."), 400
        else:
            try:
                with Client(current_app.config["DATA_DIR"], passphrase=passphrase) as device:
                    locking.keep(device, passphrase)
            except keys.WrongPassphrase:
                message, status = _("Wrong passphrase: nothing was opened or changed. Try "
                                    "again; letters, accents and spaces count exactly."), 401
            else:
                return redirect(target)
    return render_template("unlock.html", message=message, next=target), status


@bp.post("/language")
def set_language():
    response = redirect(_safe_next(request.form.get("next")))
    lang = request.form.get("lang")
    if lang in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, lang, max_age=365 * 86400, samesite="Strict",
                            httponly=True)
    return response


# -- lists and records ---------------------------------------------------------------


@bp.get("/")
def home():
    device = client()
    cases = Cases(device)
    q = request.args.get("q", "").strip()
    found = cases.search(q) if q else None
    attention = [r for r in cases.records.values()
                 if r["sync_state"] in ("conflict", "rejected", "forbidden")]
    return render_template("home.html", cases=cases, q=q, found=found, attention=attention,
                           status=device.status(), households=cases.households())


@bp.get("/r/<record_id>")
def record(record_id):
    device = client()
    cases = Cases(device)
    rec = device.get(record_id)
    if rec is None or rec["deleted"]:
        return _error(404, _("There is no such record on this device."))
    form = device.form(rec["form"], rec["form_version"])
    lang = page_language()
    checked = entry.check(form, rec["data"], lang)
    server_warnings = entry.flatten(rec.get("warnings"))
    warnings = {**server_warnings, **checked["warnings"]}
    kids = {}
    for child in cases.kids(record_id):
        kids.setdefault(child["form"], []).append(child)
    growth = None
    if rec["form"] == "person":
        latest = cases.latest_growth(record_id)
        if latest:
            growth = {"record": latest, "computed": device.get(latest["id"])["computed"]}
    return render_template(
        "record.html", rec=rec, form=form, fields=form.describe_fields(lang), cases=cases,
        warnings=warnings, danger=checked["danger"], kids=kids, growth=growth,
        offers=cases.offers(rec), computed=rec.get("computed") or {},
        conflicts=conflicts_of(device, record_id),
        errors=entry.flatten(rec.get("errors")))


# -- filling a form ------------------------------------------------------------------


def _entries(fields, values):
    """How many entries each repeat shows: the draft's, at least one if required."""
    return {f["name"]: max(len(values.get(f["name"]) or []), 1 if f["required"] else 0)
            for f in fields if f["type"] == "repeat"}


def _render_form(form, values, *, rec=None, parent=None, checked=None, confirm=False,
                 status=200, counts=None):
    lang = page_language()
    fields = form.describe_fields(lang)
    counts = counts or _entries(fields, values)
    checked = checked or entry.check(form, values, lang)
    return render_template(
        "entry.html", form=form, fields=fields, values=values, rec=rec, parent=parent,
        counts=counts, checked=checked, confirm=confirm,
        shown_errors=checked["errors"] if request.method == "POST" else {},
        cases=Cases(client())), status


def _repeat_action(fields, counts):
    """The add/remove entry buttons (a re-render, no save): new counts, or None."""
    action = request.form.get("_action", "")
    kind, _sep, rest = action.partition(":")
    if kind not in ("add", "remove"):
        return None
    name, _sep, index = rest.partition(":")
    if name not in counts:
        return None
    counts = dict(counts)
    counts[name] = counts[name] + 1 if kind == "add" else max(0, counts[name] - 1)
    return counts, (int(index) if index.isdigit() and kind == "remove" else None)


def _posted(form):
    """The draft, and the repeat counts as the page had them."""
    fields = form.describe_fields(page_language())
    data = entry.read_form(fields, request.form)
    counts = {f["name"]: entry.entry_count(request.form.get, f["name"])
              for f in fields if f["type"] == "repeat"}
    return fields, data, counts


def _save_or_show(form, *, rec=None, parent=None):
    fields, data, counts = _posted(form)
    action = _repeat_action(fields, counts)
    if action:
        counts, removed = action
        if removed is not None:
            name = request.form["_action"].split(":")[1]
            entries = list(data.get(name) or [])
            if removed < len(entries):
                entries.pop(removed)
            data[name] = entries
        return _render_form(form, data, rec=rec, parent=parent, counts=counts)
    lang = page_language()
    checked = entry.check(form, data, lang)
    if checked["errors"]:
        return _render_form(form, data, rec=rec, parent=parent, checked=checked, status=422,
                            counts=counts)
    if checked["warnings"] and request.form.get("confirm") != "1":
        return _render_form(form, data, rec=rec, parent=parent, checked=checked, confirm=True,
                            counts=counts)
    device = client()
    try:
        if rec is None:
            record_id = device.add(form.id, checked["data"])
        else:
            change = entry.changes(form, rec["data"], checked["data"])
            if change:
                device.edit(rec["id"], change)
            record_id = rec["id"]
    except InvalidRecord as exc:
        checked["errors"] = entry.flatten(exc.errors) or {"_record": [str(exc)]}
        return _render_form(form, data, rec=rec, parent=parent, checked=checked, status=422,
                            counts=counts)
    flash(_("Saved on this device. It will be sent at the next sync."), "ok")
    return redirect(url_for("app.record", record_id=record_id))


@bp.route("/new/<form_id>", methods=["GET", "POST"])
def new(form_id):
    device = client()
    try:
        form = device.form(form_id)
    except InvalidRecord:
        return _error(404, _("There is no such form."))
    cases = Cases(device)
    parent = cases.get(request.args.get("parent", ""))
    ref = request.args.get("ref", "")
    if parent is not None and form.fields.get(ref, {}).get("ref") != parent["form"]:
        parent = None
    if request.method == "POST":
        return _save_or_show(form, parent=parent)
    values = cases.prefill(form, ref, parent) if parent else {}
    return _render_form(form, values, parent=parent)


@bp.route("/edit/<record_id>", methods=["GET", "POST"])
def edit(record_id):
    device = client()
    rec = device.get(record_id)
    if rec is None or rec["deleted"]:
        return _error(404, _("There is no such record on this device."))
    form = device.form(rec["form"], rec["form_version"])
    if request.method == "POST":
        return _save_or_show(form, rec=rec)
    return _render_form(form, rec["data"], rec=rec)


@bp.post("/validate/<form_id>")
def validate(form_id):
    """A draft checked by the form's own validation, as the page is filled:
    which fields are asked, and the errors, warnings and computed values by
    field path, in the page language."""
    device = client()
    version = request.args.get("version", type=int)
    try:
        form = device.form(form_id, version)
    except InvalidRecord:
        return jsonify(error="unknown_form", message=_("There is no such form."),
                       details={"form": form_id}), 404
    fields = form.describe_fields(page_language())
    checked = entry.check(form, entry.read_form(fields, request.form), page_language())
    return jsonify({k: checked[k] for k in ("relevant", "errors", "warnings", "danger")}
                   | {"computed": {k: _plain(v) for k, v in checked["computed"].items()}})


def _plain(value):
    if isinstance(value, float):
        return f"{value:.2f}"
    if value is None:
        return ""
    return str(value)


# -- sync ------------------------------------------------------------------------------


@bp.post("/sync")
def sync():
    job = current_app.extensions["fieldsync_sync"]
    started = job.start(page_language(), locking.held())
    if request.accept_mimetypes.best == "application/json":
        return jsonify(started=started), 202
    flash(_("Sync started."), "ok")
    return redirect(_safe_next(request.form.get("next")))


@bp.get("/sync/progress")
def sync_progress():
    p = current_app.extensions["fieldsync_sync"].snapshot()
    return jsonify(running=p.running, phase=p.phase, done=p.done, total=p.total,
                   outcome=p.outcome, text=progress_text(p))


def progress_text(p):
    if p.running:
        if p.phase == "push":
            return _("Sending %(done)s of %(total)s changes…", done=p.done, total=p.total or 0)
        if p.phase == "pull":
            return _("Receiving records from the server: %(done)s so far…", done=p.done)
        return _("Connecting to the server…")
    if not p.outcome:
        return ""
    if p.outcome == "ok":
        r = p.report or {}
        text = _("Sync complete: %(pushed)s sent, %(pulled)s received.",
                 pushed=r.get("pushed", 0), pulled=r.get("pulled", 0))
        problems = (r.get("conflicts") or 0) + (r.get("rejected") or 0) + (r.get("forbidden") or 0)
        if problems:
            text += " " + _("%(n)s record(s) need your attention (below).", n=problems)
        return text
    if p.outcome == "offline":
        return _("No connection to the server. Nothing is lost: %(n)s change(s) stay saved on "
                 "this device and will be sent at the next sync. Try again when you have "
                 "signal.", n=p.queued)
    if p.outcome == "login":
        return _("Your sign-in has expired. Sign in again (nothing is lost: %(n)s change(s) "
                 "stay on this device).", n=p.queued)
    return _("The sync did not finish (%(detail)s). %(n)s change(s) stay saved on this "
             "device; try again later or ask your supervisor.", detail=p.detail, n=p.queued)


# -- errors --------------------------------------------------------------------------


def _error(status, message):
    return render_template("error.html", status=status, message=message), status


def init_app(app):
    app.register_blueprint(bp)

    @app.errorhandler(CSRFError)
    def _csrf(exc):
        if request.path.startswith("/validate") or request.path.startswith("/sync"):
            return jsonify(error="csrf", message=_("Reload the page and try again."),
                           details={}), 400
        return _error(400, _("This form did not come from this app's page, or it has "
                             "expired. Go back, reload the page and try again."))

    @app.errorhandler(HTTPException)
    def _http(exc):
        messages = {404: _("There is no such page."),
                    400: _("This request cannot be used here."),
                    405: _("This page cannot be used that way.")}
        return _error(exc.code or 500, messages.get(exc.code, exc.name))

    @app.errorhandler(FieldsyncError)
    def _fieldsync(exc):
        return _error(400, str(exc))

    app.jinja_env.filters.update(fold=fold, shown=shown)
    app.jinja_env.globals.update(STATES=STATES, page_language=page_language,
                                 state_label=state_label)


def shown(value, field=None):
    """A stored value as a person reads it: a choice's label, yes/no, lists joined."""
    if value is None or value == "" or value == []:
        return "—"
    choices = {c["value"]: c["label"] for c in (field or {}).get("choices") or ()}
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, list):
        return ", ".join(shown(v, field) for v in value)
    if isinstance(value, dict):
        if {"lat", "lon"} <= value.keys():
            return f"{value['lat']}, {value['lon']}"
        return ", ".join(f"{k}: {shown(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return choices.get(value, str(value))


def state_label(state):
    return {"pending": _("Not sent yet"), "sent": _("Being sent"),
            "acknowledged": _("Synced"), "conflict": _("Conflict"),
            "rejected": _("Refused by the server"),
            "forbidden": _("Refused: outside your areas")}.get(state, state)

"""User administration pages (admins only): the `fieldsync-server user` commands
in a browser. Each action calls the same `server.auth` function as the CLI,
audited under the admin's name."""
from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from .. import auth
from ..db import get_db
from ..scope import ROLES
from . import queries
from .blueprint import bp
from .session import error_page, signed_in


def _areas(text):
    return [a.strip().upper() for a in (text or "").replace(";", ",").replace(" ", ",")
            .split(",") if a.strip()]


@bp.get("/users")
@signed_in(admin=True)
def users():
    db = get_db()
    people = auth.list_users(db)
    for person in people:
        person["locked"] = auth.is_locked(db, person["username"])
    return render_template("users.html", users=people, roles=ROLES)


@bp.post("/users")
@signed_in(admin=True)
def add_user():
    form = request.form
    username = form.get("username", "").strip()
    try:
        auth.add_user(get_db(), username, form.get("password", ""), form.get("role", ""),
                      _areas(form.get("areas")), by=g.user["username"])
    except auth.UserError as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.users"))
    flash(_("User %(name)s added.", name=username), "ok")
    return redirect(url_for("console.user", username=username))


@bp.get("/users/<username>")
@signed_in(admin=True)
def user(username):
    db = get_db()
    person = auth.get_user(db, username)
    if person is None:
        return error_page(404, _("There is no such user."))
    person["locked"] = auth.is_locked(db, username)
    return render_template("user.html", person=person, roles=ROLES,
                           devices=queries.user_devices(db, username))


@bp.post("/users/<username>")
@signed_in(admin=True)
def change_user(username):
    """One action per form: scope, disable, enable, password, unlock, revoke."""
    db = get_db()
    action = request.form.get("action")
    by = g.user["username"]
    try:
        if action == "scope":
            auth.set_scope(db, username, request.form.get("role") or None,
                           _areas(request.form.get("areas")), by=by)
            message = _("Role and areas saved; their devices will pull their new scope.")
        elif action == "disable":
            if username == by:
                raise auth.UserError(_("You cannot disable yourself."))
            auth.disable_user(db, username, by=by)
            message = _("Disabled; their devices are signed out.")
        elif action == "enable":
            auth.enable_user(db, username, by=by)
            message = _("Enabled; they can sign in again.")
        elif action == "password":
            auth.set_password(db, username, request.form.get("password", ""), by=by)
            message = _("Password changed; their devices must sign in again.")
        elif action == "unlock":
            auth.unlock_user(db, username, by=by)
            message = _("Unlocked; they can try to sign in again now.")
        elif action == "revoke":
            auth.revoke_device(db, username, request.form.get("device_id", ""), by=by)
            message = _("Device signed out; it must sign in again to sync.")
        else:
            return error_page(400, _("Unknown action."))
    except auth.UserError as exc:
        flash(str(exc), "error")
    else:
        flash(message, "ok")
    return redirect(url_for("console.user", username=username))

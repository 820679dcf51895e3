"""Signing in and out of the console, and who may see which page.

A sign-in checks the password with `auth.check_credentials`, the API's own
check, so failures count against the same per-user and per-address limits.
It then issues an ordinary token (device id `console`, lasting at most
`CONSOLE_SESSION_HOURS`) and keeps it in the signed, HttpOnly session cookie.
Every page re-checks that token with `auth.authenticate`: signing out,
disabling the user or changing their password ends the session at once, and
a cookie unused for `CONSOLE_IDLE_MINUTES` is refused when read (its signature
is too old).
"""
import functools
from urllib.parse import urlsplit

from flask import (current_app, g, redirect, render_template, request, session, url_for)
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .. import auth
from ..db import get_db
from ..errors import ApiError
from . import queries
from .blueprint import LANGUAGE_COOKIE, LANGUAGES, bp

CONSOLE_ROLES = ("supervisor", "admin")


def _safe_next(target):
    """Only a path on this site: never an open redirect to another host."""
    if not target:
        return url_for("console.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return url_for("console.dashboard")
    return target


def signed_in(admin=False):
    """Decorator: the page needs a signed-in supervisor or admin (`admin=True`:
    an admin); the user is on `g.user` as the API puts it there."""
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            token = session.get("token")
            if not token:
                return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
            try:
                g.user = auth.authenticate(get_db(), f"Bearer {token}")
            except ApiError:
                session.clear()
                return redirect(url_for("console.sign_in", expired=1,
                                        next=request.full_path.rstrip("?")))
            session.permanent = True    # re-signed on this answer: idle time restarts
            if g.user["role"] not in CONSOLE_ROLES:
                session.clear()
                return render_template("refused.html"), 403
            if admin and g.user["role"] != "admin":
                return error_page(403, _("Only administrators may manage users."))
            return view(*args, **kwargs)
        return wrapped
    return decorator


def error_page(status, message):
    return render_template("error.html", status=status, message=message), status


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    message = _("Your session ended; sign in again.") if request.args.get("expired") else None
    status, headers = 200, {}
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        db = get_db()
        try:
            user = auth.check_credentials(db, username, password, request.remote_addr)
        except ApiError as exc:
            status, headers = exc.status, exc.headers
            message = {
                "too_many_attempts": _("Too many failed sign-ins; wait a few minutes and "
                                       "try again, or ask an administrator to unlock you."),
                "account_disabled": _("This account is disabled; ask your administrator."),
                "unavailable": _("The server is busy with other sign-ins; try again in a "
                                 "few seconds."),
            }.get(exc.code, _("Wrong username or password."))
        else:
            if user["role"] not in CONSOLE_ROLES:
                return render_template("refused.html"), 403
            token = queries.start_session(
                db, user, current_app.config["CONSOLE_SESSION_HOURS"], request.remote_addr)
            session.clear()
            session["token"] = token
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
    return render_template("sign_in.html", message=message, username=username), status, headers


@bp.post("/sign-out")
def sign_out():
    token = session.get("token")
    if token:
        db = get_db()
        try:
            user = auth.authenticate(db, f"Bearer {token}")
        except ApiError:
            user = None  # already expired or revoked: nothing to revoke
        if user:
            auth.logout(db, user)
    session.clear()
    return redirect(url_for("console.sign_in"))


@bp.post("/language")
def set_language():
    lang = request.form.get("lang")
    back = _safe_next(request.form.get("next"))
    response = redirect(back)
    if lang in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, lang, max_age=365 * 86400, samesite="Lax",
                            httponly=True, secure=request.is_secure)
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(exc):
    return error_page(400, _("This form was not sent from a page of this console, or it "
                             "has expired. Go back, reload the page and try again."))


@bp.errorhandler(ApiError)
def _api_error(exc):
    return error_page(exc.status, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc):
    messages = {404: _("There is no such page, or it is outside your areas."),
                403: _("You may not see this page."),
                405: _("This page cannot be used that way.")}
    return error_page(exc.code or 500, messages.get(exc.code, exc.description or exc.name))

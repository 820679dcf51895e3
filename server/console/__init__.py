"""The supervisors' web console at `/`: server-rendered pages, Vietnamese first.

- `session`: sign-in (the API's users, roles and limits), the session cookie,
  idle expiry, sign-out; every page needs a supervisor or an admin.
- `views`: dashboard, conflicts, downloads, records; `users`: admins only;
- `figures`: indicators and work lists (the API's figures, in pages).
- `queries`: the few SQL reads only the console needs.
- `text`: folding Vietnamese for search, form labels in the page language,
  times in the deployment time zone.

Page strings go through Flask-Babel (`_()` in templates); the catalogs are
`translations/<lang>/LC_MESSAGES/messages.po`, compiled to `.mo` files that are
committed and shipped as package data (`make translations` rebuilds them;
tests/test_console.py fails when a `.mo` is older than its `.po`). Committed
rather than compiled at install time: a plain `pip install` of the package
then needs no build hook and no Babel at build time.

Security: a strict Content-Security-Policy on every console answer (no inline
script or style), CSRF tokens on every form (Flask-WTF), autoescaped templates.
"""
import hashlib
import hmac

import sqlite3

from flask import current_app, request
from flask.sessions import SecureCookieSessionInterface

from .blueprint import CSP, LANGUAGE_COOKIE, LANGUAGES, babel, bp, csrf  # noqa: F401


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over TLS."""

    def get_cookie_secure(self, app):
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)

    def open_session(self, app, request):
        if not app.secret_key:
            try:
                app.secret_key = _secret_key(app)
            except sqlite3.Error:  # not initialised yet: no session, the API answers
                return None
        return super().open_session(app, request)


def _locale():
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    default = current_app.config["CONSOLE_LANGUAGE"]
    return default if default in LANGUAGES else "vi"


def _timezone():
    return current_app.config["TIMEZONE"]


def _secret_key(app):
    """The cookie-signing key: FIELDSYNC_SECRET_KEY, else one derived from the
    database's own secret, so every gunicorn worker signs alike with nothing
    to configure, and a new database invalidates old sessions."""
    if app.config.get("SECRET_KEY"):
        return app.config["SECRET_KEY"]
    from ..db import get_db
    row = get_db().execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()
    return hmac.new(row[0].encode(), b"fieldsync console session", hashlib.sha256).hexdigest()


@bp.before_request
def _csrf():
    if request.method == "POST":
        csrf.protect()  # a POST without the form's token is a 400, never acted on


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app):
    """Register the console on `app` (after the API blueprints)."""
    from datetime import timedelta

    # Idle expiry: the cookie is re-signed on every answer, and a signature
    # older than this is refused when the cookie is read back.
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(
        minutes=int(app.config["CONSOLE_IDLE_MINUTES"]))
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="fieldsync_session",
                      # Forms are checked only on the console's own routes: the
                      # API is called with bearer tokens, not cookies.
                      WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None,
                      BABEL_DEFAULT_LOCALE="vi",
                      BABEL_TRANSLATION_DIRECTORIES="console/translations")
    app.session_interface = _SessionInterface()
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_locale, timezone_selector=_timezone)

    from . import figures, session, text, users, views  # noqa: F401  (routes on `bp`)
    text.init_app(app)
    app.register_blueprint(bp)

"""One error shape for every API failure: {"error", "message", "details"}.

Views raise `ApiError`; the handlers here also render Werkzeug's HTTP errors
and turn a locked or full database into 503 with `Retry-After`, so a client
never sees an HTML page or a traceback.
"""
import logging
import sqlite3

from flask import current_app, has_app_context, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("fieldsync.server")

#: Seconds a client should wait after a 503 before resending, outside an
#: app; in one, the RETRY_AFTER_SECONDS setting (FIELDSYNC_RETRY_AFTER_SECONDS).
RETRY_AFTER_SECONDS = 5


def retry_after_seconds():
    """The RETRY_AFTER_SECONDS setting of the current app (or the default)."""
    if has_app_context():
        return int(current_app.config.get("RETRY_AFTER_SECONDS", RETRY_AFTER_SECONDS))
    return RETRY_AFTER_SECONDS


class ApiError(Exception):
    """An error answer: a stable `code`, a plain-language `message`, a status."""

    def __init__(self, code, message, status=400, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}
        self.headers = headers or {}


class Unavailable(ApiError):
    """The database is locked or full: nothing was stored, try again later."""

    def __init__(self, message, retry_after=None):
        if retry_after is None:
            retry_after = retry_after_seconds()
        super().__init__(
            "unavailable", message, 503,
            details={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


def error_response(code, message, status, details=None, headers=None):
    """Render one error in the shared shape."""
    response = jsonify({"error": code, "message": message, "details": details or {}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def is_unavailable(exc):
    """True for SQLite errors that mean "try later": locked, busy or full."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return any(w in text for w in ("locked", "busy", "full", "disk i/o"))


def init_app(app):
    """Register the handlers that give every error the shared JSON shape."""

    @app.errorhandler(ApiError)
    def handle_api_error(exc):
        return error_response(exc.code, exc.message, exc.status, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc):
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(code, exc.description or exc.name, exc.code or 500,
                              headers=headers)

    @app.errorhandler(sqlite3.OperationalError)
    def handle_sqlite_error(exc):
        if is_unavailable(exc):
            # Logged without any request data: the message is SQLite's own.
            log.warning("database unavailable: %s", exc)
            err = Unavailable("The server's database is busy or full; nothing was "
                              "stored. Try again shortly.")
            return handle_api_error(err)
        return handle_unexpected(exc)

    @app.errorhandler(Exception)
    def handle_unexpected(exc):
        if isinstance(exc, HTTPException):
            return handle_http_error(exc)
        log.exception("unexpected error")
        return error_response("internal_error", "The server hit an unexpected error; "
                              "nothing from this request was stored.", 500)

"""The fieldsync sync server: a Flask app on SQLite (see DESIGN.md)."""
import logging

from flask import Flask

#: Every setting, with its default. Each can be set in the environment with
#: the FIELDSYNC_ prefix (FIELDSYNC_DB=/data/fieldsync.db,
#: FIELDSYNC_TOKEN_LIFETIME_DAYS=7); values are parsed as JSON when they can be.
DEFAULTS = {
    "DB": "var/fieldsync.db",
    "BUSY_TIMEOUT_MS": 5000,             # wait for the write lock, then 503
    "RETRY_AFTER_SECONDS": 5,            # Retry-After on 503
    "TOKEN_LIFETIME_DAYS": 30,
    "CLOCK_TOLERANCE_SECONDS": 300,      # clocks further ahead are re-stamped
    "MAX_RECORDS_PER_BATCH": 1000,
    "MAX_BATCH_BYTES": 16 * 1024 * 1024,  # after decompression
    "PULL_LIMIT_DEFAULT": 500,
    "PULL_LIMIT_MAX": 5000,
    "BATCH_RETENTION_DAYS": 30,          # stored push answers for replays
    "TIMEZONE": "Asia/Ho_Chi_Minh",      # "today" in form bounds
    "LOGIN_WINDOW_SECONDS": 900,
    "LOGIN_MAX_FAILURES_PER_USER": 5,
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 20,
    "LOGIN_CONCURRENCY": 2,              # password checks at once per worker (64 MiB each)
    "LOGIN_WAIT_SECONDS": 0.2,           # wait for a free check, then 503 + Retry-After
    "PROXY_COUNT": 0,                    # reverse proxies in front (X-Forwarded-For)
    # `serve` (server/wsgi.py), per worker process:
    "SERVER_THREADS": 4,                 # requests run at once (bodies already received)
    "BODY_TIMEOUT_SECONDS": 60,          # a connection silent this long is closed
    "MAX_CONNECTIONS": 400,              # open connections; then new ones wait
    "CONSOLE_LANGUAGE": "vi",            # console pages until a user switches (vi, en)
    "CONSOLE_IDLE_MINUTES": 30,          # an unused console session ends after this
    "CONSOLE_SESSION_HOURS": 12,         # and never lasts longer than this
    "SESSION_COOKIE_SECURE": False,      # True: Secure always (it is set anyway over HTTPS)
}

__version__ = "0.1.0"


def create_app(test_config=None):
    """Build the app. Settings: DEFAULTS, then FIELDSYNC_* variables, then `test_config`."""
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("FIELDSYNC")
    if test_config:
        app.config.update(test_config)
    # Werkzeug refuses bodies larger than this before we read them; gzip
    # bodies are bounded again while decompressing (server/body.py).
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BATCH_BYTES"] + 1024
    app.json.sort_keys = False
    logging.getLogger("fieldsync.server").setLevel(logging.INFO)

    if app.config["PROXY_COUNT"]:
        # Behind nginx & co., the client address (login rate limit) is the
        # one the trusted proxies put in X-Forwarded-For; never trust more.
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=int(app.config["PROXY_COUNT"]))

    from . import api, compress, console, db, errors
    db.init_app(app)
    errors.init_app(app)
    compress.init_app(app)
    api.register(app)
    console.init_app(app)
    return app

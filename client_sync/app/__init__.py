"""`fieldsync app`: the health worker's local web app, served by the device
on 127.0.0.1 and working with no network at all.

- `views`: sign-in, the case lists (households → members → pregnancies →
  visits, a child's growth), a record's page, a form to fill, `/validate`,
  the Sync button; `cases`: the case tree from the local records;
  `entry`: posted inputs as values, a draft checked by the compiled form;
  `syncjob`: one sync at a time, in a thread, with its progress.

This package is the only part of `client_sync` that imports Flask (the
library stays importable without it: tests/test_client_imports.py).

Safety on a shared laptop: bound to 127.0.0.1 only, a request naming another
host is refused (DNS rebinding), every POST carries a CSRF token (another page
open in the browser could otherwise post to it), a strict
Content-Security-Policy (no inline script or style), autoescaped templates.
Page strings are Flask-Babel catalogs (translations/, the compiled .mo
committed, as the console's); form labels come from the form definitions.
"""

from __future__ import annotations

import secrets

from flask import Flask, abort, request
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

from ..config import data_dir as resolve_data_dir
from . import views
from .syncjob import SyncJob, app_network
from .web import close_client, page_language

LOCAL_HOSTS = ("127.0.0.1", "localhost")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'")


def create_app(data_dir=None, network=None, test_config=None):
    """The app over the device's data folder.

    :param data_dir: as ``Client`` (``FIELDSYNC_HOME`` or ``~/.fieldsync``).
    :param network: the sync's ``NetworkConfig`` (default: ``app_network()``,
        a short give-up time).
    """
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(32),   # this process only: sessions end with it
        SESSION_COOKIE_NAME="fieldsync_app_session", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", WTF_CSRF_TIME_LIMIT=None,
        BABEL_DEFAULT_LOCALE="vi", BABEL_TRANSLATION_DIRECTORIES="translations",
        DATA_DIR=str(resolve_data_dir(data_dir)), MAX_CONTENT_LENGTH=2 * 1024 * 1024)
    if test_config:
        app.config.update(test_config)
    CSRFProtect(app)
    Babel(app, locale_selector=page_language)
    app.extensions["fieldsync_sync"] = SyncJob(app.config["DATA_DIR"], network or app_network(),
                                                page_language)

    @app.before_request
    def _local_only():
        # A page of another site that resolves its own name to 127.0.0.1
        # (DNS rebinding) sends its own Host: refused.
        if request.host.rpartition(":")[0] not in LOCAL_HOSTS and request.host not in LOCAL_HOSTS:
            abort(400)

    @app.after_request
    def _headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if response.mimetype in ("text/html", "application/json"):
            response.headers["Cache-Control"] = "no-store"
        return response

    app.teardown_appcontext(close_client)

    views.init_app(app)
    return app


def serve(data_dir=None, port=0, open_browser=True, echo=print):
    """Serve the app on 127.0.0.1:`port` (0: a free one) until Ctrl-C."""
    import webbrowser

    from werkzeug.serving import make_server

    app = create_app(data_dir)
    server = make_server("127.0.0.1", port, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}/"
    echo(f"fieldsync app on {url}  (Ctrl-C stops it; your records stay on this device)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["fieldsync_sync"].wait(15)

"""gunicorn, run in the foreground by `fieldsync-server serve`.

Each worker builds its own app after the fork (no `preload`): an SQLite
connection must never cross a fork. The access log has one line per request
with method, path (no query string), status, size and duration: no address,
no user, no record content.
"""
import gc
import json

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication

#: gunicorn's own ceiling (its default is 4094). Our longest legitimate URL is
#: far shorter (a pull: a 200-character cursor plus `limit`; an export: a form,
#: an area and two dates), so this only decides who refuses an over-long one:
#: up to here the app answers with a 400 (e.g. `invalid_cursor`), past it
#: gunicorn with a 414 (`request_line_too_long`, see write_json_error).
LIMIT_REQUEST_LINE = 8190

ACCESS_LOG_FORMAT = '%(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'

# What gunicorn refuses before the app sees it (an over-long request line or
# header, malformed HTTP) it answers itself; by default with an HTML page.
# Devices and scripts read our JSON error shape: the same status, our shape,
# and no echo of the request (its text may hold a token or personal data).
_REFUSALS = {
    414: ("request_line_too_long", f"The request line is over {LIMIT_REQUEST_LINE} bytes."),
    431: ("headers_too_large", "A request header is too large, or there are too many."),
    403: ("forbidden", "This request is refused."),
    417: ("expectation_failed", "This Expect header is not supported."),
    500: ("internal_error", "The server failed on this request; nothing was stored."),
    501: ("not_implemented", "This transfer coding is not supported."),
}


def write_json_error(sock, status, reason, _message):
    """gunicorn's `util.write_error`, in our error shape (see _REFUSALS)."""
    code, message = _REFUSALS.get(status, ("bad_http_request",
                                           "The request is not valid HTTP/1.1."))
    body = json.dumps({"error": code, "message": message, "details": {}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


#: The cyclic garbage collector's thresholds in a worker. A push batch of 500
#: allocates some 10,000 containers, nearly all freed by reference counting
#: when it ends; at Python's default (700, 10, 10) the collector ran ~11 times
#: a batch, 1.5-2.5 ms of it (3-5 us a record), a full collection re-scanning
#: the ~50,000 objects of the loaded app each time. Measured: bench/README.md.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc():
    """Freeze what is loaded (never scanned again) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _Server(BaseApplication):
    def __init__(self, db_path, options):
        self.db_path = db_path
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # In the worker, after the fork (preload_app is off).
        from . import create_app
        app = create_app({"DB": self.db_path})
        tune_gc()
        return app


def run(db_path, host, port, workers):
    # gunicorn has no hook for its own error answers: its workers (forked
    # from this process) call util.write_error, so that is what we replace.
    gunicorn_util.write_error = write_json_error
    _Server(db_path, {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 120,
        "graceful_timeout": 10,
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "preload_app": False,
        "limit_request_line": LIMIT_REQUEST_LINE,
        # Headers keep gunicorn's defaults (100 fields of 8190 bytes): a larger
        # one gets gunicorn's 431 (`headers_too_large`) before the app sees
        # it; no real client sends one (a bearer token is 43 characters).
    }).run()

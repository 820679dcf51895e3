"""The production server run by `fieldsync-server serve`: gunicorn's master
process over waitress in each worker.

gunicorn's master binds the socket, forks the workers, restarts one that dies
and stops them on SIGTERM (graceful) or SIGINT (quick); a SIGKILL of the
process group ends everything at once, as the crash tests expect. Each worker
(`WaitressWorker`) serves HTTP with waitress: one event loop reads every
connection, and a request reaches one of the worker's task threads only when
its headers and its whole body have arrived (waitress buffers the body in
memory, or in an unlinked temporary file past `inbuf_overflow`). A device
uploading a batch at 1 byte/s holds a connection, never a thread; a
connection silent for `BODY_TIMEOUT_SECONDS` is closed. gunicorn's own
`gthread` worker kept a thread per request while the body trickled in, so a
few dozen slow uploads starved the server (issue 14; bench/README.md).

Each worker builds its own app after the fork (no `preload`): an SQLite
connection must never cross a fork. The access log has one line per request
with method, path (no query string), status, size and duration: no address,
no user, no record content, and every control character escaped.
"""
import gc
import json
import os
import time

from gunicorn.app.base import BaseApplication
from gunicorn.workers.base import Worker

#: The most the request line and headers may hold together. Our longest
#: legitimate request line is far shorter (a pull: a 200-character cursor
#: plus `limit`; an export: a form, an area and two dates) and a device sends
#: half a dozen short headers; a browser on the review pages adds a cookie.
#: Past it waitress answers 431 (`headers_too_large`) before the app sees it.
MAX_HEADER_BYTES = 16 * 1024

#: Bodies past this size wait for the app in an unlinked temporary file
#: instead of memory (waitress' `inbuf_overflow`; its default, 512 KiB).
BODY_SPILL_BYTES = 512 * 1024

#: Answers larger than this (a pull page of 5,000 records, uncompressed, is
#: about 5 MB) are queued for sending in a temporary file.
ANSWER_SPILL_BYTES = 16 * 1024 * 1024

ACCESS_LOG_TIME = "[%d/%b/%Y:%H:%M:%S %z]"

# What waitress refuses before the app sees it (headers too large, a body
# over the limit, malformed HTTP or chunked framing) it answers itself, by
# default in plain text. Devices and scripts read our JSON error shape: the
# same status, our shape, and no echo of the request (its text may hold a
# token or personal data).
_REFUSALS = {
    400: ("bad_http_request", "The request is not valid HTTP/1.1 (its request line, a "
          "header, or the framing of its body); nothing was stored."),
    413: ("body_too_large", "The request body is larger than the server accepts; send "
          "fewer records per batch."),
    431: ("headers_too_large", "The request line or headers are too large "
          f"(at most {MAX_HEADER_BYTES} bytes together)."),
    500: ("internal_error", "The server failed on this request; nothing was stored."),
    501: ("not_implemented", "This transfer coding is not supported."),
}


def json_refusal(error):
    """(status, headers, body) of waitress' own refusal `error`, in our shape."""
    code, message = _REFUSALS.get(error.code, _REFUSALS[400])
    body = json.dumps({"error": code, "message": message, "details": {}}).encode()
    return (f"{error.code} {error.reason}", [("Content-Type", "application/json")], body)


def _json_error_task():
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            status, headers, body = json_refusal(self.request.error)
            self.status = status
            self.response_headers.extend(headers)
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    return JsonErrorTask


# -- the access log -------------------------------------------------------------

def _escape_char(ch):
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


_ESCAPES = {i: _escape_char(chr(i)) for i in (*range(0x20), *range(0x7f, 0x100))}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


def log_safe(text, limit=512):
    """`text` for one log line: control characters, quotes, backslashes and
    non-ASCII bytes as escapes (a `%0a` in a path cannot start a new line),
    at most `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.translate(_ESCAPES)


class AccessLog:
    """WSGI middleware: one line per request once its answer is sent:
    `[time] "METHOD /path" status bytes Nms`, without the query string."""

    def __init__(self, app, logger):
        self.app = app
        self.logger = logger

    def __call__(self, environ, start_response):
        started = time.monotonic()
        status = ["-"]

        def start(status_line, headers, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        body = self.app(environ, start)
        return _Logged(body, lambda size: self.logger.info(
            '%s "%s %s" %s %s %sms', time.strftime(ACCESS_LOG_TIME),
            log_safe(environ.get("REQUEST_METHOD", "-"), 16),
            log_safe(environ.get("PATH_INFO", "")), status[0], size,
            round((time.monotonic() - started) * 1000)))


class _Logged:
    """The app's answer iterable, counted; the line is written on close()."""

    def __init__(self, body, write):
        self.body, self.write, self.size = body, write, 0

    def __iter__(self):
        for chunk in self.body:
            self.size += len(chunk)
            yield chunk

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.write(self.size)


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


# -- the worker -----------------------------------------------------------------

def waitress_options(config):
    """waitress' settings from the app's (server/__init__.py DEFAULTS)."""
    timeout = int(config["BODY_TIMEOUT_SECONDS"])
    return {
        "threads": int(config["SERVER_THREADS"]),
        "connection_limit": int(config["MAX_CONNECTIONS"]),
        # A connection silent this long, mid-body or idle between requests,
        # is closed (checked every cleanup_interval seconds). A slow link
        # that keeps sending keeps its connection: a thread is never held.
        "channel_timeout": timeout,
        "cleanup_interval": max(1, min(30, timeout // 4)),
        # The body is refused (413) while it arrives, before the app runs;
        # gzip bodies are bounded again while decompressing (server/body.py).
        "max_request_body_size": int(config["MAX_BATCH_BYTES"]) + 1024,
        "max_request_header_size": MAX_HEADER_BYTES,
        "inbuf_overflow": BODY_SPILL_BYTES,
        # An answer up to this size waits for the event loop in memory, not
        # in a temporary file (waitress' default, 1 MiB, put every large
        # pull page on disk and back).
        "outbuf_overflow": ANSWER_SPILL_BYTES,
        # poll(), not select(): no limit at file descriptor 1024.
        "asyncore_use_poll": True,
        # X-Forwarded-For reaches the app, which trusts only PROXY_COUNT
        # hops of it (werkzeug's ProxyFix), as under gunicorn before.
        "clear_untrusted_proxy_headers": False,
        "ident": "fieldsync",
        "expose_tracebacks": False,
    }


class WaitressWorker(Worker):
    """A gunicorn worker that serves its share of the listening socket with
    waitress (see the module's docstring)."""

    def run(self):
        from waitress import wasyncore
        from waitress.channel import HTTPChannel
        from waitress.server import create_server

        HTTPChannel.error_task_class = _json_error_task()
        app = self.wsgi
        config = getattr(app, "config", None) or {}
        options = waitress_options(config)
        socket_map = {}
        server = create_server(AccessLog(app, self.log.access_log), map=socket_map,
                               sockets=[s.sock for s in self.sockets], **options)
        self.log.info("Worker %s: waitress, %s threads, bodies buffered before the app, "
                      "%s s read timeout", self.pid, options["threads"],
                      options["channel_timeout"])
        while self.alive:
            wasyncore.loop(timeout=1.0, map=socket_map, use_poll=True, count=1)
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
        self._drain(server, socket_map, wasyncore)

    def _drain(self, server, socket_map, wasyncore):
        """Graceful stop: accept nothing new, let requests already received
        or arriving finish (up to gunicorn's graceful_timeout), then close."""
        server.accepting = False
        deadline = time.monotonic() + max(1.0, self.cfg.graceful_timeout - 1)
        while time.monotonic() < deadline and any(
                _busy(channel) for channel in list(socket_map.values())):
            wasyncore.loop(timeout=0.2, map=socket_map, use_poll=True, count=1)
            self.notify()
        server.close()


def _busy(channel):
    """True while a connection has a request being received, run or sent."""
    return bool(getattr(channel, "requests", None) or getattr(channel, "total_outbufs_len", 0)
                or (getattr(channel, "request", None) is not None
                    and getattr(channel.request, "header_bytes_received", 0)))


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
    _Server(db_path, {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "server.wsgi.WaitressWorker",
        # The master kills a worker whose event loop stops for this long
        # (it reports at least once a second); requests themselves are
        # bounded by the database's busy timeout, not by this.
        "timeout": 120,
        "graceful_timeout": 10,
        "accesslog": "-",
        "errorlog": "-",  # the access lines are AccessLog's (above)
        "preload_app": False,
    }).run()


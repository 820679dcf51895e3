"""gunicorn, run in the foreground by `fieldsync-server serve`.

Each worker builds its own app after the fork (no `preload`): an SQLite
connection must never cross a fork. The access log has one line per request
with method, path (no query string), status, size and duration: no address,
no user, no record content.
"""
from gunicorn.app.base import BaseApplication

#: gunicorn's own ceiling (its default is 4094). Our longest legitimate URL is
#: far shorter (a pull: a 200-character cursor plus `limit`; an export: a form,
#: an area and two dates), so this only decides who refuses an over-long one:
#: up to here the app answers with a JSON 400 (e.g. `invalid_cursor`), past it
#: gunicorn's own HTML 414.
LIMIT_REQUEST_LINE = 8190

ACCESS_LOG_FORMAT = '%(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


class _Server(BaseApplication):
    def __init__(self, db_path, options):
        self.db_path = db_path
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app
        return create_app({"DB": self.db_path})


def run(db_path, host, port, workers):
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
        # one gets gunicorn's HTML 400 before the app sees it; no real client
        # sends one (a bearer token is 43 characters).
    }).run()

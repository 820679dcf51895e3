"""The server's hybrid logical clock, persisted in `meta.hlc`.

Every gunicorn worker shares one clock through the database: `load` reads it
inside the caller's write transaction and `save` writes it back before
COMMIT, so clocks issued by different processes never repeat or go back.
"""
from datetime import datetime, timezone

from schemas import clock as hlc

NODE = "server"


def utc_now():
    return datetime.now(timezone.utc)


def iso(dt):
    """ISO 8601 UTC with milliseconds and `Z`, the server's timestamp form."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{dt.microsecond // 1000:03d}Z"


def now_iso():
    """The server's wall time now, as stored in `created_at`/`updated_at`."""
    return iso(utc_now())


def _stored(db):
    row = db.execute("SELECT value FROM meta WHERE key = 'hlc'").fetchone()
    return row[0] if row else None


def load(db):
    """The server `Clock`, from its persisted state; call inside a write transaction."""
    return hlc.Clock(NODE, _stored(db))


def save(db, clock):
    """Persist the clock's state; call before the transaction commits."""
    if clock.last is not None:
        db.execute("INSERT INTO meta (key, value) VALUES ('hlc', ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [clock.last])


def current(db):
    """A server clock to hand to a device (login, pull) without a write.

    It is at least every clock the server has issued and at least its wall
    clock, so a device observing it moves past everything it may receive.
    """
    wall = hlc.format_hlc(hlc.time_ms(), 0, NODE)
    stored = _stored(db)
    return max(stored, wall) if stored else wall


def tolerance_bound(millis_ahead):
    """The largest clock accepted as sent: server wall time + the tolerance.

    A field clock greater than this string is re-stamped. The counter and
    node are maximal so that any clock within the tolerance millisecond passes.
    """
    # "zzzz…" sorts after every node id made of [a-z0-9-].
    return hlc.format_hlc(hlc.time_ms() + millis_ahead, hlc.MAX_COUNTER, "z" * 64)

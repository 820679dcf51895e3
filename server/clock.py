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


def commit_time(db):
    """The time a write transaction stamps on records (`updated_at`): the wall
    clock, but never earlier than the last one stamped (`meta.updated_at`).

    Exports select "since my last export" on `updated_at`; if the server's
    clock stepped back (NTP, a wrong date corrected), a record committed later
    with an earlier time would fall before that `since` and be missed for
    good. Call inside the write transaction; `save_commit_time` before COMMIT.
    The ISO form (UTC, ms, Z) sorts as text in time order.
    """
    now = now_iso()
    row = db.execute("SELECT value FROM meta WHERE key = 'updated_at'").fetchone()
    return max(now, row[0]) if row and row[0] else now


def save_commit_time(db, when):
    """Remember `when` as the floor for the next commit time (never lowers it)."""
    db.execute("INSERT INTO meta (key, value) VALUES ('updated_at', ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
               "WHERE excluded.value > meta.value", [when])


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

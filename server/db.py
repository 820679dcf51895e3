"""SQLite connections: one per request on `g`, WAL, synchronous=FULL.

Connections run in autocommit mode (`isolation_level=None`) so that every
write is an explicit `BEGIN IMMEDIATE … COMMIT` (`write_transaction`): the
single writer lock makes commit order equal to sequence order, and nothing is
acknowledged before COMMIT returns. Writes inside a transaction use plain SQL
(`db.execute`): sqlite-utils' table helpers commit on their own, which would
end our transaction early.
"""
import contextlib
import os
import sqlite3

import sqlite_utils
from flask import current_app, g


def connect(path, busy_timeout_ms=5000):
    """Open the database at `path` with the durability settings we rely on.

    :param path: the SQLite file; its folder is created if missing.
    :param busy_timeout_ms: how long a writer waits for the lock before the
        request fails with 503 (nothing stored).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000,
                           isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an acknowledged push survives power loss, not only a crash.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return sqlite_utils.Database(conn)


def get_db():
    """The request's connection, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = connect(current_app.config["DB"], current_app.config["BUSY_TIMEOUT_MS"])
    return g.db


def close_db(exc=None):
    db = g.pop("db", None)
    if db is not None:
        if db.conn.in_transaction:
            db.conn.rollback()
        db.conn.close()


@contextlib.contextmanager
def write_transaction(db):
    """`BEGIN IMMEDIATE … COMMIT`, or ROLLBACK on any exception.

    Taking the write lock up front (IMMEDIATE) means a busy database fails
    here, before any work, and that sequence numbers read inside are final.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.rollback()
        raise
    else:
        db.execute("COMMIT")


@contextlib.contextmanager
def read_snapshot(db):
    """A read transaction: several SELECTs see one consistent state."""
    db.execute("BEGIN")
    try:
        yield db
    finally:
        if db.conn.in_transaction:
            db.conn.rollback()


def init_app(app):
    app.teardown_appcontext(close_db)

"""The device database's layout: its tables, their versions, the sync states.

The layout's version is SQLite's ``PRAGMA user_version``. Opening a store
brings an older layout up to date, each step (``MIGRATIONS``) in the same
transaction as the version it writes, and refuses a store written by a newer
fieldsync: an older app must not write a layout it does not know.

A table or column added here gets its line in the table list of
``client_sync/store/__init__.py`` and of docs/internals.md.
"""

from __future__ import annotations

from ..errors import FieldsyncError
from ..i18n import N_

SYNC_STATES = ("pending", "sent", "acknowledged", "conflict", "rejected", "forbidden")
HELD_STATES = ("rejected", "forbidden")  # not resent until edited or after a new login

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    form TEXT NOT NULL,
    form_version INTEGER NOT NULL,
    area TEXT NOT NULL,
    state TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    sync_state TEXT NOT NULL,
    errors TEXT,
    warnings TEXT,
    pull_gen INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_form_area ON records (form, area);
CREATE INDEX IF NOT EXISTS records_sync_state ON records (sync_state);
CREATE TABLE IF NOT EXISTS outbox (
    record_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    form TEXT NOT NULL,
    form_version INTEGER NOT NULL,
    area TEXT NOT NULL,
    fields TEXT NOT NULL,
    deleted TEXT,
    edit_seq INTEGER NOT NULL,
    batch_id TEXT,
    sent_seq INTEGER,
    sent TEXT,
    held TEXT
);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox (batch_id);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    body BLOB NOT NULL,
    count INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forms (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
"""


def _m001_baseline(conn):
    # The layout as first shipped; a store made before versioning has it
    # already (version 0), so these statements change nothing there.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _m002_conflicts(conn):
    # The open conflicts on records in the user's areas, as the server's
    # `GET /api/v1/conflicts?status=open` last listed them (replaced at each sync).
    conn.execute("""CREATE TABLE IF NOT EXISTS conflicts (
        id INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL,
        form TEXT NOT NULL,
        area TEXT NOT NULL,
        field TEXT NOT NULL,
        current TEXT NOT NULL,
        losing TEXT NOT NULL,
        created_at TEXT
    )""")
    conn.execute("CREATE INDEX IF NOT EXISTS conflicts_record ON conflicts (record_id)")


#: Layout steps, in order: the store's version is how many have run. A later
#: layout change is a new function here, never an edit of an earlier one.
MIGRATIONS = (_m001_baseline, _m002_conflicts)


class StoreTooNew(FieldsyncError):
    """The device's data was written by a newer fieldsync."""


def migrate(conn, path):
    """Bring the layout of ``conn`` (the database at ``path``) up to date.

    Runs in the caller's transaction; raises :class:`StoreTooNew`, changing
    nothing, for a layout newer than this fieldsync knows.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreTooNew(N_(
            "The data in {path} was written by a newer fieldsync (layout {version}; this one "
            "knows up to {known}). Update the app; nothing was changed.",
            path=str(path), version=version, known=len(MIGRATIONS)))
    for step in MIGRATIONS[version:]:
        step(conn)
    if version < len(MIGRATIONS):
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

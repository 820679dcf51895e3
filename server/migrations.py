"""Schema migrations, applied in order by `fieldsync-server init`.

The schema version is SQLite's `PRAGMA user_version`, written in the same
transaction as the migration, so a crash mid-migration leaves the previous
version intact. Migrations are append-only: never edit a released one.
"""
import json
import secrets

from .db import write_transaction

MIGRATIONS = []


def migration(fn):
    """Register `fn(db)` as the next migration (version = its position)."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db):
    db.execute("""CREATE TABLE records (
        id TEXT PRIMARY KEY, form TEXT NOT NULL, form_version INTEGER NOT NULL,
        area TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL,
        computed TEXT NOT NULL DEFAULT '{}', deleted INTEGER NOT NULL DEFAULT 0,
        hlc TEXT NOT NULL, seq INTEGER NOT NULL UNIQUE,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        created_by TEXT, updated_by TEXT, device TEXT,
        flags TEXT NOT NULL DEFAULT '[]')""")
    # The UNIQUE constraint already indexes seq; this name makes the pull
    # query plan readable and survives a later change of the constraint.
    db.execute("CREATE INDEX idx_records_seq ON records (seq)")
    db.execute("CREATE INDEX idx_records_form_area ON records (form, area)")
    db.execute("""CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY, record_id TEXT NOT NULL, form TEXT NOT NULL,
        area TEXT NOT NULL, field TEXT NOT NULL, current TEXT NOT NULL,
        losing TEXT NOT NULL, losing_hlc TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open', created_at TEXT NOT NULL,
        resolved_at TEXT, resolved_by TEXT, resolution TEXT,
        UNIQUE (record_id, field, losing_hlc))""")
    db.execute("CREATE INDEX idx_conflicts_status_area ON conflicts (status, area)")
    db.execute("""CREATE TABLE batches (
        device_id TEXT NOT NULL, batch_id TEXT NOT NULL, body_sha256 TEXT NOT NULL,
        response TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (device_id, batch_id))""")
    db.execute("CREATE INDEX idx_batches_created ON batches (created_at)")
    db.execute("""CREATE TABLE users (
        id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL, role TEXT NOT NULL, areas TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL)""")
    db.execute("""CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
        device_id TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
        revoked_at TEXT)""")
    db.execute("CREATE INDEX idx_tokens_user ON tokens (user_id)")
    db.execute("""CREATE TABLE devices (
        device_id TEXT PRIMARY KEY, username TEXT, app_version TEXT,
        last_push TEXT, last_pull TEXT, skew_seconds REAL,
        restamped INTEGER NOT NULL DEFAULT 0)""")
    db.execute("""CREATE TABLE rejections (
        device_id TEXT NOT NULL, record_id TEXT NOT NULL, errors TEXT NOT NULL,
        at TEXT NOT NULL, PRIMARY KEY (device_id, record_id))""")
    db.execute("""CREATE TABLE forms (
        id TEXT NOT NULL, version INTEGER NOT NULL, definition TEXT NOT NULL,
        sha256 TEXT NOT NULL, published_at TEXT NOT NULL, PRIMARY KEY (id, version))""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("""CREATE TABLE audit (
        id INTEGER PRIMARY KEY, at TEXT NOT NULL, username TEXT, action TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}')""")
    # Failed logins, for the rate limit: in the database so that every
    # gunicorn worker counts the same attempts. `key` is "user:<name>" or
    # "addr:<ip>"; rows older than the window are purged on each login.
    db.execute("""CREATE TABLE login_failures (
        key TEXT NOT NULL, at REAL NOT NULL)""")
    db.execute("CREATE INDEX idx_login_failures ON login_failures (key, at)")
    db.execute("INSERT INTO meta (key, value) VALUES ('seq', '0')")
    # Signs pull cursors so a device cannot forge another scope's position.
    db.execute("INSERT INTO meta (key, value) VALUES ('cursor_secret', ?)",
               [secrets.token_hex(32)])


@migration
def m002_records_form_seq(db):
    # Exports read one form in seq order by keyset (`form = ? AND seq > ?
    # ORDER BY seq`): with (form, seq) that is a walk along one index range,
    # instead of the whole seq index filtered by form (server/exports/query.py
    # detects this index and uses it). Building it takes a few seconds per
    # million records, once, inside `init`.
    db.execute("CREATE INDEX IF NOT EXISTS idx_records_form_seq ON records (form, seq)")


@migration
def m003_commit_time_floor(db):
    # `updated_at` never goes back (server/clock.py `commit_time`): seed its
    # floor with the newest one stored before this version.
    db.execute("INSERT OR IGNORE INTO meta (key, value) SELECT 'updated_at', newest "
               "FROM (SELECT max(updated_at) AS newest FROM records) WHERE newest IS NOT NULL")


@migration
def m004_pull_wire_and_area_seq(db):
    # Pull serves each record as stored JSON (`wire`: merge.to_wire without
    # seq, written by storage.Writer._save) instead of decoding `state` and
    # re-encoding it per record. NULL means "not stored": pull then builds it
    # from `state`, so a row written by any other path is still served right.
    # Idempotent: a database whose version was reset must migrate again.
    if "wire" not in {row[1] for row in db.execute("PRAGMA table_info(records)")}:
        db.execute("ALTER TABLE records ADD COLUMN wire TEXT")
    # Any UPDATE of `state` that does not also write a new `wire` clears the
    # old one: a stale wire would send devices an older version of a record
    # under its new seq.
    db.execute("""CREATE TRIGGER IF NOT EXISTS records_wire_stale
        AFTER UPDATE OF state ON records
        FOR EACH ROW WHEN NEW.wire IS OLD.wire AND NEW.wire IS NOT NULL
        BEGIN UPDATE records SET wire = NULL WHERE rowid = NEW.rowid; END""")
    from . import storage  # late: migrations need not load storage otherwise
    last = 0
    while True:  # in rowid chunks: no cursor open over rows being updated
        rows = db.execute("SELECT rowid, state FROM records WHERE rowid > ? AND wire IS NULL "
                          "ORDER BY rowid LIMIT 2000", [last]).fetchall()
        if not rows:
            break
        db.conn.executemany("UPDATE records SET wire = ? WHERE rowid = ?",
                            [(_wire_or_none(storage, state), rowid) for rowid, state in rows])
        last = rows[-1][0]
    # A small scope's pull walks its own areas along (area, seq) instead of
    # every later seq in the database (storage.pull_page).
    db.execute("CREATE INDEX IF NOT EXISTS idx_records_area_seq ON records (area, seq)")
    # The UNIQUE constraint on seq is already an index giving the same plans
    # (tests/test_server_pull.py); this copy only cost every write.
    db.execute("DROP INDEX IF EXISTS idx_records_seq")


def _wire_or_none(storage, state):
    # A state that cannot be read is left NULL: pull then reads it as before
    # this migration, and `init` does not fail on one bad row.
    try:
        return storage.wire_text(json.loads(state))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@migration
def m005_packed_state_sparse_wire(db):
    # Rows fit their page again: `state` is packed (storage.encode_state:
    # each clock and device once per record, not once per field) and `wire`
    # lists only the clocks that differ from the record's hlc (a full pull
    # fills in the others). Every row is rewritten.
    from . import storage  # late: migrations need not load storage otherwise
    # Cleared first: a new `wire` equal to the old one (m004 just wrote it,
    # from a version-3 database) would otherwise be cleared by the trigger
    # records_wire_stale as stale when `state` changes beside it.
    db.execute("UPDATE records SET wire = NULL")
    last = 0
    while True:  # in rowid chunks: no cursor open over rows being updated
        rows = db.execute("SELECT rowid, state FROM records WHERE rowid > ? "
                          "ORDER BY rowid LIMIT 2000", [last]).fetchall()
        if not rows:
            break
        db.conn.executemany("UPDATE records SET state = ?, wire = ? WHERE rowid = ?",
                            [(*_repacked(storage, state), rowid) for rowid, state in rows])
        last = rows[-1][0]


def _repacked(storage, text):
    # A state that cannot be read is kept as it is, with `wire` NULL: pull
    # then reads it as before, and `init` does not fail on one bad row.
    try:
        state = storage.decode_state(text)
        return storage.encode_state(state), storage.wire_text(state)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return text, None


@migration
def m006_rejections_point_to_their_batch(db):
    # An answer is stored once (issue 14): a rejection's errors are in its
    # batch's stored answer (`batches.response`), no longer copied here.
    # Rows from before count as rejected; their code and batch are unknown.
    # Idempotent: a database whose version was reset must migrate again.
    if "errors" not in {row[1] for row in db.execute("PRAGMA table_info(rejections)")}:
        return
    db.execute("""CREATE TABLE rejections_new (
        device_id TEXT NOT NULL, record_id TEXT NOT NULL, status TEXT NOT NULL,
        code TEXT, batch_id TEXT, at TEXT NOT NULL, PRIMARY KEY (device_id, record_id))""")
    db.execute("INSERT INTO rejections_new (device_id, record_id, status, code, at) "
               "SELECT device_id, record_id, 'rejected', NULL, at FROM rejections")
    db.execute("DROP TABLE rejections")
    db.execute("ALTER TABLE rejections_new RENAME TO rejections")


@migration
def m007_audit_append_only(db):
    # The audit is evidence: no row of it is ever changed or removed, not
    # even by a server bug. (Someone with the file can still drop the
    # triggers; backups keep older copies.)
    for op in ("UPDATE", "DELETE"):
        db.execute(f"""CREATE TRIGGER IF NOT EXISTS audit_no_{op.lower()}
            BEFORE {op} ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END""")


@migration
def m008_records_warnings(db):
    # The merged record's validation warnings ({field: [message]}, English),
    # stored with it and exported (issue 15); NULL when it has none. Rows
    # written before this version have none stored until their next change.
    # Idempotent, as m004.
    if "warnings" not in {row[1] for row in db.execute("PRAGMA table_info(records)")}:
        db.execute("ALTER TABLE records ADD COLUMN warnings TEXT")


@migration
def m009_indicator_facts(db):
    # What the indicators and work lists read (server/indicators/facts.py),
    # kept by every write from now on; filled here for the records stored.
    from .indicators import facts  # late: migrations need not load it otherwise
    facts.create_table(db)
    facts.backfill(db)


@migration
def m010_rebuild_indicator_facts(db):
    # Facts are derived at write time, so a fix to what they hold (newborn
    # danger signs with jaundice and cord infection; a person's registration
    # date) reaches stored records only through a rebuild from the records.
    from .indicators import facts  # late, as above
    db.execute("DELETE FROM facts")
    facts.backfill(db)


@migration
def m011_facts_subject_index(db):
    # The indicators aggregate in SQL (issue 15: a province of 1M records):
    # a birth's PNC visits and a pregnancy's ANC contacts are found by
    # subject. Subject first, so that a scan of one form in an area keeps
    # using idx_facts_form_area (a commune's report and work lists).
    db.execute("CREATE INDEX IF NOT EXISTS idx_facts_subject ON facts (subject, form, day)")


@migration
def m012_facts_subject_index_of_pnc_visits(db):
    # Only one query finds facts by subject through an index: a birth's PNC
    # visits (indicators.compute._births, `form = 'pnc_visit' AND subject =
    # ?`); every other reads a form's rows in an area (idx_facts_form_area)
    # or a record by id. Indexing every form's subject cost each push a
    # leaf page per subject it touched (500 visits and measurements into
    # 50,000 facts: 1.9 KB of WAL a record with it, 0.46 KB without;
    # bench/README.md, issue 14's push throughput). The partial index holds
    # the PNC visits alone.
    db.execute("DROP INDEX IF EXISTS idx_facts_subject")
    db.execute("CREATE INDEX IF NOT EXISTS idx_facts_pnc_subject ON facts (subject) "
               "WHERE form = 'pnc_visit'")


def current_version(db):
    return db.execute("PRAGMA user_version").fetchone()[0]


def latest_version():
    return len(MIGRATIONS)


def migrate(db):
    """Apply every migration newer than the database; return the versions applied."""
    applied = []
    for version, fn in enumerate(MIGRATIONS, start=1):
        with write_transaction(db):
            # Re-read under the write lock: two processes may run init at once.
            if current_version(db) >= version:
                continue
            fn(db)
            db.execute(f"PRAGMA user_version = {version}")
        applied.append(version)
    return applied

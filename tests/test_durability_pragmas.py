"""The durability settings each side relies on, read back from the connections
the code actually uses (issue 18 item 3): `synchronous=FULL` (2), WAL, and on
the server foreign keys, the busy timeout and the write transaction.

With the server's `synchronous = FULL` changed to OFF every other test still
passed: these fail.
"""
import sqlite3

import pytest

FULL = 2


def _pragmas(conn):
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("synchronous", "journal_mode", "foreign_keys", "busy_timeout")}


def test_a_requests_connection_is_full_wal_with_foreign_keys(app):
    """The app's own get_db, fresh and then reused from the idle pool: every
    request's connection has the settings, not only the first."""
    from server.db import get_db
    seen = []
    for _ in range(3):  # the first is new, the next ones come from the pool
        with app.app_context():
            db = get_db()
            seen.append((id(db), _pragmas(db.conn)))
    assert len({i for i, _ in seen}) == 1, "the pool gave a new connection: not tested"
    for _, pragmas in seen:
        assert pragmas["synchronous"] == FULL
        assert pragmas["journal_mode"] == "wal"
        assert pragmas["foreign_keys"] == 1
        assert pragmas["busy_timeout"] == app.config["BUSY_TIMEOUT_MS"]


def test_connect_sets_what_it_promises(tmp_path):
    """`server.db.connect`, used by the app, the CLI and the server process."""
    from server.db import connect
    db = connect(str(tmp_path / "x.db"), busy_timeout_ms=1234)
    pragmas = _pragmas(db.conn)
    assert pragmas == {"synchronous": FULL, "journal_mode": "wal", "foreign_keys": 1,
                       "busy_timeout": 1234}
    assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0
    assert db.conn.isolation_level is None  # autocommit: only explicit transactions
    db.conn.close()


def test_the_server_process_opens_its_database_with_synchronous_full(server_process):
    """The real server process: its database file is in WAL mode (a property
    of the file it set) and a sync through it leaves a connection made the
    way its workers make theirs (the same `create_app`/`get_db` code, run
    in a fresh interpreter like a worker) at FULL."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    token = server_process.login("hw")
    assert token
    code = ("import sys; from server import create_app; from server.db import get_db\n"
            "app = create_app({'DB': sys.argv[1]})\n"
            "with app.app_context():\n"
            "    c = get_db().conn\n"
            "    print(c.execute('PRAGMA synchronous').fetchone()[0],"
            " c.execute('PRAGMA journal_mode').fetchone()[0])\n")
    out = subprocess.run([sys.executable, "-c", code, str(server_process.db)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == [str(FULL), "wal"]
    # The file the server wrote is WAL: a plain connection sees it without setting it.
    plain = sqlite3.connect(server_process.db)
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plain.close()


def test_write_transaction_commits_or_rolls_back_all(app):
    from server.db import get_db, write_transaction
    with app.app_context():
        db = get_db()
        db.execute("CREATE TABLE t (x INTEGER)")
        with write_transaction(db):
            assert db.conn.in_transaction
            db.execute("INSERT INTO t VALUES (1)")
        assert not db.conn.in_transaction
        with pytest.raises(KeyError):
            with write_transaction(db):
                db.execute("INSERT INTO t VALUES (2)")
                raise KeyError("boom")
        assert not db.conn.in_transaction
        assert [r[0] for r in db.execute("SELECT x FROM t")] == [1]


def test_write_transaction_takes_the_write_lock_up_front(app, db_path):
    """BEGIN IMMEDIATE: a second writer is refused at BEGIN, before any work."""
    from server.db import get_db, write_transaction
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    with app.app_context():
        db = get_db()
        with write_transaction(db):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again after COMMIT
    other.execute("ROLLBACK")
    other.close()


def test_the_device_store_is_full_and_wal(tmp_path):
    from client_sync.store.database import Database
    store = Database(tmp_path / "device.db")
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    # Reopened: the setting is per connection, so each open must set it again.
    store = Database(tmp_path / "device.db")
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
    store.close()


def test_the_device_transaction_commits_or_rolls_back_all(tmp_path):
    from client_sync.store.database import Database
    store = Database(tmp_path / "device.db")
    store.set_meta(a=1, b=2)
    with pytest.raises(ValueError):
        with store.transaction():
            store._set_meta("a", 9)
            raise ValueError("boom")
    assert (store.get_meta("a"), store.get_meta("b")) == (1, 2)
    assert not store.conn.in_transaction
    other = sqlite3.connect(tmp_path / "device.db", timeout=0, isolation_level=None)
    with store.transaction():
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.close()
    store.close()

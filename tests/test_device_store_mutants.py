"""Tests written to kill mutants of client_sync/store/database.py
(docs/mutation.md, "Second run"): what counts as damage, file modes, the
encrypted and plain connections, record ids and timestamps, the meta table,
the transaction's refusals and the persisted clock."""
import os
import sqlite3
import stat
import subprocess
import sys
import uuid

import pytest
import sqlcipher3.dbapi2 as sqlcipher
import time_machine

from client_sync.store import database as dbmod
from client_sync.store.database import Database, StoreDamaged, is_damage
from schemas.clock import format_hlc, parse

KEY = bytes(range(32))


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("driver", [sqlite3, sqlcipher])
def test_is_damage_is_exactly_the_written_out_table(driver):
    damage = [driver.DatabaseError("database disk image is malformed"),
              driver.OperationalError("disk I/O error"),
              driver.DatabaseError("file is not a database")]
    not_damage = [driver.OperationalError("database is locked"),
                  driver.OperationalError("database table is LOCKED"),
                  driver.OperationalError("database is busy"),
                  driver.OperationalError("database or disk is full"),
                  driver.OperationalError("attempt to write a readonly database"),
                  driver.OperationalError("the medium is read-only"),
                  driver.OperationalError("interrupted"),
                  driver.OperationalError("no such table: x"),
                  driver.IntegrityError("UNIQUE constraint failed: records.id"),
                  driver.ProgrammingError("Cannot operate on a closed database."),
                  driver.InterfaceError("bad parameter"),
                  driver.Error("not a DatabaseError"),
                  ValueError("malformed, but not from SQLite")]
    assert [is_damage(e) for e in damage] == [True] * len(damage)
    assert [is_damage(e) for e in not_damage] == [False] * len(not_damage)


def test_make_private_tightens_only_what_is_looser(tmp_path):
    folder, tight = tmp_path / "f", tmp_path / "tight"
    folder.mkdir()
    os.chmod(folder, 0o777)
    files = {0o777: 0o600, 0o664: 0o600, 0o044: 0o000, 0o400: 0o400}
    for before in files:
        path = tmp_path / f"{before:o}"
        path.write_bytes(b"")
        os.chmod(path, before)
    for path in [folder, tmp_path / "missing"] + [tmp_path / f"{m:o}" for m in files]:
        dbmod.make_private(path)
    assert _mode(folder) == 0o700
    assert {m: _mode(tmp_path / f"{m:o}") for m in files} == files


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file away needs root")
def test_make_private_leaves_another_users_file_alone(tmp_path):
    path = tmp_path / "theirs"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    os.chown(path, 12345, 12345)
    dbmod.make_private(path)
    assert _mode(path) == 0o644
    assert not (tmp_path / "missing").exists()


def test_private_folder_and_files_whatever_the_umask(tmp_path):
    old = os.umask(0)  # nothing masked: the modes come from the code alone
    try:
        folder = tmp_path / "a" / "b"
        dbmod.private_folder(folder)
        path = folder / "device.db"
        for suffix in ("-wal", "-shm", "-journal"):
            open(f"{path}{suffix}", "wb").close()
            os.chmod(f"{path}{suffix}", 0o666)
        dbmod.private_files(path)
    finally:
        os.umask(old)
    assert _mode(folder) == 0o700
    for suffix in ("", "-wal", "-shm", "-journal"):
        assert _mode(f"{path}{suffix}") == 0o600, suffix
    path.write_bytes(b"kept")
    dbmod.private_files(path)  # an existing file is kept as it is
    assert path.read_bytes() == b"kept"


def test_a_plain_connection_is_autocommit_with_rows_and_a_30_s_wait(tmp_path):
    conn = dbmod.connect(tmp_path / "p.db")
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    row = conn.execute("SELECT 1 AS one").fetchone()
    assert isinstance(row, sqlite3.Row) and row["one"] == 1
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    conn.close()
    assert dbmod.is_plaintext(tmp_path / "p.db")


def test_an_encrypted_connection_needs_its_key(tmp_path):
    path = tmp_path / "e.db"
    conn = dbmod.connect(path, KEY)
    assert conn.isolation_level is None
    # HMAC failures reach the user as StoreDamaged, not as SQLCipher's log.
    assert conn.execute("PRAGMA cipher_log_level").fetchone()[0] == "NONE"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES ('Lý')")
    row = conn.execute("SELECT x FROM t").fetchone()
    assert isinstance(row, sqlcipher.Row) and row["x"] == "Lý"
    conn.close()
    assert not dbmod.is_plaintext(path) and b"CREATE TABLE" not in path.read_bytes()
    again = dbmod.connect(path, KEY)
    assert again.execute("SELECT x FROM t").fetchone()[0] == "Lý"
    again.close()
    wrong = dbmod.connect(path, bytes(32))
    with pytest.raises(sqlcipher.DatabaseError):
        wrong.execute("SELECT x FROM t").fetchone()
    wrong.close()


def test_is_plaintext_reads_the_header_only(tmp_path):
    empty, short, other = tmp_path / "empty", tmp_path / "short", tmp_path / "other"
    empty.write_bytes(b"")
    short.write_bytes(b"SQLite format 3")  # 15 bytes: no NUL
    other.write_bytes(b"SQLite format 3\x01" + bytes(100))
    assert [dbmod.is_plaintext(p) for p in (empty, short, other, tmp_path / "missing")] == [
        False, False, False, False]


def test_encrypt_file_keeps_everything_and_leaves_no_plain_file(tmp_path, monkeypatch):
    path = tmp_path / "device.db"
    store = Database(path)
    store.set_meta(cursor="c-1", user={"username": "hw"})
    device_id = store.device_id
    version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    store.close()
    stale = tmp_path / "device.db.encrypting"
    stale.write_bytes(b"a crashed earlier attempt")  # removed, not reused
    for suffix in ("-wal", "-shm", "-journal"):
        open(f"{stale}{suffix}", "wb").close()
    # Another process holds the plain file open, so the plain WAL and shm
    # outlive encrypt_file's own close: it must remove them itself. (In this
    # process sqlcipher3's SQLite would not see sqlite3's locks.)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('SELECT count(*) FROM meta').fetchone(); print('ready', flush=True); "
         "sys.stdin.read()", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    assert holder.stdout.readline() == "ready\n"
    calls = []
    real = dbmod.sqlcipher.connect

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(dbmod.sqlcipher, "connect", recording)
    dbmod.encrypt_file(path, KEY)
    monkeypatch.undo()
    assert calls == [{"timeout": 30, "isolation_level": None}]
    assert not dbmod.is_plaintext(path) and _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.db"]
    holder.communicate("")
    store = Database(path, key=KEY)
    # The key is kept: Client.encrypted and the session key read it.
    assert store.key == KEY and store.path == path
    assert store.damaged is None and store.device_id == device_id
    assert store.get_meta("cursor") == "c-1" and store.get_meta("user") == {"username": "hw"}
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == version > 0
    store.close()


def test_fsync_folder_opens_and_closes_the_folder(tmp_path, monkeypatch):
    opened, synced, closed = [], [], []
    real_open, real_close = os.open, os.close
    monkeypatch.setattr(dbmod.os, "open", lambda p, f: opened.append((p, f)) or real_open(p, f))
    monkeypatch.setattr(dbmod.os, "fsync", synced.append)
    monkeypatch.setattr(dbmod.os, "close", lambda fd: closed.append(fd) or real_close(fd))
    dbmod._fsync_folder(tmp_path)
    assert opened == [(tmp_path, os.O_RDONLY)] and synced == closed and len(synced) == 1


def test_check_file_is_ok_or_the_problems_on_one_line():
    class Conn:
        def __init__(self, rows=None, error=None):
            self.rows, self.error, self.sql = rows, error, []

        def execute(self, sql):
            self.sql.append(sql)
            if self.error:
                raise self.error
            return self

        def fetchall(self):
            return [(r,) for r in self.rows]
    ok = Conn(["ok"])
    assert dbmod.check_file(ok) == "ok" and ok.sql == ["PRAGMA integrity_check(5)"]
    assert dbmod.check_file(Conn(["page 3: bad", "page 4: worse"])) == (
        "page 3: bad; page 4: worse")
    assert dbmod.check_file(Conn(["x" * 400])) == "x" * 300
    assert dbmod.check_file(Conn(error=sqlite3.DatabaseError("file is not a database"))) == (
        "file is not a database")


def test_uuid7_bits(monkeypatch):
    monkeypatch.setattr(dbmod.time, "time_ns", lambda: 1_700_000_000_123_456_789)
    bits = iter([0xABC, (1 << 62) - 2])
    monkeypatch.setattr(dbmod.secrets, "randbits", lambda n: next(bits))
    value = uuid.UUID(dbmod.uuid7()).int
    assert value >> 80 == 1_700_000_000_123
    assert (value >> 76) & 0xF == 7 and (value >> 64) & 0xFFF == 0xABC
    assert (value >> 62) & 0b11 == 0b10 and value & ((1 << 62) - 1) == (1 << 62) - 2


def test_uuid7_draws_12_and_62_random_bits(monkeypatch):
    asked = []
    monkeypatch.setattr(dbmod.secrets, "randbits", lambda n: asked.append(n) or 0)
    dbmod.uuid7()
    assert asked == [12, 62]


@time_machine.travel("2025-05-30T07:08:09.987654+00:00", tick=False)
def test_utc_now_is_seconds_with_a_z():
    assert dbmod.utc_now() == "2025-05-30T07:08:09Z"


def test_stored_json_is_compact_sorted_and_keeps_letters():
    assert dbmod._dumps({"b": [1, 2], "a": "Lý"}) == '{"a":"Lý","b":[1,2]}'


def test_a_new_store_is_private_full_wal_with_a_device_id(tmp_path):
    store = Database(tmp_path / "home" / "device.db")
    assert _mode(tmp_path / "home") == 0o700 and _mode(tmp_path / "home" / "device.db") == 0o600
    assert store.damaged is None
    assert store.device_id.startswith("dev-") and len(store.device_id) == 16
    int(store.device_id[4:], 16)
    assert store.integrity_check() == "ok"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_every_open_sets_wal_and_full_itself(tmp_path, monkeypatch, key):
    """Traced: SQLite's compiled default is already synchronous=FULL here, so
    reading the value back cannot tell a deleted PRAGMA from a kept one."""
    statements = []
    real = dbmod.connect

    def traced(*args):
        conn = real(*args)
        conn.set_trace_callback(statements.append)
        return conn
    monkeypatch.setattr(dbmod, "connect", traced)
    for _ in range(2):  # created, then reopened
        Database(tmp_path / "device.db", key=key).close()
        assert statements[:2] == ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"]
        assert "BEGIN IMMEDIATE" in statements and statements[-1] == "COMMIT"
        statements.clear()


def test_a_file_that_is_not_a_database_opens_damaged_and_refuses_writes(tmp_path):
    path = tmp_path / "device.db"
    path.write_bytes(b"this is not an SQLite file at all" * 200)
    before = path.read_bytes()
    store = Database(path)
    assert store.damaged and "not a database" in store.damaged
    with pytest.raises(StoreDamaged, match="fieldsync doctor"):
        store.set_meta(x=1)
    store.close()
    assert path.read_bytes() == before


def test_a_store_too_new_is_refused_and_closed(tmp_path, monkeypatch):
    from client_sync.store.layout import StoreTooNew
    path = tmp_path / "device.db"
    Database(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 999")
    raw.close()
    opened = []
    real = dbmod.connect
    monkeypatch.setattr(dbmod, "connect", lambda *a: opened.append(real(*a)) or opened[-1])
    with pytest.raises(StoreTooNew, match="newer fieldsync") as info:
        Database(path)
    assert str(path) in str(info.value)  # the message names the folder's file
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")


def test_a_busy_database_is_an_error_not_damage(tmp_path):
    path = tmp_path / "device.db"
    store = Database(path)
    store.conn.execute("PRAGMA busy_timeout = 0")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.set_meta(x=1)
    other.execute("ROLLBACK")
    other.close()
    assert store.damaged is None and not store.conn.in_transaction
    store.set_meta(x=2)
    assert store.get_meta("x") == 2
    store.close()


def test_an_error_that_looks_like_damage_on_a_sound_file_is_raised_as_it_is(tmp_path):
    store = Database(tmp_path / "device.db")
    with pytest.raises(sqlite3.DatabaseError, match="malformed") as info:
        with store.transaction():
            store._set_meta("x", 1)
            raise sqlite3.DatabaseError("database disk image is malformed")
    assert type(info.value) is sqlite3.DatabaseError
    assert store.damaged is None and not store.conn.in_transaction
    assert store.get_meta("x") is None
    store.close()


def test_a_failed_commit_rolls_back_and_marks_damage_found_then(tmp_path, monkeypatch):
    """The COMMIT itself fails (a disk error at the last step): rolled back,
    the check re-run, and a failing check turns the error into StoreDamaged."""
    store = Database(tmp_path / "device.db")
    monkeypatch.setattr(dbmod, "check_file", lambda conn: "page 7: never used")

    class FailingCommit:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

        @property
        def in_transaction(self):
            return self.conn.in_transaction
    real = store.conn
    store.conn = FailingCommit(real)
    with pytest.raises(StoreDamaged, match="page 7") as info:
        with store.transaction():
            store._set_meta("x", 1)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert store.damaged == "page 7: never used" and not real.in_transaction
    store.conn = real
    assert store.get_meta("x") is None
    with pytest.raises(StoreDamaged):
        store.set_meta(y=1)
    store.close()


def test_meta_defaults_and_several_values_in_one_transaction(tmp_path):
    store = Database(tmp_path / "device.db")
    assert store.get_meta("absent") is None and store.get_meta("absent", 7) == 7
    assert store._meta("absent", "d") == "d"
    store.set_meta(a={"k": "Lý"}, b=[1])
    store.set_meta(a=2)
    assert (store.get_meta("a"), store.get_meta("b")) == (2, [1])
    raw = store.conn.execute("SELECT value FROM meta WHERE key = 'b'").fetchone()[0]
    assert raw == "[1]"
    store.close()


def test_the_clock_is_persisted_and_moves_past_what_it_observes(tmp_path):
    store = Database(tmp_path / "device.db")
    assert store.hlc is None
    with store.transaction():
        first = store._tick()
    assert store.hlc == first and parse(first).node == store.device_id
    ahead = format_hlc(parse(first).millis + 3_600_000, 5, "server")
    store.observe(ahead)
    observed = store.hlc
    assert parse(observed).millis == parse(ahead).millis
    assert parse(observed).node == store.device_id and observed > first
    # Behind the stored clock: the stored clock still counts (never lower).
    store.observe(format_hlc(parse(first).millis + 60_000, 0, "server"))
    assert store.hlc > observed
    observed = store.hlc
    store.observe("")
    store.observe(None)
    assert store.hlc == observed
    with store.transaction():
        store._observe(None)
        later = store._tick()
    assert later > observed and store.hlc == later
    store.close()
    store = Database(tmp_path / "device.db")
    assert store.hlc == later  # kept across a restart
    store.close()


def test_store_damaged_keeps_its_detail():
    error = StoreDamaged("page 3: bad")
    assert error.detail == "page 3: bad" and "page 3: bad" in str(error)


def test_an_encrypted_folder_without_sqlcipher_is_a_clear_error(tmp_path, monkeypatch):
    from client_sync.errors import FieldsyncError
    monkeypatch.setattr(dbmod, "sqlcipher", None)
    with pytest.raises(FieldsyncError) as info:
        dbmod.connect(tmp_path / "device.db", KEY)
    assert str(info.value) == ("This data folder is encrypted but the sqlcipher3 package is "
                               "missing: reinstall fieldsync.")
    assert not (tmp_path / "device.db").exists()

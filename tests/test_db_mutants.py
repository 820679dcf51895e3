"""Tests written to kill mutants of server/db.py (docs/mutation.md, "Second
run"): file modes, the PRAGMAs' exact values, the keeper and its checkpoint
thread, the pool's refusals and the read snapshot."""
import os
import signal
import sqlite3
import stat
import threading
import types
from pathlib import Path

import pytest

from server import db as dbmod
from server import testkill


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_folders_and_files_are_owner_only_whatever_the_umask(tmp_path):
    # 0o277: mkdir and open alone would give 0500 and 0400 (owner cannot
    # write), so only the explicit chmod/fchmod make them 0700 and 0600.
    old = os.umask(0o277)
    try:
        path = tmp_path / "a" / "b" / "fieldsync.db"
        dbmod.make_private_file(str(path))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(path) == 0o600 and path.read_bytes() == b""


def test_an_existing_file_or_folder_is_left_as_it_is(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    path = folder / "fieldsync.db"
    path.write_bytes(b"kept")
    os.chmod(path, 0o640)
    dbmod.make_private_folder(str(folder))
    dbmod.make_private_file(str(path))
    assert _mode(folder) == 0o755 and _mode(path) == 0o640
    assert path.read_bytes() == b"kept"


def test_connect_sets_every_pragma_itself(tmp_path, monkeypatch):
    """Traced: SQLite's compiled default is already synchronous=FULL here, so
    reading the value back cannot tell a deleted PRAGMA from a kept one."""
    statements = []
    real = dbmod.sqlite3.connect

    def traced(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn
    monkeypatch.setattr(dbmod.sqlite3, "connect", traced)
    dbmod.connect(str(tmp_path / "x.db"), busy_timeout_ms=1500).conn.close()
    assert statements[:6] == [
        "PRAGMA busy_timeout = 1500", "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON",
        f"PRAGMA mmap_size = {1 << 30}", "PRAGMA wal_autocheckpoint = 10000"]


def test_connect_sets_the_exact_values_and_shares_across_threads(tmp_path):
    db = dbmod.connect(str(tmp_path / "x.db"), busy_timeout_ms=777)
    conn = db.conn
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] == dbmod.MMAP_BYTES == 1 << 30
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 777
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    # A pooled request connection is used by whichever waitress thread
    # takes the next request.
    seen = []
    worker = threading.Thread(target=lambda: seen.append(
        conn.execute("SELECT 1").fetchone()[0]))
    worker.start()
    worker.join()
    assert seen == [1]
    conn.close()


def test_file_id_is_device_and_inode_or_none(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    st = os.stat(path)
    assert dbmod._file_id(str(path)) == (st.st_dev, st.st_ino)
    assert dbmod._file_id(str(tmp_path / "missing")) is None


def _wal_db(path):
    """A WAL database whose last commit is in the WAL only."""
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (1)")
    return writer


def _main_file_has_table(path, tmp_path):
    """Whether the database file alone (without its WAL) holds table t."""
    alone = tmp_path / "alone.db"
    alone.write_bytes(Path(path).read_bytes())
    conn = sqlite3.connect(alone)
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'"
                            ).fetchone()[0] == 1
    finally:
        conn.close()
        alone.unlink()


@pytest.fixture
def fresh_keepers(monkeypatch):
    """This test's own keeper table, as if this process had none yet."""
    monkeypatch.setattr(dbmod, "_keepers", {})
    monkeypatch.setattr(dbmod, "_keepers_pid", os.getpid())
    monkeypatch.setattr(dbmod, "_inherited", [])
    yield dbmod._keepers
    for keeper in list(dbmod._keepers.values()):
        keeper.close()


def test_a_keeper_checkpoints_the_wal_from_another_thread_and_not_once_closed(
        tmp_path, fresh_keepers):
    path = str(tmp_path / "k.db")
    writer = _wal_db(path)
    keeper = dbmod._keep_open(path)
    assert keeper.idle == [] and not keeper.closed
    assert not _main_file_has_table(path, tmp_path)
    errors = []

    def run():
        try:
            keeper.checkpoint()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    thread = threading.Thread(target=run)  # as the checkpoint thread does
    thread.start()
    thread.join()
    assert errors == []
    assert _main_file_has_table(path, tmp_path)
    idle = dbmod.connect(path)
    keeper.idle.append((5000, idle))
    keeper.close()
    assert keeper.closed and keeper.idle == []
    for conn in (keeper.conn, idle.conn):
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    keeper.checkpoint()  # closed: skipped, no error
    fresh_keepers.clear()
    writer.close()


def test_only_a_partial_checkpoint_reaches_the_checkpoint_kill_point(
        tmp_path, fresh_keepers, monkeypatch):
    # `_Keeper.checkpoint` reads what `wal_checkpoint(PASSIVE)` did and, armed,
    # crashes only when it copied some frames but not all (0 < done < log).
    # The real `testkill.reached` runs; only its SIGKILL is caught.
    path = str(tmp_path / "k.db")
    flag = tmp_path / "flag"
    kills = []
    monkeypatch.setattr(testkill, "ARMED", ("checkpoint-partial", str(flag)))
    monkeypatch.setattr(testkill.os, "killpg", lambda *args: kills.append(args))
    writer = _wal_db(path)
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # t in the file, WAL empty
    keeper = dbmod._keep_open(path)
    reader = sqlite3.connect(path, isolation_level=None)

    def checkpoint_with_a_reader_between(before):
        # a row, then a reader's snapshot, then another row the reader blocks
        for value in before:
            writer.execute("INSERT INTO t VALUES (?)", (value,))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        writer.execute("INSERT INTO t VALUES (9)")
        keeper.checkpoint()

    checkpoint_with_a_reader_between([])  # copies 0 of 1 frames
    assert not flag.exists() and kills == []
    reader.execute("COMMIT")
    keeper.checkpoint()  # copies all of the frames
    assert not flag.exists() and kills == []
    checkpoint_with_a_reader_between([2])  # copies 1 of 2 frames
    assert flag.read_text() == (
        f"checkpoint-partial pid={os.getpid()} wal_frames=2 copied=1\n")
    assert kills == [(os.getpgrp(), signal.SIGKILL)]
    reader.execute("COMMIT")
    reader.close()
    writer.close()


def test_keep_open_returns_the_same_keeper_until_the_file_changes(tmp_path, fresh_keepers):
    path = str(tmp_path / "k.db")
    _wal_db(path).close()
    assert dbmod._keep_open(str(tmp_path / "missing.db")) is None
    assert not os.path.exists(tmp_path / "missing.db")
    first = dbmod._keep_open(path)
    assert dbmod._keep_open(os.path.relpath(path)) is first
    assert list(fresh_keepers) == [path] and dbmod._inherited == []
    assert first.file_id == dbmod._file_id(path)
    os.replace(str(tmp_path / "k.db"), str(tmp_path / "old.db"))
    _wal_db(path).close()
    second = dbmod._keep_open(path)
    assert second is not first and first.closed and fresh_keepers == {path: second}


def test_keep_open_holds_at_most_max_keepers_evicting_the_oldest(tmp_path, fresh_keepers):
    paths = []
    for i in range(dbmod.MAX_KEEPERS + 1):
        paths.append(str(tmp_path / f"k{i}.db"))
        _wal_db(paths[-1]).close()
    keepers = [dbmod._keep_open(p) for p in paths]
    assert list(fresh_keepers) == paths[1:]
    assert keepers[0].closed and not any(k.closed for k in keepers[1:])


def test_keep_open_refuses_a_file_that_is_not_a_database(tmp_path, fresh_keepers):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database at all, " * 100)
    assert dbmod._keep_open(str(path)) is None
    assert fresh_keepers == {}


def test_close_keepers_closes_this_process_keepers(tmp_path, fresh_keepers):
    path = str(tmp_path / "k.db")
    _wal_db(path).close()
    keeper = dbmod._keep_open(path)
    dbmod._close_keepers()
    assert keeper.closed and fresh_keepers == {}


def test_the_checkpoint_thread_is_started_once_per_process_as_a_daemon(monkeypatch):
    started = []

    class Thread:
        def __init__(self, target, name, daemon):
            started.append((target, name, daemon))

        def start(self):
            pass
    monkeypatch.setattr(dbmod.threading, "Thread", Thread)
    monkeypatch.setattr(dbmod, "_checkpointer_pid", None)
    dbmod._start_checkpointer()
    dbmod._start_checkpointer()
    assert started == [(dbmod._checkpoint_loop, "fieldsync-checkpoint", True)]
    assert dbmod._checkpointer_pid == os.getpid()


class _Stop(BaseException):
    pass


def test_the_checkpoint_loop_checkpoints_every_keeper_past_a_failing_one(
        tmp_path, monkeypatch, fresh_keepers):
    path = str(tmp_path / "k.db")
    writer = _wal_db(path)
    keeper = dbmod._keep_open(path)

    class Busy:
        def checkpoint(self):
            raise sqlite3.OperationalError("database is locked")
    fresh_keepers.clear()
    fresh_keepers.update({"busy": Busy(), path: keeper})
    me, naps = threading.get_ident(), []

    def sleep(seconds):  # only this test's loop stops; the real thread sleeps on
        if threading.get_ident() != me:
            return real_sleep(seconds)
        naps.append(seconds)
        if len(naps) == 2:
            raise _Stop
    real_sleep = dbmod.time.sleep
    monkeypatch.setattr(dbmod, "time", types.SimpleNamespace(sleep=sleep))
    with pytest.raises(_Stop):
        dbmod._checkpoint_loop()
    assert naps == [dbmod.CHECKPOINT_SECONDS] * 2
    assert _main_file_has_table(path, tmp_path)
    fresh_keepers.pop("busy")
    writer.close()


def test_the_checkpoint_loop_leaves_another_process_keepers_alone(
        tmp_path, monkeypatch, fresh_keepers):
    calls = []

    class Counting:
        def checkpoint(self):
            calls.append(1)
    fresh_keepers["x"] = Counting()
    monkeypatch.setattr(dbmod, "_keepers_pid", -1)  # inherited across a fork
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            raise _Stop
    monkeypatch.setattr(dbmod, "time", types.SimpleNamespace(sleep=sleep))
    with pytest.raises(_Stop):
        dbmod._checkpoint_loop()
    assert calls == []
    fresh_keepers.clear()


def test_a_connection_that_cannot_roll_back_is_closed_not_pooled(app):
    closed = []

    class Broken:
        in_transaction = True

        def rollback(self):
            raise sqlite3.OperationalError("disk I/O error")

        def close(self):
            closed.append(True)
    broken = types.SimpleNamespace(conn=Broken())
    with app.app_context():
        real = dbmod.get_db()
        key = dbmod.g.db_key
        dbmod.g.db = broken  # teardown meets a connection whose rollback fails
    path = os.path.abspath(app.config["DB"])
    assert closed == [True]
    assert broken not in [db for _, db in dbmod._keepers[path].idle]
    assert key[0] == path and key[2] == app.config["BUSY_TIMEOUT_MS"]
    real.conn.close()


def test_read_snapshot_sees_one_state_and_always_ends(app, db_path):
    with app.app_context():
        db = dbmod.get_db()
        db.execute("CREATE TABLE s (x)")
        other = sqlite3.connect(db_path, isolation_level=None)
        with dbmod.read_snapshot(db):
            assert db.conn.in_transaction
            assert db.execute("SELECT count(*) FROM s").fetchone()[0] == 0
            other.execute("INSERT INTO s VALUES (1)")
            assert db.execute("SELECT count(*) FROM s").fetchone()[0] == 0
        assert not db.conn.in_transaction
        assert db.execute("SELECT count(*) FROM s").fetchone()[0] == 1
        with pytest.raises(KeyError):
            with dbmod.read_snapshot(db):
                raise KeyError("boom")
        assert not db.conn.in_transaction
        other.close()


def test_after_a_fork_every_connection_of_the_parent_is_left_alone(tmp_path, fresh_keepers,
                                                                     monkeypatch):
    """As in a forked worker: the parent's keeper and idle connections are
    set aside in `_inherited` (never used, never closed), and a new keeper
    is opened for this process."""
    path = str(tmp_path / "k.db")
    _wal_db(path).close()
    parent = dbmod._keep_open(path)
    idle = dbmod.connect(path)
    parent.idle.append((5000, idle))
    assert parent.connections() == [parent.conn, idle.conn]
    monkeypatch.setattr(dbmod, "_keepers_pid", -1)  # the pid that filled _keepers
    child = dbmod._keep_open(path)
    assert child is not parent and not parent.closed
    assert dbmod._inherited == [parent.conn, idle.conn]
    assert dbmod._keepers_pid == os.getpid() and fresh_keepers == {path: child}
    parent.close()


def test_connect_waits_five_seconds_by_default(tmp_path):
    conn = dbmod.connect(str(tmp_path / "x.db")).conn
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    conn.close()


def test_a_request_keeps_one_connection(app):
    with app.app_context():
        first = dbmod.get_db()
        assert dbmod.get_db() is first and dbmod.get_db() is first


def test_without_a_keeper_a_request_still_gets_a_connection_never_pooled(app, monkeypatch):
    """`_keep_open` gives None for a file it cannot open (the request's own
    connect reports that); the request's connection is then closed, not pooled."""
    monkeypatch.setattr(dbmod, "_keep_open", lambda path: None)
    path = os.path.abspath(app.config["DB"])
    before = list(dbmod._keepers.get(path).idle) if path in dbmod._keepers else []
    with app.app_context():
        db = dbmod.get_db()
        assert db.execute("SELECT 1").fetchone()[0] == 1
        assert dbmod.g.db_key[1] is None
    with pytest.raises(sqlite3.ProgrammingError):
        db.execute("SELECT 1")
    after = list(dbmod._keepers.get(path).idle) if path in dbmod._keepers else []
    assert after == before


def test_a_connection_given_back_in_another_process_is_closed_not_pooled(app, monkeypatch):
    """After a fork the keepers belong to the parent: teardown must not pool
    into them."""
    with app.app_context():
        db = dbmod.get_db()
        monkeypatch.setattr(dbmod, "_keepers_pid", -1)
    with pytest.raises(sqlite3.ProgrammingError):
        db.execute("SELECT 1")
    monkeypatch.undo()
    keeper = dbmod._keepers.get(os.path.abspath(app.config["DB"]))
    assert keeper is None or all(pooled is not db for _, pooled in keeper.idle)

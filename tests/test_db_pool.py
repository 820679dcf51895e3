"""Request connections are reused within a process (server/db.py): never with
a transaction still open, never across a fork, never to a replaced file."""
import os
import sqlite3

import pytest

from conftest import batch, change, copy_db, hlc_at, household, login, now_ms
from server import create_app
from server import db as dbmod


def _idle(app):
    keeper = dbmod._keepers.get(os.path.abspath(app.config["DB"]))
    return [db for _, db in keeper.idle] if keeper else []


def _request_db(app):
    with app.app_context():
        db = dbmod.get_db()
        db.execute("SELECT 1").fetchone()
        return db


def test_a_request_reuses_the_connection_the_last_one_gave_back(app):
    first = _request_db(app)
    assert _idle(app) == [first]
    second = _request_db(app)
    assert second is first and _idle(app) == [first]


def test_a_request_left_in_a_transaction_is_rolled_back_before_reuse(app, db_path):
    with app.app_context():
        db = dbmod.get_db()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO meta (key, value) VALUES ('left_open', 'x')")
        # teardown without COMMIT (an exception between the two)
    assert not db.conn.in_transaction and _idle(app) == [db]
    other = sqlite3.connect(db_path, timeout=0)  # the write lock is free again
    other.execute("BEGIN IMMEDIATE")
    assert other.execute("SELECT count(*) FROM meta WHERE key = 'left_open'").fetchone() == (0,)
    other.rollback()
    other.close()


def test_the_pool_keeps_at_most_pool_size_connections(app):
    with app.app_context():
        held = []
        for _ in range(dbmod.POOL_SIZE + 2):
            # each nested context is a request of its own: a connection each
            ctx = app.app_context()
            ctx.push()
            held.append((ctx, dbmod.get_db()))
        for ctx, _ in reversed(held):
            ctx.pop()
    assert len(_idle(app)) == dbmod.POOL_SIZE
    closed = [db for _, db in held if db not in _idle(app)]
    for db in closed:
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute("SELECT 1")


def test_a_replaced_database_file_is_never_served_by_an_old_connection(app, db_path, tmp_path):
    client = app.test_client()
    token = login(client, "hw", "dev-a")
    h = {"Authorization": "Bearer " + token}
    backup = tmp_path / "backup.db"
    copy_db(db_path, backup)  # signed in, no record yet
    rec = change(household(), hlc=hlc_at(now_ms(), "dev-a"))
    assert client.post("/api/v1/sync/push", json=batch("dev-a", [rec]),
                       headers=h).status_code == 200
    old = _idle(app)
    assert old
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(db_path) + suffix):
            os.remove(str(db_path) + suffix)
    os.replace(backup, db_path)  # what a restore does to the file
    resp = client.get("/api/v1/sync/pull", headers=h)
    assert resp.status_code == 200 and resp.get_json()["records"] == []
    assert not set(map(id, _idle(app))) & set(map(id, old))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_opens_its_own_connection(app):
    parent = _request_db(app)
    assert _idle(app) == [parent]
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it did not take the parent's connection
        try:
            child = _request_db(app)
            ok = child is not parent and parent.conn in dbmod._inherited
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert _request_db(app) is parent  # the parent's own pool is untouched


def test_two_apps_on_one_file_with_other_busy_timeouts_do_not_share(db_path):
    quick = create_app({"DB": db_path, "BUSY_TIMEOUT_MS": 10})
    slow = create_app({"DB": db_path, "BUSY_TIMEOUT_MS": 4000})
    a, b = _request_db(quick), _request_db(slow)
    assert a is not b
    assert a.execute("PRAGMA busy_timeout").fetchone() == (10,)
    assert b.execute("PRAGMA busy_timeout").fetchone() == (4000,)
    assert _request_db(quick) is a


def _restore(db_path, backup):
    """Replace the database file as a restore does, then commit to the new
    file from another connection, leaving the commit in its WAL only.
    Returns that connection (open: the WAL stays unless it is deleted)."""
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(db_path) + suffix):
            os.remove(str(db_path) + suffix)
    os.replace(backup, db_path)
    writer = sqlite3.connect(db_path)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE kept (x)")
    writer.execute("INSERT INTO kept VALUES (1)")
    writer.commit()
    return writer


def _new_file_intact(db_path, writer):
    # Closing an old file's last connection must neither checkpoint into nor
    # delete '<path>-wal', by then the new file's WAL (SQLite checks that
    # the file has moved); a new connection still finds the commit in it.
    assert os.path.exists(str(db_path) + "-wal")
    check = sqlite3.connect(db_path)
    assert check.execute("SELECT x FROM kept").fetchall() == [(1,)]
    check.close()
    writer.close()


@pytest.mark.parametrize("pool_full", [False, True])
def test_a_connection_whose_file_is_replaced_mid_request_is_never_reused(
        app, db_path, tmp_path, pool_full):
    """Not for the new file; and closing it leaves the new file's WAL alone."""
    backup = copy_db(db_path, tmp_path / "backup.db")
    if pool_full:  # then teardown cannot pool it and closes it at once
        contexts = [app.app_context() for _ in range(dbmod.POOL_SIZE + 1)]
        for ctx in contexts:
            ctx.push()
            dbmod.get_db()
        for ctx in reversed(contexts[1:]):
            ctx.pop()
        assert len(_idle(app)) == dbmod.POOL_SIZE
        inner = contexts[0]
    else:
        inner = app.app_context()
        inner.push()
    db = dbmod.get_db()
    db.execute("SELECT 1").fetchone()
    writer = _restore(db_path, backup)
    inner.pop()
    after = _request_db(app)
    assert after is not db
    with pytest.raises(sqlite3.ProgrammingError):  # closed, with the old file's pool
        db.execute("SELECT 1")
    assert after.execute("SELECT x FROM kept").fetchall() == [(1,)]
    _new_file_intact(db_path, writer)


def test_evicting_a_replaced_file_leaves_the_new_files_wal_alone(db_path, tmp_path):
    """A process with more files than MAX_KEEPERS (tests) closes the oldest."""
    first = create_app({"DB": db_path})
    old = _request_db(first)
    writer = _restore(db_path, copy_db(db_path, tmp_path / "backup.db"))
    for i in range(dbmod.MAX_KEEPERS):  # other files push the first one out
        _request_db(create_app({"DB": copy_db(db_path, tmp_path / f"other{i}.db")}))
    assert os.path.abspath(db_path) not in dbmod._keepers
    with pytest.raises(sqlite3.ProgrammingError):
        old.execute("SELECT 1")
    _new_file_intact(db_path, writer)


_CLOSE_WHILE_CHECKPOINTING = """
import os, sqlite3, sys
from server import db
db.CHECKPOINT_SECONDS = 0.0005   # the checkpoint thread always busy
paths = []
for i in range(db.MAX_KEEPERS * 2):
    path = os.path.join(sys.argv[1], f"d{i}.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    paths.append(path)
# A close that finds the keeper's lock taken: the checkpoint thread is
# executing on that very connection (only checkpoint() and close() take it).
raced = 0
close = db._Keeper.close
def counting_close(keeper):
    global raced
    raced += keeper.lock.locked()
    close(keeper)
db._Keeper.close = counting_close
wanted, most = int(sys.argv[2]), int(sys.argv[3])
n = 0
while raced < wanted and n < most:
    db._keep_open(paths[n % len(paths)])  # past MAX_KEEPERS files: one is closed
    n += 1
print(f"{raced} {n - db.MAX_KEEPERS}")
"""


def test_a_keeper_closed_while_the_checkpoint_thread_runs_on_it_does_not_crash(tmp_path):
    """Evicting a keeper closes its connection while the checkpoint thread may
    be executing on it; closing under CPython's sqlite3 then crashed the
    process (a segmentation fault within a second, before _Keeper.lock). A
    child process, so that a crash fails this test and not the whole run. It
    opens keepers until 20 closes met a checkpoint running on their
    connection (a few thousand opens here), or gives up at 500,000."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _CLOSE_WHILE_CHECKPOINTING, str(tmp_path),
                          "20", "500000"], capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    raced, closed = map(int, run.stdout.split())
    assert raced == 20, (raced, closed)  # the race really happened, 20 times

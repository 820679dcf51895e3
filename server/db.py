"""SQLite connections: one per request on `g`, WAL, synchronous=FULL.

Closing the last connection to a WAL database checkpoints it, with an fsync:
7-18 ms per push batch when every request opens and closes its own. So each
process also keeps one idle connection per database file (`_keep_open`). A
thread per process checkpoints the WAL through those connections, off the
request path.

A request's connection is taken from a small pool of this process's idle
ones when there is one, and given back at teardown, rolled back: opening a
connection and setting its PRAGMAs cost ~0.4 ms a request, and a reused one
keeps its compiled statements and page cache.

Connections run in autocommit mode (`isolation_level=None`) so that every
write is an explicit `BEGIN IMMEDIATE … COMMIT` (`write_transaction`): the
single writer lock makes commit order equal to sequence order, and nothing is
acknowledged before COMMIT returns. Writes inside a transaction use plain SQL
(`db.execute`): sqlite-utils' table helpers commit on their own, which would
end our transaction early.
"""
import atexit
import contextlib
import os
import sqlite3
import threading
import time

import sqlite_utils
from flask import current_app, g

from . import testkill


# Reads through a memory map: a request's new connection starts with an empty
# page cache, and without the map every page of the b-trees a batch walks is
# a read() copied into it again (measured: push at 1M rows stored).
MMAP_BYTES = 1 << 30

# Checkpoints off the request path. A commit that finds the WAL past
# `wal_autocheckpoint` pages copies it into the database file and fsyncs
# (~9 ms inside one push batch in four, measured). Instead a thread in each
# process checkpoints every CHECKPOINT_SECONDS through its idle keeper
# connections (PASSIVE: it neither waits for nor blocks readers and writers);
# a commit still checkpoints past AUTOCHECKPOINT_PAGES (40 MB), a backstop
# for processes without the thread (the CLI) or a checkpoint that fell behind.
CHECKPOINT_SECONDS = 0.5
AUTOCHECKPOINT_PAGES = 10_000


def make_private_folder(folder):
    """Create `folder` and any missing parent, each readable by its owner only
    (0700); an existing folder is left as it is."""
    folder = os.path.abspath(folder)
    if os.path.isdir(folder):
        return
    make_private_folder(os.path.dirname(folder))
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(folder, 0o700)  # whatever the umask


def make_private_file(path):
    """Create the empty file `path` with mode 0600 (its folder 0700) unless it
    exists: health records. SQLite gives a database's -wal, -shm and
    -journal files the database file's mode."""
    make_private_folder(os.path.dirname(os.path.abspath(path)))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.fchmod(fd, 0o600)
    os.close(fd)


def connect(path, busy_timeout_ms=5000):
    """Open the database at `path` with the durability settings we rely on.

    :param path: the SQLite file; it and its folder are created if missing,
        readable by their owner only (0600, 0700).
    :param busy_timeout_ms: how long a writer waits for the lock before the
        request fails with 503 (nothing stored).
    """
    make_private_file(path)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000,
                           isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an acknowledged push survives power loss, not only a crash.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
    return sqlite_utils.Database(conn)


class _Keeper:
    """One database file's connections in this process: the idle keeper
    (never used for queries, see the module docstring) and the pool of idle
    request connections."""

    def __init__(self, conn, file_id):
        self.conn, self.file_id = conn, file_id
        self.idle = []  # [(busy_timeout_ms, Database)]
        # Held while the checkpoint thread runs on `conn`, and to close it:
        # closing a connection while another thread executes on it crashes
        # CPython's sqlite3 (a segmentation fault, not an exception).
        self.lock = threading.Lock()
        self.closed = False

    def connections(self):
        return [self.conn] + [db.conn for _, db in self.idle]

    def checkpoint(self):
        with self.lock:
            if not self.closed:
                busy, log, done = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if testkill.ARMED is not None and 0 < done < log:  # tests only
                    testkill.reached("checkpoint-partial", f"wal_frames={log} copied={done}")

    def close(self):
        # The keeper last: the last connection to close checkpoints the WAL.
        for _, db in self.idle:
            db.conn.close()
        self.idle.clear()
        with self.lock:  # waits for a checkpoint running on it
            self.closed = True
            self.conn.close()


# path -> _Keeper, for this process (`_keepers_pid`).
_keepers = {}
_keepers_lock = threading.Lock()
_inherited = []      # connections that crossed a fork: never used, never closed
_keepers_pid = None
_checkpointer_pid = None
MAX_KEEPERS = 4      # a server has one database; tests open many, in turn
POOL_SIZE = 4        # idle request connections kept per file (a sync worker uses one)


@atexit.register
def _close_keepers():
    # At a clean exit (gunicorn stops a worker), the last connection closes
    # and checkpoints the WAL into the database file, as before.
    with _keepers_lock:
        if _keepers_pid == os.getpid():
            for keeper in _keepers.values():
                keeper.close()
        _keepers.clear()


def _file_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _keep_open(path):
    """Hold one idle connection to `path` open in this process.

    While it is open, a request's connection is never the last one, so its
    close does not checkpoint the WAL; the process's checkpoint thread does
    (`_checkpoint_loop`), through the keeper. The keeper opens the WAL (one
    read) and otherwise only checkpoints: it holds no transaction, so it
    holds back neither checkpoints nor writers. Reopened when the file at
    `path` is not the one it holds (deleted or replaced, e.g. a restore).

    Closing a connection to a replaced file is safe: SQLite sees that its
    file has moved (SQLITE_FCNTL_HAS_MOVED) and then neither checkpoints nor
    deletes "<path>-wal", which by then is the new file's WAL.
    """
    path = os.path.abspath(path)
    file_id = _file_id(path)
    if file_id is None:
        return None
    with _keepers_lock:
        _own_keepers()
        keeper = _keepers.get(path)
        if keeper is not None and keeper.file_id == file_id:
            return keeper
        if keeper is not None:  # replaced under us (e.g. a restore)
            _keepers.pop(path).close()
        while len(_keepers) >= MAX_KEEPERS:
            _keepers.pop(next(iter(_keepers))).close()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            conn.close()  # not our problem here: the request's own connect reports it
            return None
        keeper = _keepers[path] = _Keeper(conn, _file_id(path))
        _start_checkpointer()
        return keeper


def _own_keepers():
    # Under _keepers_lock. After a fork the parent's connections are left
    # alone: closing them here could release the parent's SQLite locks.
    global _keepers_pid
    if _keepers_pid != os.getpid():
        for keeper in _keepers.values():
            _inherited.extend(keeper.connections())
        _keepers.clear()
        _keepers_pid = os.getpid()


def _start_checkpointer():
    # Called under _keepers_lock, in the process that serves (after a fork).
    global _checkpointer_pid
    if _checkpointer_pid != os.getpid():
        _checkpointer_pid = os.getpid()
        threading.Thread(target=_checkpoint_loop, name="fieldsync-checkpoint",
                         daemon=True).start()


def _checkpoint_loop():
    while True:
        time.sleep(CHECKPOINT_SECONDS)
        with _keepers_lock:
            keepers = list(_keepers.values()) if _keepers_pid == os.getpid() else []
        for keeper in keepers:  # one closed meanwhile is skipped (_Keeper.checkpoint)
            try:
                keeper.checkpoint()
            except sqlite3.Error:
                pass  # busy: the next round (or the backstop) does it


def get_db():
    """The request's connection: an idle one of this process, or a new one;
    given back (or closed) at teardown."""
    if "db" not in g:
        path = current_app.config["DB"]
        busy_ms = current_app.config["BUSY_TIMEOUT_MS"]
        path, file_id = os.path.abspath(path), _file_id(path)
        db = _take_idle(path, file_id, busy_ms)
        if db is None:
            db = connect(path, busy_ms)
            keeper = _keep_open(path)
            file_id = keeper.file_id if keeper is not None else None
        g.db, g.db_key = db, (path, file_id, busy_ms)
    return g.db


def _take_idle(path, file_id, busy_ms):
    with _keepers_lock:
        _own_keepers()
        keeper = _keepers.get(path)
        if keeper is None or keeper.file_id != file_id:
            return None  # new, or replaced (a restore): _keep_open renews it
        for i, (ms, db) in enumerate(keeper.idle):
            if ms == busy_ms:
                return keeper.idle.pop(i)[1]
    return None


def close_db(exc=None):
    db = g.pop("db", None)
    if db is None:
        return
    path, file_id, busy_ms = g.pop("db_key")
    try:
        if db.conn.in_transaction:
            db.conn.rollback()
        reusable = True
    except sqlite3.Error:
        reusable = False  # a connection that cannot roll back is not reused
    with _keepers_lock:
        keeper = _keepers.get(path) if _keepers_pid == os.getpid() else None
        if (reusable and keeper is not None and file_id is not None
                and keeper.file_id == file_id and len(keeper.idle) < POOL_SIZE):
            keeper.idle.append((busy_ms, db))
            return
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

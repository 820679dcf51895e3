"""The device database itself: opening it, transactions, ``meta`` and the HLC.

One SQLite file (``device.db`` in the data folder), WAL mode with
``synchronous=FULL``: a tablet loses power, and a change the health worker
saw saved must survive it. Every public method that writes, here and in the
classes built on :class:`Database`, runs in one ``BEGIN IMMEDIATE``
transaction, so a crash at any instant leaves either the whole step or none
of it.

Opening also keeps the files private and refuses to write to a damaged
file (issue 14):

- The data folder is made 0700 and ``device.db`` (with ``-wal``/``-shm``)
  0600, and tightened to that on every open.
- ``PRAGMA integrity_check`` runs at open, and again after an unexpected
  database error during a write. Measured on a 10,000-record device (23 MB):
  ``quick_check`` 18 ms, the full ``integrity_check`` (which also checks each
  index against its table) 33 ms, so the full one is used. A damaged file sets :attr:`Database.damaged`; every write
  is then refused with :class:`StoreDamaged` before it starts, so nothing is
  ever accepted that could not be kept. ``fieldsync doctor`` (``salvage.py``)
  is the way out.
- With a ``key`` (32 raw bytes, see ``keys.py``) the file is a SQLCipher
  database: every page is AES-256 encrypted and HMAC-checked.

Also the small helpers the rest of the device shares: record ids
(:func:`uuid7`), timestamps (:func:`utc_now`) and the JSON of stored columns.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import os
import sqlite3
import stat
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from schemas.clock import Clock

from ..errors import FieldsyncError
from ..i18n import N_
from .layout import StoreTooNew, migrate

try:  # SQLCipher: only needed for an encrypted data folder
    import sqlcipher3.dbapi2 as sqlcipher
except ImportError:  # pragma: no cover - a dependency; kept optional for imports
    sqlcipher = None

#: Every database error either driver raises (sqlite3 for plain files,
#: sqlcipher3 for encrypted ones).
DB_ERRORS = (sqlite3.Error,) + ((sqlcipher.Error,) if sqlcipher else ())
_DATABASE_ERRORS = (sqlite3.DatabaseError,) + ((sqlcipher.DatabaseError,) if sqlcipher else ())
_BENIGN = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError) + (
    (sqlcipher.IntegrityError, sqlcipher.ProgrammingError, sqlcipher.InterfaceError)
    if sqlcipher else ())

# Translated where it is shown (the command line: client_sync/i18n.py).
DAMAGED_MESSAGE = N_("The device database is damaged ({detail}); run `fieldsync doctor`; "
                     "nothing was changed.")


class StoreDamaged(FieldsyncError):
    """The device database failed its integrity check: every write is refused."""

    def __init__(self, detail):
        super().__init__(DAMAGED_MESSAGE.format(detail=detail))
        self.detail = detail


def is_damage(exc) -> bool:
    """Whether a database error may mean a damaged file (not busy, locked or a
    constraint, which say nothing about the file)."""
    if not isinstance(exc, _DATABASE_ERRORS) or isinstance(exc, _BENIGN):
        return False
    text = str(exc).lower()
    return not any(word in text for word in ("locked", "busy", "disk is full", "readonly",
                                             "read-only", "interrupted", "no such"))


def make_private(path):
    """Tighten ``path`` (a file: 0600, a folder: 0700) if it is ours and looser."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    if stat.S_IMODE(st.st_mode) & ~want and st.st_uid == os.getuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & want)


def private_folder(folder):
    """Create ``folder`` (and its parents) 0700, or tighten it to 0700."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(folder)


def private_files(path):
    """Create ``path`` 0600 if missing; tighten it and its -wal/-shm to 0600."""
    path = Path(path)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        make_private(f"{path}{suffix}")


def connect(path, key=None):
    """A raw connection in autocommit mode: SQLCipher with ``key``, else sqlite3."""
    if key is None:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn
    if sqlcipher is None:  # pragma: no cover
        raise FieldsyncError(N_("This data folder is encrypted but the sqlcipher3 package is "
                                "missing: reinstall fieldsync."))
    conn = sqlcipher.connect(str(path), timeout=30, isolation_level=None)
    conn.row_factory = sqlcipher.Row
    # SQLCipher logs page HMAC failures to stderr; they reach the user as our
    # own one-line error (StoreDamaged) instead.
    conn.execute("PRAGMA cipher_log_level = NONE")
    # A raw 256-bit key (derived once per session in keys.py): no PBKDF2 per open.
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    return conn


def is_plaintext(path) -> bool:
    """Whether ``path`` is a non-empty plain SQLite file (its header in the clear)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except FileNotFoundError:
        return False


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encrypt_file(path, key):
    """Turn the plain SQLite file ``path`` into a SQLCipher file under ``key``.

    ``sqlcipher_export`` copies every table, index and row into a new
    encrypted file beside it, which is synced and then renamed over the
    original; the plain WAL (emptied by the close) goes with it. A crash
    before the rename leaves the plain file whole, and the next open with the
    key runs this again. The plain file's old blocks may remain on the disk
    until overwritten (README).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".encrypting")
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{tmp}{suffix}")
    private_files(tmp)
    conn = sqlcipher.connect(str(path), timeout=30, isolation_level=None)  # no key: plain
    try:
        conn.execute(f"ATTACH DATABASE ? AS enc KEY \"x'{key.hex()}'\"", (str(tmp),))
        conn.execute("SELECT sqlcipher_export('enc')")
        version = conn.execute("PRAGMA main.user_version").fetchone()[0]
        conn.execute(f"PRAGMA enc.user_version = {int(version)}")
        conn.execute("DETACH DATABASE enc")
    finally:
        conn.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def check_file(conn) -> str:
    """``ok``, or the first problems ``PRAGMA integrity_check`` finds (one line)."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(5)").fetchall()]
    except DB_ERRORS as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(rows)[:300]


def uuid7() -> str:
    """A time-ordered UUID (version 7): keeps index writes local on both sides."""
    ms = time.time_ns() // 1_000_000
    rand_a, rand_b = secrets.randbits(12), secrets.randbits(62)
    value = ((ms & (1 << 48) - 1) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class Database:
    """The device's SQLite connection, its ``meta`` values and its clock.

    :param path: the database file; its folder is created (0700) if needed.
    :param key: 32 raw bytes to open (or create) an encrypted file; ``None``
        for a plain SQLite file.

    A file that fails the integrity check still opens (so its records can be
    read and salvaged) with :attr:`damaged` set; every write then raises
    :class:`StoreDamaged`.
    """

    #: Why the file is considered damaged (the check's first problems), or None.
    damaged = None

    def __init__(self, path, key=None):
        self.path = Path(path)
        self.key = key
        private_folder(self.path.parent)
        private_files(self.path)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        self.conn = connect(self.path, key)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # durable across power loss
        except DB_ERRORS as exc:
            if not is_damage(exc):
                self.conn.close()
                raise
            self.damaged = str(exc)
        private_files(self.path)  # -wal and -shm now exist
        if self.damaged is None:
            check = check_file(self.conn)
            self.damaged = None if check == "ok" else check
        if self.damaged is not None:
            return  # readable as far as it goes; never written (see transaction)
        try:
            with self.transaction():
                migrate(self.conn, self.path)
                if self._meta("device_id") is None:
                    # Made once and kept: the server ties tokens and batch ids to it.
                    self._set_meta("device_id", "dev-" + secrets.token_hex(6))
        except StoreTooNew:
            self.conn.close()
            raise
        except StoreDamaged:
            pass  # self.damaged is set: reads may still work, writes are refused

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self):
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error.

        Refused with :class:`StoreDamaged` on a damaged file. An unexpected
        database error (not busy, locked, full or a constraint) re-runs the
        integrity check; if that fails the file is marked damaged and the
        error becomes :class:`StoreDamaged` (the transaction rolled back).
        """
        if self.damaged is not None:
            raise StoreDamaged(self.damaged)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except DB_ERRORS as exc:
            if self.conn.in_transaction:
                with contextlib.suppress(*DB_ERRORS):
                    self.conn.execute("ROLLBACK")
            if is_damage(exc):
                check = check_file(self.conn)
                if check != "ok":
                    self.damaged = check
                    raise StoreDamaged(check) from exc
            raise

    # -- meta ---------------------------------------------------------------

    def _meta(self, key, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, key, value):
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          (key, _dumps(value)))

    def get_meta(self, key, default=None):
        """A value of the ``meta`` table (JSON-decoded)."""
        return self._meta(key, default)

    def set_meta(self, **values):
        """Set several ``meta`` values in one transaction."""
        with self.transaction():
            for key, value in values.items():
                self._set_meta(key, value)

    @property
    def device_id(self) -> str:
        return self._meta("device_id")

    # -- clock --------------------------------------------------------------

    def _tick(self) -> str:
        """A fresh local clock, persisted in the caller's transaction.

        The clock is re-read inside the transaction so two processes on one
        data folder never issue the same clock.
        """
        clock = Clock(self.device_id, self._meta("hlc"))
        value = clock.now()
        self._set_meta("hlc", value)
        return value

    def _observe(self, remote):
        if remote:
            clock = Clock(self.device_id, self._meta("hlc"))
            self._set_meta("hlc", clock.observe(remote))

    def observe(self, remote):
        """Advance the persisted HLC past a clock received from the server."""
        if remote:
            with self.transaction():
                self._observe(remote)

    @property
    def hlc(self):
        return self._meta("hlc")

    def integrity_check(self) -> str:
        """The full ``PRAGMA integrity_check``: ``ok`` or its first problem."""
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

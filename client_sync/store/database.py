"""The device database itself: opening it, transactions, ``meta`` and the HLC.

One SQLite file (``device.db`` in the data folder), WAL mode with
``synchronous=FULL``: a tablet loses power, and a change the health worker
saw saved must survive it. Every public method that writes, here and in the
classes built on :class:`Database`, runs in one ``BEGIN IMMEDIATE``
transaction, so a crash at any instant leaves either the whole step or none
of it.

Also the small helpers the rest of the device shares: record ids
(:func:`uuid7`), timestamps (:func:`utc_now`) and the JSON of stored columns.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from schemas.clock import Clock

from .layout import StoreTooNew, migrate


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

    :param path: the database file; its folder is created if needed.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # durable across power loss
        try:
            with self.transaction():
                migrate(self.conn, self.path)
                if self._meta("device_id") is None:
                    # Made once and kept: the server ties tokens and batch ids to it.
                    self._set_meta("device_id", "dev-" + secrets.token_hex(6))
        except StoreTooNew:
            self.conn.close()
            raise

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self):
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

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
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

"""The device's local store: records, the outbox, sent batches, the HLC.

One SQLite file (``device.db`` in the data folder), WAL mode with
``synchronous=FULL``; every public method that writes runs in one
``BEGIN IMMEDIATE`` transaction. :class:`Store` is one object built in
layers, one module each:

``layout``    the tables, their versions (``MIGRATIONS``), the sync states.
``database``  :class:`Database`: opening, transactions, ``meta``, the HLC;
              also :func:`uuid7` and :func:`utc_now`.
``records``   :class:`Records`: local records, get and list, pulled pages,
              the cached form definitions.
``outbox``    :class:`Outbox`: local changes, the coalesced outbox, freezing
              batches, committing the server's answers.

Tables:

``records``  each record's merge state (schemas.merge), its sync state
             (pending, sent, acknowledged, conflict, rejected, forbidden) and
             the server's errors for it.
``outbox``   one entry per record with unsynced changes, coalesced.
``batches``  each sent, unanswered batch, byte for byte.
``forms``    the form definitions last fetched from the server.
``conflicts`` the server's open conflicts on records in the user's areas,
             refreshed at each sync (both values of each).
``meta``     device id, HLC, login, pull cursor, last sync, skew (JSON values).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FieldsyncError
from ..i18n import N_
from . import keys
from .database import encrypt_file, is_plaintext, private_folder
from .database import DB_ERRORS, Database, StoreDamaged, is_damage, utc_now, uuid7
from .layout import HELD_STATES, MIGRATIONS, SCHEMA, SYNC_STATES, StoreTooNew
from .outbox import Outbox
from .records import Records


class Store(Outbox):
    """The local SQLite store of one device.

    :param path: the database file; its folder is created if needed.
    """

    def reset_for_user(self):
        """Forget the previous user's records, cursor and login (nothing unsynced)."""
        with self.transaction():
            if self.unsynced_count():
                raise FieldsyncError(N_("Unsynced changes remain; refusing to forget them."))
            self.conn.execute("DELETE FROM records")
            self.conn.execute("DELETE FROM batches")
            self.conn.execute("DELETE FROM conflicts")
            for key in ("cursor", "resyncing", "last_sync", "skew", "token", "conflicts_at"):
                self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))


def open_store(data_dir, db_name="device.db", passphrase=None, encrypt=None) -> Store:
    """Open the device store of ``data_dir``, encrypted or not (see ``keys``).

    - An encrypted folder opens with ``passphrase``, else ``FIELDSYNC_PASSPHRASE``,
      else the session's key (:class:`keys.PassphraseNeeded` if none).
    - A plain folder stays plain unless a passphrase is given (or
      ``FIELDSYNC_PASSPHRASE`` is set): then it is encrypted now, its existing
      ``device.db`` migrated (``sqlcipher_export``).
    - ``encrypt=False`` keeps a plain folder plain even with
      ``FIELDSYNC_PASSPHRASE`` set (the explicit unencrypted mode).
    """
    data_dir = Path(data_dir)
    private_folder(data_dir)
    path = data_dir / db_name
    key = keys.unlock(data_dir, passphrase)
    if key is None and encrypt is not False:
        passphrase = passphrase or os.environ.get("FIELDSYNC_PASSPHRASE")
        if passphrase:
            key = keys.new_params(passphrase, data_dir)
    if key is not None and is_plaintext(path):
        plain = Store(path)  # bring the layout up to date and empty the WAL first
        damaged = plain.damaged
        plain.close()
        if damaged:  # salvage first (`fieldsync doctor`); encrypted at the next open
            return Store(path)
        encrypt_file(path, key)
    return Store(path, key=key)


__all__ = ["open_store", "keys", "Store", "Database", "StoreDamaged", "DB_ERRORS", "is_damage", "Records", "Outbox", "StoreTooNew", "MIGRATIONS", "SCHEMA",
           "SYNC_STATES", "HELD_STATES", "utc_now", "uuid7"]

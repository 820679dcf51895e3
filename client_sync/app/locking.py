"""The app's side of encryption at rest (`client_sync/store/keys.py`).

A sign-in on a plain data folder (a new device, or one used before
encryption was the default) asks for a new passphrase, typed twice, and
encrypts the folder before the token is stored: the app never writes a
token or a record into a plain `device.db`. An encrypted folder whose
session key has expired (or was forgotten by `fieldsync lock`) sends every
page to `/unlock`, which asks for the passphrase once.

The key is kept for the session as the CLI keeps it (a 0600 file on a
tmpfs, `keys.remember`). Where no tmpfs is at hand, this app process keeps
the passphrase in memory, for the same `FIELDSYNC_SESSION_HOURS`, and
forgets it when it stops; it is never written anywhere.
"""

from __future__ import annotations

import time

from flask import current_app

from ..store import keys

MIN_PASSPHRASE = 8
_HELD = "fieldsync_passphrase"


def encrypted() -> bool:
    """Whether this app's data folder is encrypted."""
    return keys.is_encrypted(current_app.config["DATA_DIR"])


def held() -> str | None:
    """The passphrase this process holds (no tmpfs for the key), if unexpired."""
    kept = current_app.extensions.get(_HELD)
    if kept and kept[1] > time.time():
        return kept[0]
    current_app.extensions.pop(_HELD, None)
    return None


def keep(client, passphrase):
    """Keep the opened folder's key for the session (see the module text)."""
    if not client.remember_key():
        current_app.extensions[_HELD] = (passphrase, time.time() + keys.session_hours() * 3600)


def forget():
    current_app.extensions.pop(_HELD, None)


def new_passphrase_problem(first, second, gettext) -> str | None:
    """What is wrong with a new passphrase typed twice, or None."""
    if len(first or "") < MIN_PASSPHRASE:
        return gettext("The passphrase needs at least %(n)s characters.", n=MIN_PASSPHRASE)
    if first != second:
        return gettext("The two passphrases differ; type the same one twice.")
    return None

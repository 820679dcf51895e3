"""Encryption at rest: the passphrase, the key made from it, the session's copy.

An encrypted data folder holds ``device.db`` as a SQLCipher file (AES-256,
every page HMAC-checked) and ``encryption.json`` (0600) beside it: the key
derivation's parameters, its salt and a check value. No secret is in it.

- **Key**: argon2id (argon2-cffi, already the server's password hash) of the
  passphrase with the folder's salt: 3 passes over 64 MiB, about 0.1-0.2 s
  here, once per session. SQLCipher gets the 32 raw bytes
  (``PRAGMA key = "x'…'"``), so opening the file costs no further key
  stretching.
- **Check value**: HMAC-SHA256 of a fixed text under the key. It tells a
  wrong passphrase ("wrong passphrase") from a damaged file ("run
  `fieldsync doctor`"), and helps an attacker no more than the file itself.
- **Session**: the passphrase is typed once; the *key* (never the
  passphrase) is kept for ``FIELDSYNC_SESSION_HOURS`` (default 12: a working
  day) in a 0600 file under ``$XDG_RUNTIME_DIR/fieldsync`` (a per-user tmpfs
  the system empties at logout and reboot), else ``/dev/shm/fieldsync-UID``
  (tmpfs, emptied at reboot). It never touches the disk, so a laptop that
  is switched off or whose user logged out gives nothing away. With
  neither, nothing is kept and every command asks. ``fieldsync lock``
  forgets it at once. Why not the OS keyring: a field laptop runs no Secret
  Service daemon and no desktop session for the CLI, and ``keyring`` would
  then fall back to a plaintext file or fail; the runtime folder works the
  same everywhere here, with a lifetime we state.
- ``FIELDSYNC_PASSPHRASE`` gives the passphrase to scripts and tests.

Losing the passphrase loses what was not yet synced: the rest is on the
server and comes back with a login on a fresh data folder (README).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from pathlib import Path

from ..errors import FieldsyncError
from ..i18n import N_

KEY_FILE = "encryption.json"
SESSION_HOURS = 12.0
PARAMS = {"kdf": "argon2id", "time_cost": 3, "memory_cost": 65536, "parallelism": 4}
_CHECK_TEXT = b"fieldsync device key check v1"
_derived: dict = {}  # (salt, sha256 of the passphrase) -> key, for this process only


class PassphraseNeeded(FieldsyncError):
    """The data folder is encrypted and no passphrase or session key is at hand."""


class WrongPassphrase(FieldsyncError):
    """The passphrase does not open this data folder."""


def read_params(data_dir):
    """The folder's ``encryption.json``, or ``None`` for a plain folder."""
    try:
        return json.loads((Path(data_dir) / KEY_FILE).read_text())
    except FileNotFoundError:
        return None


def is_encrypted(data_dir) -> bool:
    return (Path(data_dir) / KEY_FILE).exists()


def _write_private(path, text):
    tmp = Path(f"{path}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def derive(passphrase: str, params: dict) -> bytes:
    """The 32-byte key for ``passphrase`` under ``params`` (memoised per process)."""
    from argon2.low_level import Type, hash_secret_raw

    if not passphrase:
        raise FieldsyncError(N_("The passphrase is empty."))
    memo = (params["salt"], hashlib.sha256(passphrase.encode()).hexdigest())
    if memo not in _derived:
        _derived[memo] = hash_secret_raw(
            passphrase.encode(), bytes.fromhex(params["salt"]), time_cost=params["time_cost"],
            memory_cost=params["memory_cost"], parallelism=params["parallelism"], hash_len=32,
            type=Type.ID)
    return _derived[memo]


def check_value(key: bytes) -> str:
    return hmac.new(key, _CHECK_TEXT, hashlib.sha256).hexdigest()


def new_params(passphrase: str, data_dir):
    """Make and write a fresh ``encryption.json``; returns the key."""
    params = {**PARAMS, "salt": secrets.token_hex(16)}
    key = derive(passphrase, params)
    params["check"] = check_value(key)
    _write_private(Path(data_dir) / KEY_FILE, json.dumps(params, indent=1))
    return key


def key_for(passphrase: str, params: dict) -> bytes:
    """The key of ``passphrase``, or :class:`WrongPassphrase`."""
    key = derive(passphrase, params)
    if not hmac.compare_digest(check_value(key), params["check"]):
        raise WrongPassphrase(N_("Wrong passphrase for this device's data; nothing was opened "
                                 "or changed. Try again (letters and spaces count exactly)."))
    return key


# -- the session's copy of the key ----------------------------------------------------


def session_dir():
    """A private folder on a tmpfs for session keys, or ``None`` (nothing kept)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        folder = Path(runtime) / "fieldsync"
    elif os.path.isdir("/dev/shm"):
        folder = Path("/dev/shm") / f"fieldsync-{os.getuid()}"
    else:
        return None
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    # Someone else's folder, a link, or readable by others: keep nothing there.
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()
            or stat.S_IMODE(st.st_mode) & 0o077):
        return None
    return folder


def _session_file(data_dir):
    folder = session_dir()
    if folder is None:
        return None
    name = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:32]
    return folder / f"{name}.key"


def session_hours() -> float:
    value = os.environ.get("FIELDSYNC_SESSION_HOURS")
    try:
        return float(value) if value else SESSION_HOURS
    except ValueError:
        raise FieldsyncError(N_("FIELDSYNC_SESSION_HOURS must be a number, not {value!r}",
                                value=value)) from None


def remember(data_dir, key: bytes, hours=None):
    """Keep ``key`` for this session (see the module text); False if nowhere to."""
    path = _session_file(data_dir)
    hours = session_hours() if hours is None else hours
    if path is None or hours <= 0:
        return False
    _write_private(path, json.dumps({"key": key.hex(), "expires": time.time() + hours * 3600}))
    return True


def forget(data_dir):
    """Forget this folder's session key (``fieldsync lock``)."""
    path = _session_file(data_dir)
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    return False


def session_key(data_dir, params):
    """The session's key for ``data_dir`` if kept, unexpired and right; else None."""
    path = _session_file(data_dir)
    if path is None:
        return None
    try:
        st = os.lstat(path)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid()
                or stat.S_IMODE(st.st_mode) & 0o077):
            return None
        kept = json.loads(path.read_text())
        key = bytes.fromhex(kept["key"])
        fresh = float(kept["expires"]) > time.time()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if fresh and hmac.compare_digest(check_value(key), params.get("check", "")):
        return key
    forget(data_dir)
    return None


def unlock(data_dir, passphrase=None):
    """The key that opens ``data_dir``, or ``None`` for a plain folder.

    The passphrase given, else ``FIELDSYNC_PASSPHRASE``, else the session's key.

    :raises PassphraseNeeded: encrypted, and none of them at hand.
    :raises WrongPassphrase: a passphrase that does not open it.
    """
    params = read_params(data_dir)
    if params is None:
        return None
    passphrase = passphrase or os.environ.get("FIELDSYNC_PASSPHRASE")
    if passphrase:
        return key_for(passphrase, params)
    key = session_key(data_dir, params)
    if key is None:
        raise PassphraseNeeded(N_(
            "This device's data is encrypted: type its passphrase (the CLI asks in a "
            "terminal), or set FIELDSYNC_PASSPHRASE for a script. Nothing was changed."))
    return key

"""Users, passwords (argon2id), device tokens and the `require_auth` decorator.

A token is 32 random bytes given to the device once; the server keeps only its
SHA-256, so a copy of the database lets nobody sign in. A token belongs to one
device and expires after `TOKEN_LIFETIME_DAYS`; logout revokes it, and
disabling a user or changing their password revokes all of theirs.
"""
import contextlib
import functools
import hashlib
import json
import re
import secrets
import threading
import time
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app, g, request

from . import clock
from .db import write_transaction
from .errors import ApiError, Unavailable
from .scope import ROLES

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile
# (t=3, 64 MiB, p=4): about 0.1 s per login on a 2-core server.
_hasher = PasswordHasher()
# Verified against when the username is unknown, so that the answer takes
# as long as for a known user and does not reveal which names exist.
_DUMMY_HASH = None

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
AREA_RE = re.compile(r"^[A-Z0-9]+(\.[A-Z0-9]+)*$")
MIN_PASSWORD_LENGTH = 8


class UserError(ValueError):
    """A user-administration request that cannot be done (CLI message)."""


def hash_password(password):
    return _hasher.hash(password)


def verify_password(password_hash, password):
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def token_hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def audit(db, username, action, details=None):
    """One audit row; call inside the transaction of the action it records."""
    db.execute("INSERT INTO audit (at, username, action, details) VALUES (?, ?, ?, ?)",
               [clock.now_iso(), username, action, json.dumps(details or {})])


def _user_from_row(row):
    return {"id": row["id"], "username": row["username"], "role": row["role"],
            "areas": json.loads(row["areas"]), "disabled": bool(row["disabled"])}


def get_user(db, username):
    rows = list(db.query("SELECT * FROM users WHERE username = ?", [username]))
    return _user_from_row(rows[0]) if rows else None


def _check_password(password):
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")


def add_user(db, username, password, role, areas, by=None):
    """Create a user; raises `UserError` with a message naming what is wrong."""
    if not USERNAME_RE.match(username or ""):
        raise UserError("A username is 1-64 letters, digits or _ . @ -.")
    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    areas = list(dict.fromkeys(areas))
    bad = [a for a in areas if not AREA_RE.match(a)]
    if bad:
        raise UserError(f"Not an area code: {bad[0]!r} (expected e.g. QN.LM.03).")
    if role != "admin" and not areas:
        raise UserError("A health worker or supervisor needs at least one --area.")
    _check_password(password)
    password_hash = hash_password(password)
    with write_transaction(db):
        if get_user(db, username):
            raise UserError(f"User {username!r} already exists.")
        db.execute("INSERT INTO users (username, password_hash, role, areas, disabled, "
                   "created_at) VALUES (?, ?, ?, ?, 0, ?)",
                   [username, password_hash, role, json.dumps(areas), clock.now_iso()])
        audit(db, by, "user_add", {"username": username, "role": role, "areas": areas})


def list_users(db):
    return [_user_from_row(r) for r in db.query("SELECT * FROM users ORDER BY username")]


def revoke_user_tokens(db, user_id):
    """Revoke every live token of a user; call inside a write transaction."""
    db.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
               [clock.now_iso(), user_id])


def disable_user(db, username, by=None):
    with write_transaction(db):
        user = get_user(db, username)
        if not user:
            raise UserError(f"No user {username!r}.")
        db.execute("UPDATE users SET disabled = 1 WHERE id = ?", [user["id"]])
        revoke_user_tokens(db, user["id"])
        audit(db, by, "user_disable", {"username": username})


def enable_user(db, username, by=None):
    """Enable a disabled user; their devices sign in again (tokens stay revoked)."""
    with write_transaction(db):
        user = get_user(db, username)
        if not user:
            raise UserError(f"No user {username!r}.")
        db.execute("UPDATE users SET disabled = 0 WHERE id = ?", [user["id"]])
        audit(db, by, "user_enable", {"username": username})


def unlock_user(db, username, by=None):
    """Forget a user's failed sign-ins, lifting a lock-out before the window ends.

    Failures counted against the signing-in address stay: an address that
    guessed at many names is not let off by unlocking one of them.
    :returns: how many failures were forgotten.
    """
    with write_transaction(db):
        if not get_user(db, username):
            raise UserError(f"No user {username!r}.")
        count = db.execute("SELECT count(*) FROM login_failures WHERE key = ?",
                           [f"user:{username}"]).fetchone()[0]
        clear_failures(db, username)
        audit(db, by, "user_unlock", {"username": username, "failures": count})
    return count


def is_locked(db, username):
    """True if `username` has reached the per-user failed sign-in limit."""
    since = time.time() - current_app.config["LOGIN_WINDOW_SECONDS"]
    count = db.execute("SELECT count(*) FROM login_failures WHERE key = ? AND at > ?",
                       [f"user:{username}", since]).fetchone()[0]
    return count >= current_app.config["LOGIN_MAX_FAILURES_PER_USER"]


def revoke_device(db, username, device_id, by=None):
    """Revoke every live token of one device of a user (it must sign in again).

    :returns: how many tokens were revoked.
    """
    with write_transaction(db):
        user = get_user(db, username)
        if not user:
            raise UserError(f"No user {username!r}.")
        cur = db.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND device_id = ? "
                         "AND revoked_at IS NULL", [clock.now_iso(), user["id"], device_id])
        audit(db, by, "device_revoke", {"username": username, "device_id": device_id})
    return cur.rowcount


def set_password(db, username, password, by=None):
    """Change a password and revoke the user's tokens (devices sign in again)."""
    _check_password(password)
    password_hash = hash_password(password)
    with write_transaction(db):
        user = get_user(db, username)
        if not user:
            raise UserError(f"No user {username!r}.")
        db.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                   [password_hash, user["id"]])
        revoke_user_tokens(db, user["id"])
        audit(db, by, "user_passwd", {"username": username})


def set_scope(db, username, role=None, areas=None, by=None):
    """Change a user's role and/or areas (replacing them). Their tokens stay
    valid; their devices' pull cursors no longer match the scope, so the next
    pull answers `resync_required` and each device starts over."""
    if role is not None and role not in ROLES:
        raise UserError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    if areas is not None:
        areas = list(dict.fromkeys(areas))
        bad = [a for a in areas if not AREA_RE.match(a)]
        if bad:
            raise UserError(f"Not an area code: {bad[0]!r} (expected e.g. QN.LM.03).")
    with write_transaction(db):
        user = get_user(db, username)
        if not user:
            raise UserError(f"No user {username!r}.")
        role = role or user["role"]
        areas = user["areas"] if areas is None else areas
        if role != "admin" and not areas:
            raise UserError("A health worker or supervisor needs at least one --area.")
        db.execute("UPDATE users SET role = ?, areas = ? WHERE id = ?",
                   [role, json.dumps(areas), user["id"]])
        audit(db, by, "user_set", {"username": username, "role": role, "areas": areas})
    return role, areas


# --- login rate limit -------------------------------------------------------

def _failure_keys(username, address):
    return [f"user:{username}", f"addr:{address}"]


def _reserve_attempt(db, username, address):
    """Count this attempt as a failure before checking its password, or 429.

    Check and count are one write transaction, so parallel attempts cannot
    all pass the check before any is counted (issue 14: 60 parallel wrong
    passwords were checked 11 times for a limit of 5). A success takes its
    rows back (`_release_attempt`). :returns: the rowids it inserted.
    """
    now = time.time()
    keys = _failure_keys(username, address)
    with write_transaction(db):
        db.execute("DELETE FROM login_failures WHERE at < ?",
                   [now - current_app.config["LOGIN_WINDOW_SECONDS"]])
        _refuse_if_limited(db, username, address, now)
        return [db.execute("INSERT INTO login_failures (key, at) VALUES (?, ?)",
                           [key, now]).lastrowid for key in keys]


def _refuse_if_limited(db, username, address, now):
    """429 `too_many_attempts` if the user or the address reached its limit."""
    cfg = current_app.config
    since = now - cfg["LOGIN_WINDOW_SECONDS"]
    limits = [cfg["LOGIN_MAX_FAILURES_PER_USER"], cfg["LOGIN_MAX_FAILURES_PER_ADDRESS"]]
    for key, limit in zip(_failure_keys(username, address), limits):
        count = db.execute("SELECT count(*) FROM login_failures WHERE key = ? AND at > ?",
                           [key, since]).fetchone()[0]
        if count >= limit:
            retry = int(cfg["LOGIN_WINDOW_SECONDS"])
            raise ApiError("too_many_attempts",
                           "Too many failed sign-ins; wait a few minutes and try again.",
                           429, details={"retry_after": retry},
                           headers={"Retry-After": str(retry)})


def _invalid_credentials():
    # The one answer for an unknown user, a wrong password and a disabled
    # account: a disabled account's answer must not confirm its password.
    return ApiError("invalid_credentials", "Wrong username or password.", 401)


_SLOTS_LOCK = threading.Lock()


def login_slots(app):
    """`app`'s semaphore of `LOGIN_CONCURRENCY` password-check slots (one per
    worker process: each builds its app after the fork)."""
    slots = app.extensions.get("fieldsync_login_slots")
    if slots is None:
        with _SLOTS_LOCK:
            slots = app.extensions.setdefault("fieldsync_login_slots", threading.BoundedSemaphore(
                max(1, int(app.config["LOGIN_CONCURRENCY"]))))
    return slots


@contextlib.contextmanager
def password_check_slot():
    """Hold one of this worker's `LOGIN_CONCURRENCY` password-check slots.

    A password check is argon2id: 64 MiB and ~0.1 s of CPU. Two hundred
    devices signing in at once would otherwise put every task thread of
    every worker into one, and a pull or push behind them would wait until
    its client gave up (issue 14, the login storm). A sign-in waits at most
    `LOGIN_WAIT_SECONDS` for a slot, then gets 503 `unavailable` with the
    `RETRY_AFTER_SECONDS` setting as `Retry-After` (the device library
    retries it); nothing is stored or counted for it, so it never brings a
    user nearer their lock-out.
    """
    slots = login_slots(current_app)
    wait = float(current_app.config["LOGIN_WAIT_SECONDS"])
    if not (slots.acquire(timeout=wait) if wait > 0 else slots.acquire(blocking=False)):
        raise Unavailable("The server is busy checking other sign-ins; nothing was changed. "
                          "Try again in a few seconds.")
    try:
        yield
    finally:
        slots.release()


def check_credentials(db, username, password, address):
    """The user if the password is right and the account enabled; else ApiError.

    Shared by the API's login and the console's sign-in, so both count
    failures against the same limits (429 `too_many_attempts`). The attempt
    is counted before the password is checked (`_reserve_attempt`) and taken
    back on success; an unknown user, a wrong password and a disabled
    account get the same answer. A user or address already at its limit is
    refused (429) at once, by a read; the rest runs in a password-check slot
    (`password_check_slot`), and a sign-in refused for want of one (503) has
    counted nothing.
    """
    _refuse_if_limited(db, username, address, time.time())
    with password_check_slot():
        return _check_credentials(db, username, password, address)


def _check_credentials(db, username, password, address):
    attempt = _reserve_attempt(db, username, address)
    user_rows = list(db.query("SELECT * FROM users WHERE username = ?", [username]))
    if user_rows:
        ok = verify_password(user_rows[0]["password_hash"], password)
    else:
        global _DUMMY_HASH
        _DUMMY_HASH = _DUMMY_HASH or _hasher.hash("not a password")
        verify_password(_DUMMY_HASH, password)
        ok = False
    if not ok or user_rows[0]["disabled"]:
        raise _invalid_credentials()  # the attempt stays counted
    with write_transaction(db):
        db.execute("DELETE FROM login_failures WHERE key = ? OR rowid IN (?, ?)",
                   [f"user:{username}", *attempt])
    return _user_from_row(user_rows[0])


def clear_failures(db, username):
    """Forget a user's failed sign-ins; call inside a write transaction."""
    db.execute("DELETE FROM login_failures WHERE key = ?", [f"user:{username}"])


def login(db, username, password, device_id, app_version, address):
    """Check the password and issue a token for this device.

    A device belongs to the first user who signs in on it, until an admin
    releases it (`release_device`): another user's sign-in there is refused.

    :returns: (token, expires_at, user)
    """
    user = check_credentials(db, username, password, address)
    token = secrets.token_urlsafe(32)
    now = clock.utc_now()
    expires = now + timedelta(days=current_app.config["TOKEN_LIFETIME_DAYS"])
    with write_transaction(db):
        owner = db.execute("SELECT username FROM devices WHERE device_id = ?",
                           [device_id]).fetchone()
        taken = owner is not None and owner[0] is not None and owner[0] != username
        if taken:
            audit(db, username, "login_refused", {"device_id": device_id,
                                                  "reason": "device_taken"})
        else:
            db.execute("INSERT INTO tokens (token_hash, user_id, device_id, created_at, "
                       "expires_at) VALUES (?, ?, ?, ?, ?)",
                       [token_hash(token), user["id"], device_id, clock.iso(now),
                        clock.iso(expires)])
            db.execute("INSERT INTO devices (device_id, username, app_version) "
                       "VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                       "username = excluded.username, app_version = excluded.app_version",
                       [device_id, username, app_version])
            audit(db, username, "login", {"device_id": device_id})
    if taken:
        raise ApiError("device_taken", "This device is registered to another user. An "
                       "administrator must release it first (fieldsync-server device "
                       "release DEVICE_ID); until then, sign in on your own device.", 409,
                       details={"device_id": device_id})
    return token, clock.iso(expires), user


def release_device(db, device_id, by=None):
    """Free a device for another user: revoke its tokens, forget its owner and
    its outstanding rejections (they were the previous user's changes)."""
    with write_transaction(db):
        row = db.execute("SELECT username FROM devices WHERE device_id = ?",
                         [device_id]).fetchone()
        if row is None:
            raise UserError(f"No device {device_id!r}.")
        revoked = db.execute("UPDATE tokens SET revoked_at = ? WHERE device_id = ? AND "
                             "revoked_at IS NULL", [clock.now_iso(), device_id]).rowcount
        db.execute("UPDATE devices SET username = NULL WHERE device_id = ?", [device_id])
        db.execute("DELETE FROM rejections WHERE device_id = ?", [device_id])
        audit(db, by, "device_release", {"device_id": device_id, "owner": row[0],
                                         "tokens_revoked": revoked})
    return row[0]


def logout(db, user):
    """Revoke the token behind `user` (from `authenticate`)."""
    with write_transaction(db):
        db.execute("UPDATE tokens SET revoked_at = ? WHERE token_hash = ? AND "
                   "revoked_at IS NULL", [clock.now_iso(), user["token_hash"]])
        audit(db, user["username"], "logout", {"device_id": user["device_id"]})


# --- request authentication -------------------------------------------------

def authenticate(db, header):
    """The user behind an `Authorization: Bearer` header, or 401."""
    if not header:
        raise ApiError("missing_token", "Sign in first: this endpoint needs "
                       "'Authorization: Bearer <token>'.", 401,
                       headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise ApiError("invalid_token", "The Authorization header must be "
                       "'Bearer <token>'.", 401, headers={"WWW-Authenticate": "Bearer"})
    th = token_hash(token)
    rows = list(db.query(
        "SELECT t.token_hash, t.device_id, t.expires_at, t.revoked_at, u.id, u.username, "
        "u.role, u.areas, u.disabled FROM tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.token_hash = ?", [th]))
    if not rows:
        raise ApiError("invalid_token", "Unknown token; sign in again.", 401,
                       headers={"WWW-Authenticate": "Bearer"})
    row = rows[0]
    if row["revoked_at"] or row["disabled"]:
        raise ApiError("token_revoked", "This sign-in was revoked; sign in again.", 401,
                       headers={"WWW-Authenticate": "Bearer"})
    if row["expires_at"] <= clock.now_iso():
        raise ApiError("token_expired", "This sign-in has expired; sign in again.", 401,
                       headers={"WWW-Authenticate": "Bearer"})
    return {"id": row["id"], "username": row["username"], "role": row["role"],
            "areas": json.loads(row["areas"]), "device_id": row["device_id"],
            "token_hash": th}


def token_is_live(db, token_hash_):
    """Re-check a token inside a write transaction, just before COMMIT.

    Logout and `user disable` also take the write lock, so a token revoked
    while a push was running makes that push commit nothing.
    """
    row = db.execute(
        "SELECT t.revoked_at, t.expires_at, u.disabled FROM tokens t JOIN users u "
        "ON u.id = t.user_id WHERE t.token_hash = ?", [token_hash_]).fetchone()
    return bool(row) and row[0] is None and not row[2] and row[1] > clock.now_iso()


def require_auth(roles=None):
    """Decorator: authenticate the bearer token and put the user on `g.user`.

    :param roles: if given, the roles allowed (others get 403 `forbidden`).
    """
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            from .db import get_db
            g.user = authenticate(get_db(), request.headers.get("Authorization"))
            if roles is not None and g.user["role"] not in roles:
                raise ApiError("forbidden", "Your role may not use this endpoint.", 403,
                               details={"role": g.user["role"], "allowed": list(roles)})
            return view(*args, **kwargs)
        return wrapped
    return decorator

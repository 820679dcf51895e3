"""Opaque pull cursors, signed and bound to the user's scope.

A cursor is `base64url(json{"s": seq, "h": scope}) "." hmac`. The scope hash
covers the username, role and areas: after any of them changes, the old
cursor answers 409 `resync_required` and the device starts over, so it
receives the records its new scope adds. The HMAC (key in `meta`) means a
cursor cannot be forged or edited.
"""
import base64
import hashlib
import hmac
import json

from .errors import ApiError

MAX_CURSOR_LENGTH = 200


def scope_hash(user):
    text = json.dumps([user["username"], user["role"], sorted(user["areas"])])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _secret(db):
    return db.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()[0].encode()


def _sign(db, payload):
    return hmac.new(_secret(db), payload, hashlib.sha256).hexdigest()[:32]


def encode(db, user, seq):
    payload = base64.urlsafe_b64encode(
        json.dumps({"s": seq, "h": scope_hash(user)}, separators=(",", ":")).encode()
    ).decode().rstrip("=")
    return f"{payload}.{_sign(db, payload.encode())}"


def _invalid(reason):
    return ApiError("invalid_cursor", f"The cursor is not one this server gave ({reason}); "
                    "pull again without a cursor.", 400)


def decode(db, user, cursor, top):
    """The seq a cursor stands for; 400 if it is not ours, 409 if the scope changed.

    :param top: the newest seq; a cursor past it (a restored server) also
        needs a resync.
    """
    if len(cursor) > MAX_CURSOR_LENGTH or "." not in cursor:
        raise _invalid("malformed")
    payload, _, mac = cursor.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _sign(db, payload.encode()).encode()):
        raise _invalid("bad signature")
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        seq, scope = data["s"], data["h"]
    except (ValueError, KeyError, TypeError):
        raise _invalid("malformed") from None
    if not isinstance(seq, int) or seq < 0:
        raise _invalid("malformed")
    if scope != scope_hash(user) or seq > top:
        # The scope as it is now, so the device also checks its new records
        # against the new areas without signing in again.
        raise ApiError("resync_required", "Your areas or role changed (or the server was "
                       "restored): pull again from the start, without a cursor.", 409,
                       details={"user": {"username": user["username"], "role": user["role"],
                                         "areas": list(user["areas"])}})
    return seq

"""`POST /api/v1/auth/login` and `/logout`."""
from flask import Blueprint, g, jsonify, request

from .. import auth, clock
from ..body import read_json
from ..db import get_db
from ..errors import ApiError
from schemas.wire import DEVICE_ID_RE

bp = Blueprint("auth", __name__)

_LOGIN_KEYS = {"username", "password", "device_id", "app_version"}


@bp.post("/api/v1/auth/login")
def login():
    body = read_json(limit=16 * 1024)
    errors = {}
    for key in ("username", "password", "device_id"):
        if not isinstance(body.get(key), str) or not body.get(key):
            errors[key] = ["Required: a non-empty string."]
    if "app_version" in body and not isinstance(body["app_version"], str):
        errors["app_version"] = ["Must be a string."]
    for key in sorted(set(body) - _LOGIN_KEYS):
        errors[key] = ["Unknown field."]
    if not errors and not DEVICE_ID_RE.match(body["device_id"]):
        errors["device_id"] = ["1-64 characters: lower-case letters, digits, '-'."]
    if not errors and (len(body["username"]) > 64 or len(body["password"]) > 1024
                       or len(body.get("app_version") or "") > 64):
        errors["username"] = ["Too long."]
    if errors:
        raise ApiError("invalid_request", "The sign-in request is incomplete or malformed.",
                       400, details={"fields": errors})
    db = get_db()
    token, expires_at, user = auth.login(
        db, body["username"], body["password"], body["device_id"],
        body.get("app_version"), request.remote_addr or "unknown")
    return jsonify({"token": token, "expires_at": expires_at,
                    "user": {"username": user["username"], "role": user["role"],
                             "areas": user["areas"]},
                    "hlc": clock.current(db)})


@bp.post("/api/v1/auth/logout")
@auth.require_auth()
def logout():
    auth.logout(get_db(), g.user)
    return jsonify({"revoked": True})

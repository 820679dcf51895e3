"""`GET /api/v1/devices`: each device's user, app version, syncs, rejections, skew.

Supervisors see the devices of users whose areas lie in theirs; admins all.
"""
import json

from flask import Blueprint, g, jsonify

from ..auth import require_auth
from ..db import get_db
from ..scope import covers

bp = Blueprint("devices", __name__)


def device_rows(db, user):
    """The devices `user` may see, as `GET /api/v1/devices` lists them (the
    console's dashboard reads the same rows)."""
    rows = db.query(
        "SELECT d.*, u.areas AS user_areas, u.role AS user_role, "
        "(SELECT count(*) FROM rejections r WHERE r.device_id = d.device_id) AS rejected "
        "FROM devices d LEFT JOIN users u ON u.username = d.username ORDER BY d.device_id")
    out = []
    for row in rows:
        areas = json.loads(row["user_areas"] or "[]")
        # A device belongs to the supervisor's view when every area of its
        # user lies within the supervisor's areas (an admin's device: admins only).
        if user["role"] != "admin":
            if row["user_role"] == "admin" or not areas or \
                    not all(covers(user, a) for a in areas):
                continue
        out.append({"device_id": row["device_id"], "user": row["username"],
                    "areas": areas, "app_version": row["app_version"],
                    "last_push": row["last_push"], "last_pull": row["last_pull"],
                    "records_rejected": row["rejected"],
                    "clock_skew_seconds": row["skew_seconds"],
                    "restamped": row["restamped"]})
    return out


@bp.get("/api/v1/devices")
@require_auth(roles=("supervisor", "admin"))
def list_devices():
    return jsonify({"devices": device_rows(get_db(), g.user)})

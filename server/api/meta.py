"""`GET /api/v1/` (no auth: version, time, clock, limits) and the OpenAPI document."""
from flask import Blueprint, current_app, jsonify

from .. import __version__, clock
from ..db import get_db
from ..openapi import spec

bp = Blueprint("meta", __name__)


def limits():
    cfg = current_app.config
    return {"max_records_per_batch": cfg["MAX_RECORDS_PER_BATCH"],
            "max_batch_bytes": cfg["MAX_BATCH_BYTES"],
            "pull_limit_default": cfg["PULL_LIMIT_DEFAULT"],
            "pull_limit_max": cfg["PULL_LIMIT_MAX"]}


@bp.get("/api/v1/")
def index():
    return jsonify({"version": __version__, "server_time": clock.now_iso(),
                    "hlc": clock.current(get_db()), "limits": limits()})


@bp.get("/api/openapi.json")
def openapi():
    return jsonify(spec(limits()))

"""`GET /api/v1/forms`: every published version the user may write or read."""
import json

from flask import Blueprint, g, jsonify

from ..auth import require_auth
from ..db import get_db
from ..scope import can_read_form, can_write_form

bp = Blueprint("forms", __name__)


@bp.get("/api/v1/forms")
@require_auth()
def list_forms():
    out = []
    for row in get_db().query("SELECT definition FROM forms ORDER BY id, version"):
        definition = json.loads(row["definition"])
        if can_write_form(g.user, definition) or can_read_form(g.user, definition):
            out.append(definition)
    return jsonify({"forms": out})

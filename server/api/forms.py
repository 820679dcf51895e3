"""`GET /api/v1/forms`: every published version the user may write or read.

A device asks at every sync, and the definitions rarely change: the answer
carries a weak ETag (of its JSON; weak because compression varies the bytes),
and a request whose `If-None-Match` still matches gets `304 Not Modified`
with no body. On a 2G link that saves the ~11 KB of compressed definitions
(58 KB of JSON) at every sync.
"""
import json

from flask import Blueprint, g, jsonify, request

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
    response = jsonify({"forms": out})
    response.add_etag(weak=True)
    # Per user (the forms they may use), and always checked with the server.
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response.make_conditional(request)

"""`POST /api/v1/sync/push` and `GET /api/v1/sync/pull` (DESIGN.md "HTTP API v1")."""
import hashlib
import json
import logging
import re
import sqlite3
from datetime import timedelta

import orjson
from flask import Blueprint, current_app, g, request
from marshmallow import ValidationError

from schemas import wire
from schemas.forms import best_language
from schemas.merge import CLOCK_MODES

from .. import auth, clock, cursor, rejections, storage, testkill
from ..body import read_json
from ..catalog import Catalog
from ..db import get_db, read_snapshot, write_transaction
from ..errors import ApiError, Unavailable, is_unavailable
from ..scope import covers

bp = Blueprint("sync", __name__)
log = logging.getLogger("fieldsync.server")

_DIGITS = re.compile(r"^[0-9]{1,9}\Z")


#: How deep a push body may nest (objects and lists inside each other). A
#: real batch nests 7 levels (records, a change, its data, a repeat, an item,
#: a geopoint); orjson encodes up to 254, the stdlib's encoder fails near 1,000
#: with a RecursionError (issue 14: a 500). Checked only when orjson fails.
MAX_JSON_DEPTH = 128


def _deeper_than(node, limit):
    """True when `node` nests more than `limit` containers deep (no recursion)."""
    stack = [(node, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in (node.values() if type(node) is dict else node):
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def _body_sha256(payload):
    # Canonical JSON: the same batch re-serialised (other key order, spacing,
    # gzip or not) is the same body.
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, or too deep
        if _deeper_than(payload, MAX_JSON_DEPTH):
            raise ApiError("invalid_json", f"The body nests objects and lists more than "
                           f"{MAX_JSON_DEPTH} levels deep; no form needs more than a few. "
                           "Nothing was stored.", 400,
                           details={"max_depth": MAX_JSON_DEPTH}) from None
        return _legacy_sha256(payload)
    return hashlib.sha256(text).hexdigest()


def _legacy_sha256(payload):
    # The stdlib's canonical text: batches stored before orjson (and bodies
    # orjson cannot encode). It differs from orjson's only in how some
    # numbers are written (1e+16 and 1e16).
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _push_schema():
    # The schema's own list limit is the published default; ours is the
    # setting, checked just before (413).
    schema = wire.PushSchema()
    schema.fields["records"].validators = []
    return schema


_PUSH_SCHEMA = _push_schema()


def _check_envelope(payload, user):
    cfg = current_app.config
    records = payload.get("records")
    if isinstance(records, list) and len(records) > cfg["MAX_RECORDS_PER_BATCH"]:
        raise ApiError("batch_too_large",
                       f"A batch holds at most {cfg['MAX_RECORDS_PER_BATCH']} records; "
                       f"this one has {len(records)}.", 413,
                       details={"max_records_per_batch": cfg["MAX_RECORDS_PER_BATCH"]})
    try:
        # The changes are checked one by one next (wire.load_change): here
        # only that they are a list of objects, without marshmallow's
        # per-item machinery (~4 us a change).
        if type(records) is list and all(type(r) is dict for r in records):
            envelope = {**_PUSH_SCHEMA.load({**payload, "records": []}), "records": records}
        else:
            envelope = _PUSH_SCHEMA.load(payload)
    except ValidationError as exc:
        raise ApiError("invalid_request", "The push envelope is malformed; nothing was "
                       "stored.", 400, details={"fields": exc.messages}) from None
    if envelope["device_id"] != user["device_id"]:
        raise ApiError("device_mismatch", "device_id is not the device this token was "
                       "issued to; sign in on this device.", 403)
    return envelope


def _stored_answer(db, device_id, batch_id, body_sha, payload):
    row = db.execute("SELECT body_sha256, response FROM batches WHERE device_id = ? AND "
                     "batch_id = ?", [device_id, batch_id]).fetchone()
    if row is None:
        return None
    if row[0] != body_sha and (payload is None or row[0] != _legacy_sha256(payload)):
        raise ApiError("batch_id_reused", "This batch id was already used with a different "
                       "body; give each batch its own id.", 409,
                       details={"batch_id": batch_id})
    return row[1]


def _json_answer(text):
    """A 200 answer from JSON text (bytes or str) already encoded."""
    return current_app.response_class(text, mimetype="application/json")


def _forms_by_id(records):
    """{record id: (form, version)} of the pushed changes, for `_push_answer`;
    None when the answer stays in English (the usual case costs nothing)."""
    if best_language(request.headers.get("Accept-Language")) == "en":
        return None
    named = {}
    for raw in records:
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            named[raw["id"].lower()] = (raw.get("form"), raw.get("form_version"))
    return named


def _push_answer(db, text, named):
    """The push answer in the language of `Accept-Language` (DESIGN.md
    "Languages in form definitions"): each result's form validation errors
    and warnings, through its form (`named`: from `_forms_by_id`). The answer
    is stored (and resent) in English; English, or no language of ours, is
    that text unchanged."""
    lang = best_language(request.headers.get("Accept-Language"))
    if lang == "en" or named is None:
        return _json_answer(text)
    body, catalog = orjson.loads(text), Catalog(db)
    for result in body["results"]:
        form_id, version = named.get(result.get("id") or "", (None, None))
        if not isinstance(form_id, str) or type(version) is not int:
            continue
        form = catalog.get(form_id, version)
        if form is None:
            continue
        if result.get("warnings"):
            result["warnings"] = form.localize(result["warnings"], lang)
        if result.get("code") == "invalid" and result.get("errors"):
            result["errors"] = form.localize(result["errors"], lang)
    response = _json_answer(orjson.dumps(body))
    response.headers["Content-Language"] = lang
    return response


def _forbidden_by_raw_area(db, raw, user, rid):
    """Precedence: an area outside the user's scope, the one the change names
    or the stored record's, is `forbidden` even when another part of the
    change is malformed."""
    area = raw.get("area") if isinstance(raw, dict) else None
    if isinstance(area, str) and wire.AREA_RE.match(area) and not covers(user, area):
        return True
    stored = db.execute("SELECT area FROM records WHERE id = ?", [rid]).fetchone() if rid else None
    return stored is not None and not covers(user, stored[0])


def _raw_id(raw):
    rid = raw.get("id") if isinstance(raw, dict) else None
    return rid.lower() if isinstance(rid, str) and wire.UUID_RE.match(rid) else None


@bp.post("/api/v1/sync/push")
@auth.require_auth()
def push():
    user, cfg = g.user, current_app.config
    payload = read_json()
    envelope = _check_envelope(payload, user)
    db = get_db()
    body_sha = _body_sha256(payload)
    device_id, batch_id = envelope["device_id"], envelope["batch_id"]
    answer = _stored_answer(db, device_id, batch_id, body_sha, payload)
    named = _forms_by_id(envelope["records"])
    if answer is not None:
        return _push_answer(db, answer, named)
    # Envelope of each change: a malformed one is rejected alone.
    changes = []
    # The raw changes are dropped as they are checked (a bad push's memory:
    # issue 14); only a batch stored before orjson needed them again
    # (_legacy_sha256), and the check above has found any such one already.
    raws, payload["records"] = payload["records"], None
    envelope.pop("records")
    raws.reverse()
    while raws:
        raw = raws.pop()
        change, errors = wire.load_change(raw)
        if errors:
            rid = _raw_id(raw)
            if _forbidden_by_raw_area(db, raw, user, rid):
                changes.append(rejections.forbidden(rid, "This area is outside your areas."))
            else:
                changes.append(rejections.rejected(rid, errors, "invalid"))
        else:
            changes.append(change)
    server_now = clock.utc_now()
    skew = (envelope["device_time"] - server_now).total_seconds()
    try:
        # Form validation before the lock (re-checked under it: storage.precheck).
        prechecked = storage.precheck(db, changes, tz_name=cfg["TIMEZONE"])
        with write_transaction(db):
            # Re-check under the write lock: the same batch may be in flight twice.
            answer = _stored_answer(db, device_id, batch_id, body_sha, None)
            if answer is not None:
                return _push_answer(db, answer, named)
            writer = storage.Writer(db, tolerance_seconds=cfg["CLOCK_TOLERANCE_SECONDS"],
                                    tz_name=cfg["TIMEZONE"])
            writer.preload([c["id"] for c in changes if "status" not in c])
            results = []
            # Most devices have no outstanding rejection: then an accepted
            # change has none to clear, and note_rejection is skipped for it.
            pending = db.execute("SELECT 1 FROM rejections WHERE device_id = ? LIMIT 1",
                                 [device_id]).fetchone() is not None
            for change, pre in zip(changes, prechecked):
                result = change if "status" in change else \
                    writer.apply(change, user=user, device=device_id, prechecked=pre)
                if pending or result["status"] in ("rejected", "forbidden"):
                    rejections.note_rejection(db, device_id, batch_id, result, writer.now)
                    pending = True
                results.append(result)
            answer = orjson.dumps({
                "results": results, "hlc": writer.hlc(),
                "skew": {"seconds": round(skew, 3), "restamped": writer.restamped}})
            writer.finish()
            counts = dict.fromkeys(("applied", "unchanged", "conflict", "rejected",
                                    "forbidden"), 0)
            for result in results:
                counts[result["status"]] += 1
            # Who pushed what and how many: no field value in the audit.
            auth.audit(db, user["username"], "push", {
                "device_id": device_id, "batch_id": batch_id, "records": len(results),
                **counts})
            db.execute("INSERT INTO devices (device_id, username, app_version, last_push, "
                       "skew_seconds, restamped) VALUES (?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (device_id) DO UPDATE SET username = excluded.username, "
                       "app_version = excluded.app_version, last_push = excluded.last_push, "
                       "skew_seconds = excluded.skew_seconds, "
                       "restamped = devices.restamped + excluded.restamped",
                       [device_id, user["username"], envelope["app_version"], writer.now,
                        round(skew, 3), writer.restamped])
            db.execute("INSERT INTO batches (device_id, batch_id, body_sha256, response, "
                       "created_at) VALUES (?, ?, ?, ?, ?)",
                       [device_id, batch_id, body_sha, answer.decode(), writer.now])
            cutoff = clock.iso(server_now - timedelta(days=cfg["BATCH_RETENTION_DAYS"]))
            db.execute("DELETE FROM batches WHERE created_at < ?", [cutoff])
            # A token revoked while this batch ran (logout, user disabled) takes
            # the same write lock: checked here, nothing of this batch commits.
            if not auth.token_is_live(db, user["token_hash"]):
                raise ApiError("token_revoked", "This sign-in was revoked during the "
                               "sync; nothing was stored. Sign in again.", 401)
    except sqlite3.OperationalError as exc:
        if is_unavailable(exc):
            raise Unavailable("The server's database is busy or full; nothing from this "
                              "batch was stored. Send it again shortly.",
                              cfg["RETRY_AFTER_SECONDS"]) from None
        raise
    if testkill.ARMED is not None:  # tests only (docs/internals.md): committed, unanswered
        testkill.reached("push-committed", f"batch_id={batch_id}")
    # Only now, after COMMIT, is the batch acknowledged.
    return _push_answer(db, answer, named)


def _limit():
    cfg = current_app.config
    raw = request.args.get("limit")
    if raw is None:
        return cfg["PULL_LIMIT_DEFAULT"]
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not _DIGITS.match(raw) or not 1 <= int(raw) <= cfg["PULL_LIMIT_MAX"]:
        raise ApiError("invalid_limit", f"limit must be a whole number from 1 to "
                       f"{cfg['PULL_LIMIT_MAX']}.", 400,
                       details={"pull_limit_max": cfg["PULL_LIMIT_MAX"]})
    return int(raw)


def _clocks():
    raw = request.args.get("clocks", "all")
    if raw not in CLOCK_MODES:
        raise ApiError("invalid_clocks", "clocks must be 'all' (every field's clock, the "
                       "default), 'sparse' (only clocks that differ from the record's hlc, "
                       "as in a push) or 'common' (only clocks that differ from the "
                       "record's common_hlc, the clock most of its fields share).", 400,
                       details={"clocks": list(CLOCK_MODES)})
    return raw


@bp.get("/api/v1/sync/pull")
@auth.require_auth()
def pull():
    user = g.user
    limit = _limit()
    clocks = _clocks()
    db = get_db()
    raw_cursor = request.args.get("cursor")
    with read_snapshot(db):
        catalog = Catalog(db)
        top = storage.max_seq(db)
        after = cursor.decode(db, user, raw_cursor, top) if raw_cursor else 0
        records, next_seq, more = storage.pull_page(db, user, after, limit, catalog,
                                                    clocks=clocks)
        hlc = clock.current(db)
    restricted = catalog.restricted_forms()
    read = sorted({form for _, form, _ in records} & set(restricted))
    # Every page is audited (who, which device, how many records); the end of
    # a pull is also the device's last_pull (the devices view shows the last
    # complete pull, so a device stuck mid-pull shows as behind).
    try:
        with write_transaction(db):
            auth.audit(db, user["username"], "pull", {
                "device_id": user["device_id"], "records": len(records), "more": more})
            if not more:
                db.execute("INSERT INTO devices (device_id, username, last_pull) "
                           "VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                           "last_pull = excluded.last_pull",
                           [user["device_id"], user["username"], clock.now_iso()])
            if read:  # restricted records (e.g. cp_report) leave only audited
                auth.audit(db, user["username"], "restricted_read", {
                    "forms": read, "via": "pull", "device_id": user["device_id"],
                    "records": [rid for rid, form, _ in records if form in read]})
    except sqlite3.OperationalError as exc:
        # A busy or full database must not stop devices from receiving
        # records (the page is then sent without its audit row and last_pull),
        # but a restricted read is never sent unaudited.
        if not is_unavailable(exc) or read:
            raise
        log.warning("A pull page was sent unaudited: the database is busy or full.")
    # The records are their stored JSON (storage.wire_text), joined as bytes
    # in one copy: no record is decoded or encoded here.
    head = b'{"records":['
    tail = b"]," + orjson.dumps({"cursor": cursor.encode(db, user, next_seq), "more": more,
                                 "hlc": hlc})[1:] + b"\n"
    texts = [text for _, _, text in records] or [b""]
    texts[0] = head + texts[0]
    texts[-1] += tail  # the same item as texts[0] when there is one record
    body = b",".join(texts)
    return current_app.response_class(body, mimetype="application/json")

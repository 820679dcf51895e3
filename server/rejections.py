"""Refused changes: their push results, capped, and the outstanding rejections.

A change can carry any number of unknown or bad fields; its error list is
capped (`cap_errors`) so that one bad push costs the server little (issue 14:
120 changes with 10,000 unknown fields each made a 31 MB answer, stored twice).
The answer is stored once, in `batches.response`; a row of `rejections` only
says which batch holds the errors of a device's outstanding rejected record.
"""

#: Error messages kept per change; the rest are only counted (`errors_omitted`).
MAX_ERRORS = 20
#: Longer field names are cut in an error list: a real field's name is far
#: shorter, and a client could send a megabyte-long one.
MAX_KEY_CHARS = 64
MAX_MESSAGE_CHARS = 200


def _key(key):
    key = str(key)
    return key if len(key) <= MAX_KEY_CHARS else key[:MAX_KEY_CHARS - 1] + "…"


def _message(text):
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + "…"


def cap_errors(errors, most=MAX_ERRORS):
    """The first `most` messages of an error tree, in its own shape, and how
    many were left out.

    The tree is ``{field: [message, ...]}``, a repeat nesting
    ``{"<index>": {field: [...]}}`` (schemas.forms.Result) and marshmallow
    nesting lists of dicts; every shape is kept, only shortened, so a device
    reads the capped list by field as before.

    :returns: (capped tree, number of messages left out)
    """
    budget = [most]
    omitted = [0]

    def walk(node):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if budget[0] <= 0:
                    omitted[0] += _count(value)
                    continue
                kept = walk(value)
                name = _key(key)
                if kept not in ({}, []) and name not in out:
                    out[name] = kept
                elif name in out:  # two long names cut to the same prefix
                    omitted[0] += _count(kept)
            return out
        if isinstance(node, (list, tuple)):
            out = []
            for item in node:
                if budget[0] <= 0:
                    omitted[0] += _count(item)
                    continue
                kept = walk(item)
                if kept not in ({}, []):
                    out.append(kept)
            return out
        budget[0] -= 1
        return _message(node)

    capped = walk(errors)
    return capped, omitted[0]


def _count(node):
    if isinstance(node, dict):
        return sum(_count(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return sum(_count(v) for v in node)
    return 1


def rejected(record_id, errors, code, omitted=0, most=MAX_ERRORS):
    """A `rejected` push result, its errors capped.

    :param omitted: messages already left out before (`cap_errors` upstream).
    """
    capped, more = cap_errors(errors, most)
    out = {"id": record_id, "status": "rejected", "code": code, "errors": capped}
    if omitted + more:
        out["errors_omitted"] = omitted + more
    return out


def forbidden(record_id, message):
    """A `forbidden` push result."""
    return {"id": record_id, "status": "forbidden", "errors": {"area": [message]}}


def note_rejection(db, device_id, batch_id, result, now):
    """Keep the device's outstanding rejections current (for `GET /devices`).

    A row names the batch whose stored answer holds the errors, not the errors.
    """
    if result.get("id") is None:
        return
    if result["status"] in ("rejected", "forbidden"):
        db.execute("INSERT INTO rejections (device_id, record_id, status, code, batch_id, at) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, record_id) DO UPDATE "
                   "SET status = excluded.status, code = excluded.code, "
                   "batch_id = excluded.batch_id, at = excluded.at",
                   [device_id, result["id"], result["status"], result.get("code"), batch_id,
                    now])
    else:
        db.execute("DELETE FROM rejections WHERE device_id = ? AND record_id = ?",
                   [device_id, result["id"]])

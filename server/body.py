"""Reading JSON request bodies with size limits, gzip included.

The limit applies to the decompressed size and is enforced while
decompressing, so a gzip bomb is refused after reading at most the limit.
"""
import json
import zlib

import orjson

from flask import current_app, request

from .errors import ApiError

_CHUNK = 64 * 1024


def _too_large(limit):
    return ApiError("body_too_large",
                    f"A request body holds at most {limit} bytes (after decompression); "
                    "send fewer records per batch.", 413,
                    details={"max_batch_bytes": limit})


def _read_raw(limit):
    stream = request.stream
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def read_body(limit=None):
    """The request body as bytes, decompressed, at most `limit` bytes."""
    limit = limit or current_app.config["MAX_BATCH_BYTES"]
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip"):
        raise ApiError("unsupported_encoding", "Request bodies may be sent plain or with "
                       "'Content-Encoding: gzip'.", 415, details={"encoding": encoding[:40]})
    out, size = [], 0
    gzip = encoding in ("gzip", "x-gzip")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
    for chunk in _read_raw(limit):
        if inflater is None:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.append(chunk)
            continue
        data = chunk
        while data:
            try:
                piece = inflater.decompress(data, limit + 1 - size)
            except zlib.error:
                raise ApiError("invalid_gzip", "The body is not valid gzip.", 400) from None
            size += len(piece)
            if size > limit:
                raise _too_large(limit)
            out.append(piece)
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
    if inflater is not None:
        if not inflater.eof:
            raise ApiError("invalid_gzip", "The gzip body is truncated.", 400)
    return b"".join(out)


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def read_json(limit=None):
    """The decoded JSON object of the request body, or a 4xx `ApiError`."""
    raw = read_body(limit)
    try:
        # orjson refuses what the stdlib would word better (an empty body, a
        # BOM, a lone surrogate escape): those take the stdlib path below.
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = _stdlib_json(raw)
    if not isinstance(payload, dict):
        raise ApiError("invalid_json", "The body must be a JSON object.", 400)
    return payload


def _stdlib_json(raw):
    if not raw.strip():
        raise ApiError("invalid_json", "The request body is empty; send a JSON object.", 400)
    try:
        payload = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, json.JSONDecodeError) else "not valid JSON"
        raise ApiError("invalid_json", f"The body is not valid JSON: {message[:200]}",
                       400) from None
    try:
        # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8
        # text (SQLite, exports, hashes) can hold: refuse it here, once.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("invalid_json", "The body holds an unpaired surrogate escape "
                       "(\\ud800-\\udfff); send text as valid UTF-8.", 400) from None
    try:
        orjson.dumps(payload)  # what is stored and answered is encoded with it
    except orjson.JSONEncodeError:
        raise ApiError("invalid_json", "The body holds an integer beyond 64 bits.", 400) from None
    return payload

"""gzip for JSON answers when the client asks (`Accept-Encoding: gzip`).

Pull pages over 2G links are the point: JSON records compress about 5-10x.
Streamed answers (exports) are left alone; small ones are not worth it.
"""
import gzip

from flask import request

MIN_SIZE = 1024


def _wants_gzip():
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def gzip_response(response):
    response.vary.add("Accept-Encoding")
    if (response.direct_passthrough or response.is_streamed
            or "Content-Encoding" in response.headers or response.status_code < 200
            or not _wants_gzip()):
        return response
    body = response.get_data()
    if len(body) < MIN_SIZE:
        return response
    response.set_data(gzip.compress(body, compresslevel=6))
    response.headers["Content-Encoding"] = "gzip"
    return response


def init_app(app):
    app.after_request(gzip_response)

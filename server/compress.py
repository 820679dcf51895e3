"""Compressed JSON answers when the client asks: zstd, else gzip.

Pull pages over 2G links are the point. zstd level 1 sends fewer bytes than
gzip level 6 (62 instead of 74 per record edited once, 53 instead of 61 per
fresh one, pulled with clocks=common) at a tenth of the server's CPU
(bench/README.md, "The third round"), so it is preferred whenever the client
accepts it (`Accept-Encoding: zstd`: the device library does, through
urllib3). Clients that ask only for gzip get gzip, as before.
Streamed answers (exports) are left alone; small ones are not worth it.
"""
import gzip

from flask import request

try:  # Python 3.14 has it; before, the backports.zstd package (pyproject.toml)
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from backports import zstd
    except ImportError:
        zstd = None

MIN_SIZE = 1024
ZSTD_LEVEL = 1
GZIP_LEVEL = 6
# Ours in order of preference, used when the client's q-values tie.
CODINGS = (("zstd",) if zstd else ()) + ("gzip",)


def _accepted(header: str) -> dict:
    """``Accept-Encoding`` as {coding: q}; unreadable q-values count as 1."""
    accepted = {}
    for part in header.split(","):
        coding, *params = part.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    pass
        accepted["gzip" if coding == "x-gzip" else coding] = q
    return accepted


def choose(header: str):
    """The coding to answer with for this ``Accept-Encoding``, or None."""
    accepted = _accepted(header)
    best, best_q = None, 0.0
    for coding in CODINGS:
        q = accepted.get(coding, accepted.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


def encode(body: bytes, coding: str) -> bytes:
    if coding == "zstd":
        return zstd.compress(body, level=ZSTD_LEVEL)
    return gzip.compress(body, compresslevel=GZIP_LEVEL)


def compress_response(response):
    response.vary.add("Accept-Encoding")
    if (response.direct_passthrough or response.is_streamed
            or "Content-Encoding" in response.headers or response.status_code < 200):
        return response
    coding = choose(request.headers.get("Accept-Encoding", ""))
    if coding is None:
        return response
    body = response.get_data()
    if len(body) < MIN_SIZE:
        return response
    response.set_data(encode(body, coding))
    response.headers["Content-Encoding"] = coding
    return response


def init_app(app):
    app.after_request(compress_response)

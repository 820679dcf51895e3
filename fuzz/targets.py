"""What each fuzz target does with one input, and what it must never see.

Shared by the atheris harnesses (`fuzz/fuzz_*.py`, `make fuzz`) and by the
replay of the committed seeds and past findings in `make test`
(tests/test_fuzz_seeds.py), so a crash found once stays fixed.

Each target takes the raw input bytes:

- **push**: the bytes as a push body, plain, or gzip-compressed when the
  first byte is odd (then the rest), to the in-process app with a health
  worker's token. The answer must not be a 5xx, must be JSON, and an error
  must have the shape ``{error, message, details}``.
- **pull**: the bytes (as UTF-8, invalid bytes replaced) as the pull query
  string; the same checks.
- **client**: the device's reading of a server answer
  (``Transport._decode``): the first byte picks the status, the rest is the
  body. It returns a dict (only for a 200) or raises one of the library's
  own errors, never anything else.
- **sync**: a logged-in device with two queued records syncs against a
  server whose every answer is made from the bytes (a status, then raw
  bytes or a push, pull, forms or index answer with odd values). It may
  fail, but only with the library's own errors, and no record is lost: each
  is still on the device, and still queued unless it was answered
  `applied`, `unchanged` or `conflict`.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("push", "pull", "client", "sync")
STATUSES = (200, 201, 304, 400, 401, 403, 404, 409, 413, 415, 429, 500, 502, 503)
PASSWORD = "fuzz-pass-123"


class Finding(AssertionError):
    """The input broke a rule above."""


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def check(resp):
    """Raise a Finding if an API answer breaks the rules above."""
    text = resp.get_data(as_text=True)
    if resp.status_code >= 500:
        raise Finding(f"{resp.status_code}: {text[:500]}")
    if "Traceback" in text or 'File "' in text:
        raise Finding(f"a traceback reached the client: {text[:500]}")
    if resp.mimetype != "application/json":
        raise Finding(f"{resp.status_code} answered as {resp.mimetype}")
    body = json.loads(text, parse_constant=_no_constant)
    if resp.status_code >= 400 and not (
            isinstance(body, dict) and set(body) == {"error", "message", "details"}
            and isinstance(body["error"], str) and body["error"]):
        raise Finding(f"an error without the error shape: {text[:500]}")


class App:
    """The in-process app on a fresh database, with a health worker's token."""

    def __init__(self):
        from server import create_app
        self.tmp = tempfile.TemporaryDirectory(prefix="fieldsync-fuzz-")
        db = str(Path(self.tmp.name) / "fieldsync.db")
        cli = [sys.executable, "-c", "from server.cli import main; main()", "--db", db]
        subprocess.run([*cli, "init"], check=True, capture_output=True)
        subprocess.run([*cli, "user", "add", "fuzz", "--role", "health_worker",
                        "--area", "QN.LM.03"], input=PASSWORD + "\n", text=True,
                       check=True, capture_output=True)
        self.app = create_app({"DB": db})  # not TESTING: errors render as in production
        self.client = self.app.test_client()
        r = self.client.post("/api/v1/auth/login", json={
            "username": "fuzz", "password": PASSWORD, "device_id": "fuzz-dev",
            "app_version": "fuzz"})
        self.headers = {"Authorization": "Bearer " + r.get_json()["token"]}

    def push(self, data: bytes):
        headers = {**self.headers, "Content-Type": "application/json"}
        body = data[1:]
        if data[:1] and data[0] % 2:
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body, compresslevel=1)
        check(self.client.post("/api/v1/sync/push", data=body, headers=headers))

    def pull(self, data: bytes):
        query = data.decode("utf-8", "replace")
        check(self.client.get("/api/v1/sync/pull?" + query, headers=self.headers))


def client(data: bytes):
    import requests

    from client_sync.errors import FieldsyncError
    from client_sync.transport import Transport
    response = requests.Response()
    response.status_code = STATUSES[data[0] % len(STATUSES)] if data else 200
    response._content = data[1:]
    response.reason = "fuzz"
    try:
        body = Transport("http://fuzz.invalid")._decode(response)
    except FieldsyncError:
        return
    if not isinstance(body, dict) or response.status_code != 200:
        raise Finding(f"_decode returned {type(body).__name__} for {response.status_code}")


def runner(target: str):
    """fn(bytes) for `target`; the app is built once per process."""
    if target in ("client", "sync"):
        return globals()[target]
    app = App()
    return getattr(app, target)


# -- sync: the device's whole sync against a server answering anything ------------

HLC = "2026-11-29T10:00:00.000Z-0000-server"
SYNC_STATUSES = ("applied", "unchanged", "conflict", "rejected", "forbidden", "bogus")
FINAL = {"applied", "unchanged", "conflict"}


class _Script:
    """Answers made from the input's bytes, one per request, then no connection."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0
        self.answered = {}  # record id -> statuses the script answered for it

    def byte(self):
        if self.at >= len(self.data):
            return None
        self.at += 1
        return self.data[self.at - 1]

    def pick(self, options):
        b = self.byte()
        return options[0] if b is None else options[b % len(options)]

    def answer(self, path, ids):
        kind = self.byte()
        if kind is None:
            return None
        status = self.pick((200, 200, 200, 304, 400, 401, 409, 413, 500, 503))
        if kind % 4 == 0:  # raw bytes
            n = self.byte() or 0
            body = self.data[self.at:self.at + n]
            self.at += n
            return status, body
        if path == "/api/v1/":
            body = {"version": "x", "server_time": "2026-11-29T10:00:00Z", "hlc": HLC,
                    "limits": {"max_records_per_batch": self.pick((1, 2, 1000, 0, -1, "x")),
                               "max_batch_bytes": self.pick((16 << 20, 10, 0)),
                               "pull_limit_default": self.pick((500, 1, 0, None))}}
        elif path == "/api/v1/forms":
            body = {"forms": self.pick(([], None, "x", [1]))}
        elif path == "/api/v1/sync/push":
            results = []
            for _ in range(self.pick((0, 1, 2, 3))):
                rid = self.pick([*ids, "x", None, 1])
                result = {"id": rid, "status": self.pick(SYNC_STATUSES)}
                extra = self.pick((None, "errors", "record", "bad"))
                if extra == "errors":
                    result["errors"] = self.pick(({"f": ["no"]}, "x", [1]))
                elif extra == "record":
                    result["record"] = self.pick(({}, "x", {"id": rid, "data": {}}))
                elif extra == "bad":
                    result = self.pick(("x", 1, None, [result]))
                results.append(result)
            body = {"results": self.pick((results, results, "x", None)), "hlc": HLC,
                    "skew": self.pick(({"seconds": 0, "restamped": 0}, "x", {"seconds": "x"}))}
            if status == 200 and isinstance(body["results"], list):
                for r in body["results"]:
                    if isinstance(r, dict) and isinstance(r.get("id"), str):
                        self.answered.setdefault(r["id"], set()).add(r.get("status"))
        elif path == "/api/v1/sync/pull":
            body = {"records": self.pick(([], "x", [1], [{"id": "x"}])),
                    "cursor": self.pick(("c1", None, 1)), "more": self.pick((False, True, "x")),
                    "hlc": HLC}
        else:
            body = {}
        return status, json.dumps(body).encode()


def sync(data: bytes):
    """A logged-in device with two queued records syncs against answers made
    from `data`. It may finish or fail, but only with the library's own
    errors, and no record may be lost: each is still on the device, and
    still queued unless the server answered it `applied`, `unchanged` or
    `conflict`."""
    import requests

    from client_sync import Client
    from client_sync import client as client_module
    from client_sync.errors import FieldsyncError, ServerUnreachable
    from client_sync.transport import Transport

    script, ids = None, []

    class Scripted(Transport):
        def _send(self, method, path, *, auth=True, **kwargs):
            if script is None:  # the login: a server that works
                body = {"/api/v1/": {"version": "x", "server_time": "2026-11-29T10:00:00Z",
                                     "hlc": HLC, "limits": {}},
                        "/api/v1/auth/login": {"token": "t", "hlc": HLC, "user": {
                            "username": "hw", "role": "health_worker",
                            "areas": ["QN.LM.03"]}},
                        "/api/v1/forms": {"forms": []}}[path]
                status, raw = 200, json.dumps(body).encode()
            else:
                made = script.answer(path, ids)
                if made is None:
                    raise ServerUnreachable("the script has no more answers")
                status, raw = made
            response = requests.Response()
            response.status_code, response._content, response.reason = status, raw, "fuzz"
            return response

    real = client_module.Transport
    client_module.Transport = Scripted
    try:
        with tempfile.TemporaryDirectory(prefix="fieldsync-fuzz-sync-") as home:
            device = Client(Path(home))
            try:
                device.login("http://fuzz.invalid", "hw", "x")
                for i in range(2):
                    ids.append(device.add("household", {
                        "head_name": f"Hộ {i}", "poverty_status": "poor",
                        "registered_on": "2025-05-30", "status": "active"}))
                script = _Script(data)
                try:
                    device.sync()
                except FieldsyncError:
                    pass
                for rid in ids:
                    if device.get(rid) is None:
                        raise Finding(f"record {rid} vanished from the device")
                    queued = device.store.conn.execute(
                        "SELECT 1 FROM outbox WHERE record_id = ?", (rid,)).fetchone()
                    if not queued and not script.answered.get(rid, set()) & FINAL:
                        raise Finding(f"record {rid} left the queue without a final answer "
                                      f"(answered {script.answered.get(rid)})")
            finally:
                device.close()
    finally:
        client_module.Transport = real

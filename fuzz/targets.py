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
  body. It returns a dict (or None for 304) or raises one of the library's
  own errors, never anything else.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("push", "pull", "client")
STATUSES = (200, 201, 304, 400, 401, 403, 404, 409, 413, 415, 429, 500, 502, 503)
PASSWORD = "fuzz-pass-123"


class Finding(AssertionError):
    """The input broke a rule above."""


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


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

    def check(self, resp):
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

    def push(self, data: bytes):
        headers = {**self.headers, "Content-Type": "application/json"}
        body = data[1:]
        if data[:1] and data[0] % 2:
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body, compresslevel=1)
        self.check(self.client.post("/api/v1/sync/push", data=body, headers=headers))

    def pull(self, data: bytes):
        query = data.decode("utf-8", "replace")
        self.check(self.client.get("/api/v1/sync/pull?" + query, headers=self.headers))


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
    if not (isinstance(body, dict) or (body is None and response.status_code == 304)):
        raise Finding(f"_decode returned {type(body).__name__} for {response.status_code}")


def runner(target: str):
    """fn(bytes) for `target`; the app is built once per process."""
    if target == "client":
        return client
    app = App()
    return getattr(app, target)

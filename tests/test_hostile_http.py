"""Hostile input against the real server process (issue 14, items 3 and 5):
deep JSON, broken chunked framing, control characters in the path (the
access log) and Retry-After on a 503. Each answer is a 4xx or 503 in the
JSON error shape, never a 500, and changes nothing."""
import json
import socket
import sqlite3
import uuid

import pytest
import requests

from conftest import (ServerProcess, batch, change, copy_db, free_port, hlc_at, household,
                      now_ms)

PUSH = "/api/v1/sync/push"
LOGIN = "/api/v1/auth/login"
RESOLVE = "/api/v1/conflicts/1/resolve"


@pytest.fixture(scope="module")
def live(tmp_path_factory, template_db):
    """One real server for the tests that leave it as it was."""
    folder = tmp_path_factory.mktemp("hostile")
    srv = ServerProcess(db=copy_db(template_db, folder / "fieldsync.db"), port=free_port(),
                        log=folder / "server.log").start()
    yield srv
    srv.stop()


def _records(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        conn.close()


def _raw(port, request):
    """Send raw bytes; (status, head, decoded JSON body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), json.loads(body)


def _nested(depth):
    """JSON text of a value `depth` objects and lists deep (the stdlib's
    encoder could not write it)."""
    text = '"x"'
    for i in range(depth):
        text = '{"n":' + text + "}" if i % 2 else "[" + text + "]"
    return text


def _with_deep(obj, depth):
    """JSON text of `obj`, its "__deep__" string replaced by `_nested(depth)`."""
    return json.dumps(obj).replace('"__deep__"', _nested(depth))


@pytest.mark.parametrize("depth", [300, 1000])
def test_a_change_nested_a_thousand_deep_is_a_400(live, depth):
    """orjson decodes up to 1,024 levels but encodes only 254; the canonical
    hash then fell back to the stdlib encoder: a RecursionError near 1,000."""
    srv = live
    headers = {"Authorization": "Bearer " + srv.login("hw", "deep-dev")}
    rid = str(uuid.uuid4())
    body = batch("deep-dev", [change(household(head_name="__deep__"), record_id=rid,
                                     hlc=hlc_at(now_ms(), "deep-dev"))])
    before = _records(srv.db)
    resp = requests.post(srv.url + PUSH, data=_with_deep(body, depth), headers={
        **headers, "Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 400, resp.text[:300]
    answer = resp.json()
    assert answer["error"] == "invalid_json" and "128 levels" in answer["message"]
    assert _records(srv.db) == before
    # The server is fine, and the same device's next, ordinary push is stored.
    ok = batch("deep-dev", [change(household(), record_id=rid, hlc=hlc_at(now_ms(), "deep-dev"))])
    resp = requests.post(srv.url + PUSH, json=ok, headers=headers, timeout=10)
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "applied"


@pytest.mark.parametrize("path", [LOGIN, RESOLVE])
def test_deep_json_on_login_and_resolve_is_a_4xx(live, path):
    srv = live
    headers = {"Content-Type": "application/json"}
    if path == RESOLVE:
        headers["Authorization"] = "Bearer " + srv.login("sup", "deep-sup")
    resp = requests.post(srv.url + path, data=_with_deep({"value": "__deep__"}, 1000),
                         headers=headers, timeout=10)
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert set(resp.json()) == {"error", "message", "details"}


#: Chunked bodies whose framing is wrong, each differently.
BAD_FRAMINGS = {
    "size_not_hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "data_longer_than_size": b"2\r\n{\"a\": 1}\r\n0\r\n\r\n",
    "size_with_garbage": b"2 junk\x00\r\n{}\r\n0\r\n\r\n",
    "negative_size": b"-2\r\n{}\r\n0\r\n\r\n",
    "hex_prefix": b"0x2\r\n{}\r\n0\r\n\r\n",
    "no_crlf_after_data": b"2\r\n{}XX\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("framing", sorted(BAD_FRAMINGS))
@pytest.mark.parametrize("path", [PUSH, LOGIN, RESOLVE])
def test_bad_chunked_framing_is_a_400_in_json(live, path, framing):
    srv = live
    token = srv.login("sup", "chunk-dev") if path != LOGIN else None
    head = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
            "Transfer-Encoding: chunked", "Connection: close"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    before = _records(srv.db)
    status, raw_head, body = _raw(srv.port, ("\r\n".join(head) + "\r\n\r\n").encode()
                                  + BAD_FRAMINGS[framing])
    assert status == 400, (raw_head, body)
    assert "application/json" in raw_head.lower()
    assert body["error"] == "bad_http_request" and body["details"] == {}
    assert _records(srv.db) == before
    assert requests.get(srv.url + "/api/v1/", timeout=5).status_code == 200


def test_good_chunked_bodies_still_work(live):
    """Chunked framing itself is fine: a chunked sign-in and push are served."""
    srv = live
    login = json.dumps({"username": "hw", "password": "hw-pass-123",
                        "device_id": "chunky", "app_version": "t"}).encode()

    def chunks(data):
        yield from (data[i:i + 7] for i in range(0, len(data), 7))

    resp = requests.post(srv.url + LOGIN, data=chunks(login),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200, resp.text
    body = json.dumps(batch("chunky", [change(household(), hlc=hlc_at(now_ms(), "chunky"))]))
    resp = requests.post(srv.url + PUSH, data=chunks(body.encode()), timeout=10, headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + resp.json()["token"]})
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "applied"


def test_a_newline_in_the_path_cannot_forge_an_access_log_line(server_process):
    srv = server_process
    forged = ('/api/v1/x%0a[04/Dec/2026:10:00:00%20+0000]%20%22GET%20/api/v1/admin%22'
              '%20200%201%201ms%0d%0aFORGED%22')
    status, _, _ = _raw(srv.port, f"GET {forged} HTTP/1.1\r\nHost: x\r\nConnection: close"
                                  "\r\n\r\n".encode())
    assert status == 404
    srv.stop()
    lines = srv.log.read_text(encoding="utf-8", errors="replace").splitlines()
    mine = [line for line in lines if "FORGED" in line or "/api/v1/admin" in line]
    assert len(mine) == 1, mine
    assert mine[0].startswith("[") and '" 404 ' in mine[0]
    assert "\\x0a" in mine[0] and "\\x0d" in mine[0] and '\\"' in mine[0]


@pytest.fixture
def slow_to_lock_server(db_path, tmp_path, monkeypatch):
    """The real server with FIELDSYNC_RETRY_AFTER_SECONDS=17 and a short busy timeout."""
    monkeypatch.setenv("FIELDSYNC_RETRY_AFTER_SECONDS", "17")
    monkeypatch.setenv("FIELDSYNC_BUSY_TIMEOUT_MS", "200")
    server = ServerProcess(db=db_path, port=free_port(), log=tmp_path / "server.log").start()
    yield server
    server.stop()


def test_retry_after_follows_the_setting_on_every_503(slow_to_lock_server):
    srv = slow_to_lock_server
    token = srv.login("hw", "busy-dev")
    body = batch("busy-dev", [change(household(), hlc=hlc_at(now_ms(), "busy-dev"))])
    holder = sqlite3.connect(srv.db, timeout=5, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else
    try:
        # A sign-in writes its token: the app's 503 handler (server/errors.py).
        login = requests.post(srv.url + LOGIN, json={
            "username": "hw", "password": "hw-pass-123", "device_id": "busy-dev-2",
            "app_version": "t"}, timeout=10)
        # A push: its own 503 (server/api/sync.py).
        push = requests.post(srv.url + PUSH, json=body, timeout=10,
                             headers={"Authorization": "Bearer " + token})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for resp in (login, push):
        assert resp.status_code == 503, resp.text[:300]
        assert resp.headers["Retry-After"] == "17"
        assert resp.json()["details"] == {"retry_after": 17}
    assert requests.post(srv.url + PUSH, json=body, timeout=10, headers={
        "Authorization": "Bearer " + token}).status_code == 200

"""Slow clients cannot starve the real server (issue 14, item 1).

`fieldsync-server serve` (2 workers) on a real SQLite file, while 40
unauthenticated connections trickle a request body a byte at a time and 12
devices upload real pushes a few bytes at a time, as over a bad 2G link.
Meanwhile an ordinary device signs in, pushes 500 records and pulls; each of
its requests must be answered within the issue's 2 s (TARGET_S; the requests
themselves wait up to LIVENESS_S, so that a slow answer fails with its
measured time rather than a timeout). Measured on the shared 2-core machine
at load 4-13, eleven runs: sign-in 172-653 ms (argon2id, bound by the CPU
the machine has left), push 89-256 ms, pull 11-135 ms. Then the 12 slow uploads
finish, and each of their records is on the server exactly once.

With gunicorn's gthread workers (2 × 4 threads, each held by one slow body)
the ordinary device's sign-in timed out: every thread was waiting on a body.
"""
import json
import socket
import sqlite3
import threading
import time
import uuid

import requests

from conftest import batch, change, hlc_at, household, now_ms

TRICKLERS = 40
SLOW_DEVICES = 12
SLOW_RECORDS = 8       # per slow device: a batch of ~2.5 KB
SLOW_PIECE = 40        # bytes per send
PACE_S = 0.1           # between sends: ~400 B/s, a bad 2G link
LIVENESS_S = 10
TARGET_S = 2.0        # issue 14: "each answer in under 2 s"


def _raw_head(port, path, length, token=None):
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", f"Content-Length: {length}",
             "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock):
    """(status, decoded JSON body) of one HTTP/1.1 answer on `sock`."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


class SlowUpload(threading.Thread):
    """A real push, sent SLOW_PIECE bytes at a time, then its answer read."""

    def __init__(self, port, token, device_id, started, stop):
        super().__init__(daemon=True)
        self.port, self.token, self.device_id = port, token, device_id
        self.started, self.stop = started, stop
        self.ids = [str(uuid.uuid4()) for _ in range(SLOW_RECORDS)]
        records = [change(household(head_name=f"Slow {i}"), record_id=rid,
                          hlc=hlc_at(now_ms(), device_id, i)) for i, rid in enumerate(self.ids)]
        self.body = json.dumps(batch(device_id, records)).encode()
        self.status = self.answer = self.error = None
        self.seconds = None

    def run(self):
        began = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                sock.sendall(_raw_head(self.port, "/api/v1/sync/push", len(self.body),
                                       self.token))
                for at in range(0, len(self.body), SLOW_PIECE):
                    sock.sendall(self.body[at:at + SLOW_PIECE])
                    if at == 0:
                        self.started.release()
                    self.stop.wait(PACE_S)  # pacing the link, not synchronising
                self.status, self.answer = _read_answer(sock)
        except Exception as exc:  # reported by the test, never swallowed
            self.error = repr(exc)
        self.seconds = time.monotonic() - began


def _trickle(port, socks, started, stop):
    """TRICKLERS unauthenticated sign-ins, each announcing a 100 kB body and
    sending it one byte per connection per PACE_S, until `stop`."""
    for _ in range(TRICKLERS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(_raw_head(port, "/api/v1/auth/login", 100_000) + b"{")
        socks.append(sock)
        started.release()
    while not stop.wait(PACE_S):
        for sock in socks:
            try:
                sock.sendall(b" ")
            except OSError:
                pass  # closed by the server: fine, it owes a trickler nothing


def test_trickling_connections_and_slow_uploads_do_not_starve_the_server(server_process,
                                                                           capsys):
    srv = server_process
    tokens = [srv.login("hw", f"slow-{i:02d}") for i in range(SLOW_DEVICES)]
    normal_token = srv.login("hw", "normal-dev")  # signs in again under attack below
    started, stop = threading.Semaphore(0), threading.Event()
    trickle_socks = []
    trickler = threading.Thread(target=_trickle, daemon=True,
                                args=(srv.port, trickle_socks, started, stop))
    uploads = [SlowUpload(srv.port, token, f"slow-{i:02d}", started, stop)
               for i, token in enumerate(tokens)]
    trickler.start()
    for up in uploads:
        up.start()
    try:
        # Every slow connection has sent its head and the start of its body.
        for _ in range(TRICKLERS + SLOW_DEVICES):
            assert started.acquire(timeout=30), "the slow clients could not connect"
        times = {}
        began = time.monotonic()
        normal_token = srv.login("hw", "normal-dev")
        times["login"] = time.monotonic() - began
        ids = [str(uuid.uuid4()) for _ in range(500)]
        body = batch("normal-dev", [change(household(), record_id=rid,
                                           hlc=hlc_at(now_ms(), "normal-dev", i))
                                    for i, rid in enumerate(ids)])
        headers = {"Authorization": "Bearer " + normal_token}
        began = time.monotonic()
        resp = requests.post(srv.url + "/api/v1/sync/push", json=body, headers=headers,
                             timeout=LIVENESS_S)
        times["push_500"] = time.monotonic() - began
        assert resp.status_code == 200, resp.text[:300]
        assert {r["status"] for r in resp.json()["results"]} == {"applied"}
        began = time.monotonic()
        resp = requests.get(srv.url + "/api/v1/sync/pull", params={"limit": 5000},
                            headers=headers, timeout=LIVENESS_S)
        times["pull"] = time.monotonic() - began
        assert resp.status_code == 200, resp.text[:300]
        assert set(ids) <= {r["id"] for r in resp.json()["records"]}
        in_flight = sum(up.status is None for up in uploads)
    finally:
        stop.set()  # the tricklers stop; the slow uploads send the rest at once
    for up in uploads:
        up.join(60)
    for sock in trickle_socks:
        sock.close()
    with capsys.disabled():
        print(f"\nunder {TRICKLERS} trickling connections and {SLOW_DEVICES} slow uploads "
              f"({in_flight} still uploading at the end): " + ", ".join(
                  f"{k} {v * 1000:.0f} ms" for k, v in times.items())
              + f"; slow uploads took {min(u.seconds for u in uploads):.1f}-"
              f"{max(u.seconds for u in uploads):.1f} s")
    # The slow uploads were still under way while the normal device was served.
    assert in_flight > 0
    assert max(times.values()) < TARGET_S, times
    for up in uploads:
        assert up.error is None and up.status == 200, (up.device_id, up.error, up.status,
                                                       up.answer)
        assert [r["status"] for r in up.answer["results"]] == ["applied"] * SLOW_RECORDS
    conn = sqlite3.connect(srv.db)
    try:
        slow_ids = [rid for up in uploads for rid in up.ids]
        marks = ",".join("?" * len(slow_ids))
        rows = conn.execute(f"SELECT id, count(*) FROM records WHERE id IN ({marks}) "
                            "GROUP BY id", slow_ids).fetchall()
    finally:
        conn.close()
    assert sorted(rows) == sorted((rid, 1) for rid in slow_ids)

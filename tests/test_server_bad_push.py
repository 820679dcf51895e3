"""A bad push costs the server little (issue 14, item 2): capped error lists,
an answer stored once, bounded answer, database growth and worker memory."""
import gzip
import json
import os
import sqlite3

import pytest
import requests

from client_sync import Client, NetworkConfig, describe_errors
from client_sync.store import uuid7
from conftest import batch, change, hlc_at, household, now_ms
from server.rejections import MAX_ERRORS, MAX_KEY_CHARS, MAX_MESSAGE_CHARS, cap_errors

# The bounds the README states for one batch (section "A bad push").
RESULT_BYTES = MAX_ERRORS * (MAX_KEY_CHARS + MAX_MESSAGE_CHARS + 8) + 200
WORKER_GROWTH_BYTES = 256 * 1024 * 1024
DB_GROWTH_BYTES = 1024 * 1024


def _processes(pid):
    """`pid` and every process below it (the server's workers)."""
    out = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                out += _processes(int(child))
    return out


def _status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _db_bytes(path):
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


def test_push_of_10000_unknown_fields_per_change_is_bounded(server_process):
    token = server_process.login("hw", "dev-bad")
    t = now_ms()
    unknown = {f"x{i}": 0 for i in range(10_000)}
    records = [change({**household(), **unknown}, hlc=hlc_at(t, "dev-bad", k))
               for k in range(120)]
    body = gzip.compress(json.dumps(batch("dev-bad", records), separators=(",", ":")).encode())
    assert len(body) < 3_000_000  # the review's 2.7 MB gzip batch
    # One request first, so that every worker has loaded the app.
    for _ in range(4):
        requests.get(server_process.url + "/api/v1/", timeout=10)
    pids = _processes(server_process.proc.pid)
    rss_before = {pid: _status(pid, "VmRSS") for pid in pids}
    db_before = _db_bytes(server_process.db)

    resp = requests.post(server_process.url + "/api/v1/sync/push", data=body, timeout=120,
                         headers={"Authorization": "Bearer " + token,
                                  "Content-Type": "application/json",
                                  "Content-Encoding": "gzip"})

    assert resp.status_code == 200, resp.text[:500]
    answer = resp.json()
    assert len(answer["results"]) == 120
    for result in answer["results"]:
        assert result["status"] == "rejected" and result["code"] == "invalid"
        # The first errors, by field, in the shape devices read; the rest counted.
        assert list(result["errors"]) == [f"x{i}" for i in range(MAX_ERRORS)]
        assert result["errors"]["x0"] == ["unknown field"]
        assert result["errors_omitted"] == 10_000 - MAX_ERRORS
    assert len(resp.content) <= 120 * RESULT_BYTES           # was 31 MB
    growth = _db_bytes(server_process.db) - db_before
    assert growth <= DB_GROWTH_BYTES                         # was +124 MB
    worker_growth = max(_status(pid, "VmHWM") - rss_before[pid] for pid in pids)
    assert worker_growth <= WORKER_GROWTH_BYTES              # was +411 MB here
    # The answer is stored once: a rejection points to its batch.
    conn = sqlite3.connect(server_process.db)
    try:
        cols = {row[1] for row in conn.execute("PRAGMA table_info(rejections)")}
        assert "errors" not in cols
        rows = conn.execute("SELECT DISTINCT batch_id, status, code FROM rejections WHERE "
                            "device_id = 'dev-bad'").fetchall()
        stored = conn.execute("SELECT length(response) FROM batches WHERE device_id = "
                              "'dev-bad'").fetchall()
    finally:
        conn.close()
    assert rows == [(json.loads(gzip.decompress(body))["batch_id"], "rejected", "invalid")]
    assert stored == [(len(resp.content),)]


def test_a_device_reads_a_capped_error_list_by_field(server_process, tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))
    device = Client(tmp_path / "d", NetworkConfig(give_up_after=5, backoff_factor=0,
                                                 backoff_jitter=0))
    try:
        creds = server_process.users["hw"]
        device.login(server_process.url, creds["username"], creds["password"])
        # An older app version saved what the server refuses (bypassing validation).
        bad = uuid7()
        extra = {f"old_field_{i:02}": "x" for i in range(50)}
        device.store.local_change(bad, user="hw", data={**household(), **extra},
                                  create={"form": "household", "form_version": 1,
                                          "area": "QN.LM.03"})
        report = device.sync()
        assert report.complete and report.rejected == 1
        problem = next(p for p in device.status()["problems"] if p["id"] == bad)
        assert problem["sync_state"] == "rejected"
        assert sorted(problem["errors"]) == sorted(extra)[:MAX_ERRORS]
        assert "old_field_00: unknown field" in describe_errors(problem["errors"])
        assert device.sync().pushed == 0  # held, as any rejected record
    finally:
        device.close()


def test_cap_errors_keeps_the_first_messages_in_their_shape():
    errors = {"a": ["one", "two"], "baby": {"0": {"x": ["bad"], "y": ["bad"]},
                                            "1": {"z": ["bad"]}}, "k" * 500: ["m" * 900]}
    assert cap_errors(errors, 3) == ({"a": ["one", "two"], "baby": {"0": {"x": ["bad"]}}}, 3)
    capped, omitted = cap_errors(errors, 10)
    assert omitted == 0 and capped["baby"] == errors["baby"]
    [(key, [message])] = [(k, v) for k, v in capped.items() if k.startswith("k")]
    assert len(key) == MAX_KEY_CHARS and len(message) == MAX_MESSAGE_CHARS


@pytest.mark.parametrize("most", [0, 1, 5])
def test_cap_errors_counts_every_message_it_leaves_out(most):
    errors = {f"f{i}": ["a", "b"] for i in range(7)}
    capped, omitted = cap_errors(errors, most)
    kept = sum(len(v) for v in capped.values())
    assert kept == most and kept + omitted == 14

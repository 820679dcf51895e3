"""Sync under faults, against the real server process: connections cut mid-push
and mid-pull, answers lost after the server committed, the client killed with
SIGKILL mid-sync, device clocks a year ahead or back in 2000. Nothing lost,
nothing doubled, clocks never go backwards."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine

from client_sync import Client, NetworkConfig, SyncError
from client_sync.store import Store
from faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
PUSH, PULL = b"POST /api/v1/sync/push", b"GET /api/v1/sync/pull"
FAST = NetworkConfig(give_up_after=5, connect_timeout=1, read_timeout=5, backoff_factor=0,
                     backoff_jitter=0)
IMPATIENT = NetworkConfig(give_up_after=1.5, connect_timeout=0.5, read_timeout=1,
                          backoff_factor=0.05, backoff_jitter=0)


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))


@pytest.fixture
def proxy(server_process):
    p = FaultProxy(server_process.port).start()
    yield p
    p.stop()


def household(i=0, **extra):
    return {"head_name": f"Hộ gia đình {i}", "poverty_status": "near_poor",
            "registered_on": "2025-04-01", "status": "active", **extra}


def login(path, url, network=FAST, user="hw", password="hw-pass-123"):
    client = Client(path, network)
    client.login(url, user, password)
    return client


def server_query(server, sql, *args):
    con = sqlite3.connect(server.db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def server_data(server):
    return {rid: json.loads(data) for rid, data in server_query(server, "SELECT id, data FROM records")}


def local_data(client):
    return {r["id"]: r["data"] for r in client.list()}


def test_push_cut_mid_upload_is_retried_within_the_sync(server_process, proxy, tmp_path):
    d = login(tmp_path / "d", proxy.url)
    ids = [d.add("household", household(i)) for i in range(20)]
    proxy.add("cut_request", PUSH, after=300, count=2)
    report = d.sync()
    assert proxy.stats["cut_request"] == 2
    assert report.complete and report.applied == 20
    assert set(server_data(server_process)) == set(ids)


def test_reply_dropped_after_commit_is_not_doubled(server_process, proxy, tmp_path):
    d = login(tmp_path / "d", proxy.url)
    ids = [d.add("household", household(i)) for i in range(20)]
    seq_before = server_query(server_process, "SELECT COALESCE(MAX(seq), 0) FROM records")[0][0]
    proxy.add("drop_response", PUSH, count=1)
    report = d.sync()
    assert proxy.stats["drop_response"] == 1
    # The retry carried the same batch id and bytes: the server replayed its answer.
    assert report.complete and report.applied == 20 and report.unchanged == 0
    assert set(server_data(server_process)) == set(ids)
    assert server_query(server_process, "SELECT COUNT(*) FROM batches")[0][0] == 1
    assert server_query(server_process, "SELECT MAX(seq) FROM records")[0][0] == seq_before + 20
    assert server_query(server_process, "SELECT COUNT(*) FROM conflicts")[0][0] == 0


def test_gave_up_sync_resends_the_same_batch_next_time(server_process, proxy, tmp_path):
    d = login(tmp_path / "d", proxy.url, network=IMPATIENT)
    ids = [d.add("household", household(i)) for i in range(10)]
    proxy.add("drop_response", PUSH, count=1000)
    with pytest.raises(SyncError) as info:
        d.sync()
    assert not info.value.report.complete and info.value.report.pushed == 0
    batch_id, body, count = d.store.pending_batch()
    # The server committed it, but the device cannot know: all stays queued.
    assert set(server_data(server_process)) == set(ids)
    assert {r["sync_state"] for r in d.list()} == {"sent"} and d.status()["pending"] == 10
    d.add("household", household(99))  # new work meanwhile goes to a later batch
    d.close()
    proxy.rules.clear()
    d = Client(tmp_path / "d", FAST)
    assert d.store.pending_batch() == (batch_id, body, count)
    report = d.sync()
    assert report.complete and report.applied == 11
    assert [r[0] for r in server_query(server_process, "SELECT batch_id FROM batches ORDER BY created_at")][0] == batch_id
    assert server_query(server_process, "SELECT COUNT(*) FROM batches")[0][0] == 2
    assert d.status()["pending"] == 0 and len(server_data(server_process)) == 11


@pytest.mark.parametrize("mode", ["drop_response", "cut_response"])
def test_pull_cut_mid_page_then_retry(server_process, proxy, tmp_path, mode):
    writer = login(tmp_path / "w", server_process.url)
    for i in range(30):
        writer.add("household", household(i))
    writer.sync()
    reader = login(tmp_path / "r", proxy.url, network=IMPATIENT)
    reader.store.set_meta(batch_size=5)
    proxy.add(mode, PULL, after=200, count=1000)
    with pytest.raises(SyncError):
        reader.sync()
    assert reader.store.get_meta("cursor") is None and list(reader.list()) == []
    proxy.rules.clear()
    proxy.add(mode, PULL, after=200, count=1)  # one more cut, retried inside the sync
    report = reader.sync()
    assert report.complete and report.pulled == 30
    assert local_data(reader) == server_data(server_process)


def test_random_faults_converge_without_loss_or_doubles(server_process, tmp_path):
    proxy = FaultProxy(server_process.port, p_drop=0.25, p_cut=0.15, seed=7,
                       match=b"").start()
    try:
        devices = [login(tmp_path / f"d{n}", proxy.url) for n in range(3)]
        rng = random.Random(3)
        for round_ in range(4):
            for n, d in enumerate(devices):
                for i in range(8):
                    d.add("household", household(f"{n}-{round_}-{i}"))
                known = list(local_data(d))
                for rid in rng.sample(known, min(3, len(known))):
                    d.edit(rid, {"address_detail": f"edit {n} {round_}"})
                try:
                    d.sync()
                except SyncError:
                    pass  # a fault got through every retry: it will go next time
        proxy.p_drop = proxy.p_cut = 0
        for _ in range(2):
            for d in devices:
                assert d.sync().complete
        server = server_data(server_process)
        assert len(server) == 3 * 4 * 8
        for d in devices:
            assert local_data(d) == server
            assert d.status()["pending"] == 0
        assert proxy.stats["drop_response"] + proxy.stats["cut_request"] > 0
    finally:
        proxy.stop()


# -- the client killed mid-sync ------------------------------------------------------

WORKER = r"""
import sys
from client_sync import Client, NetworkConfig, SyncError
data_dir, start = sys.argv[1], int(sys.argv[2])
client = Client(data_dir, NetworkConfig(give_up_after=3, backoff_factor=0))
for i in range(start, start + 1000):
    rid = client.add("household", {"head_name": f"Killed {i}", "poverty_status": "poor",
                                   "registered_on": "2025-04-01", "status": "active"})
    print(rid, flush=True)  # printed only after the add committed
    if i % 3 == 0:
        client.edit(rid, {"address_detail": f"edited {i}"})
    if i % 4 == 0:
        try:
            client.sync()
        except SyncError:
            pass
"""


def test_client_killed_at_random_points_loses_and_doubles_nothing(server_process, tmp_path):
    data_dir = tmp_path / "killed"
    login(data_dir, server_process.url).close()
    rng = random.Random(int(os.environ.get("KILL_SEED", "11")))
    saved, start, mid_push = [], 0, 0
    for _ in range(int(os.environ.get("KILLS", "8"))):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), str(start)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        first = proc.stdout.readline()  # started: now kill it at a random point
        time.sleep(rng.uniform(0.0, 1.0))
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        saved += (first + out).decode().split()
        start += 1000
        probe = Store(data_dir / "device.db")
        mid_push += probe.pending_batch() is not None
        probe.close()
    assert len(saved) > 10
    print(f"{len(saved)} records saved, {mid_push} kills left a batch unanswered")
    store = Store(data_dir / "device.db")
    assert store.integrity_check() == "ok"
    store.close()
    d = Client(data_dir, FAST)
    assert d.sync().complete
    local, server = local_data(d), server_data(server_process)
    assert set(saved) <= set(local)  # every add the worker saw committed survived
    assert local == server  # exactly the same records and values on both sides
    assert d.status()["pending"] == 0
    assert server_query(server_process, "SELECT COUNT(*) FROM conflicts")[0][0] == 0


# -- device clocks ---------------------------------------------------------------------


def test_clock_a_year_ahead_is_restamped_adopted_and_warned(server_process, tmp_path):
    ahead = datetime.now(timezone.utc) + timedelta(days=365)
    with time_machine.travel(ahead, tick=True):
        d = login(tmp_path / "ahead", server_process.url)
        rid = d.add("household", household(1))
        future = d.store.state(rid)["fields"]["head_name"]["hlc"]
        report = d.sync()
        assert report.restamped >= 4 and report.skew > 364 * 86400
        adopted = d.store.state(rid)["fields"]["head_name"]
        server_clock = json.loads(server_query(server_process, "SELECT state FROM records WHERE id = ?",
                                               rid)[0][0])["fields"]["head_name"]["hlc"]
        assert adopted["hlc"] == server_clock < future
        assert d.status()["skew_warning"] and "ahead" in d.status()["skew_warning"]
        assert d.sync().pushed == 0  # adopted: nothing left to resend
    # A correct device edits later and wins, despite the year-ahead original clock.
    other = login(tmp_path / "right", server_process.url)
    other.sync()
    other.edit(rid, {"head_name": "Fixed by a correct clock"})
    other.sync()
    with time_machine.travel(ahead, tick=True):
        d.sync()
    assert d.get(rid)["data"]["head_name"] == "Fixed by a correct clock"


def test_clock_set_back_to_2000_still_moves_forward(server_process, tmp_path):
    d = login(tmp_path / "back", server_process.url)
    first = d.add("household", household(1))
    d.sync()
    last_contact = d.store.hlc
    with time_machine.travel(datetime(2000, 1, 1, tzinfo=timezone.utc), tick=True):
        rid = d.add("household", household(2, registered_on="1999-12-01"))
        clock = d.store.state(rid)["fields"]["head_name"]["hlc"]
        assert clock > last_contact  # from the last server contact, not from 2000
        d.edit(first, {"head_name": "Edited in 2000"})
        report = d.sync()
        assert report.complete and report.applied == 2 and report.skew < -20 * 365 * 86400
        assert "behind" in d.status()["skew_warning"]
    assert server_data(server_process)[first]["head_name"] == "Edited in 2000"

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
from conftest import wait_until
from faultproxy import FaultProxy
from server.storage import decode_state

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


@pytest.mark.parametrize("k", [1, 200])
def test_push_cut_mid_upload_is_retried_within_the_sync(server_process, proxy, tmp_path, k):
    """Cut `k` bytes into the push's body (after its headers, whatever their
    length: issue 18 found a fixed 300-byte cut that never reached the body)."""
    d = login(tmp_path / "d", proxy.url)
    ids = [d.add("household", household(i)) for i in range(20)]
    proxy.add("cut_body", PUSH, after=k, count=2)
    report = d.sync()
    assert proxy.stats["cut_body"] == 2
    # Both cuts fell inside the body: some of it sent, not all.
    assert [sent for _, _, sent in proxy.body_cuts] == [k, k]
    assert all(0 < sent < length for _, length, sent in proxy.body_cuts), proxy.body_cuts
    assert report.complete and report.applied == 20
    assert set(server_data(server_process)) == set(ids)
    # The cut uploads stored nothing: one batch, applied once.
    assert server_query(server_process, "SELECT COUNT(*) FROM batches")[0][0] == 1
    assert server_query(server_process, "SELECT COUNT(*) FROM audit WHERE action = 'push'"
                        )[0][0] == 1
    # And they never reached the app: waitress waits for a whole body, so
    # the access log (a line once each answer is sent) has the one push.
    def pushes():
        return [line for line in server_process.log.read_text(errors="replace").splitlines()
                if '"POST /api/v1/sync/push"' in line]
    wait_until(lambda: any(" 200 " in line for line in pushes()), "the push in the access log")
    assert len(pushes()) == 1, pushes()


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


def impatient(path, url):
    """A device logged in with time to spare (a login checks an argon2 hash,
    slow on a loaded machine), then reopened to give up within IMPATIENT's
    1.5 s: only the sync under test races the clock."""
    login(path, url).close()
    return Client(path, IMPATIENT)


def test_gave_up_sync_resends_the_same_batch_next_time(server_process, proxy, tmp_path):
    d = impatient(tmp_path / "d", proxy.url)
    ids = [d.add("household", household(i)) for i in range(10)]
    proxy.add("drop_response", PUSH, count=1000)
    with pytest.raises(SyncError) as info:
        d.sync()
    assert not info.value.report.complete and info.value.report.pushed == 0
    batch_id, body, count = d.store.pending_batch()
    # The server commits it (the proxy swallows the answer), but the device
    # cannot know: all stays queued. On a busy machine the device may give up
    # before the server has answered: the commit may land after.
    wait_until(lambda: set(server_data(server_process)) == set(ids), "the push committed")
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
    reader = impatient(tmp_path / "r", proxy.url)
    reader.store.set_meta(batch_size=5)
    proxy.add(mode, PULL, after=200, count=1000)
    with pytest.raises(SyncError):
        reader.sync()
    assert reader.store.get_meta("cursor") is None and list(reader.list()) == []
    proxy.rules.clear()
    proxy.add(mode, PULL, after=200, count=1)  # one more cut, retried inside the sync
    reader.close()  # retried with time to spare: IMPATIENT's 1.5 s is a busy machine's pull
    reader = Client(tmp_path / "r", FAST)
    report = reader.sync()
    assert report.complete and report.pulled == 30
    assert local_data(reader) == server_data(server_process)


def test_pull_cut_mid_zstd_body_is_retried(server_process, proxy, tmp_path):
    """The device asks for zstd (through urllib3) and gets it; a page cut
    inside its compressed body is an incomplete frame, retried, not stored."""
    writer = login(tmp_path / "w", server_process.url)
    for i in range(40):
        writer.add("household", household(i))
    writer.sync()
    reader = login(tmp_path / "r", proxy.url)
    reader.store.set_meta(batch_size=20)
    proxy.add("cut_response", PULL, after=600, count=1)
    report = reader.sync()
    assert report.complete and report.pulled == 40
    assert local_data(reader) == server_data(server_process)
    head, _, body = proxy.cut_answers[0].partition(b"\r\n\r\n")
    assert b"content-encoding: zstd" in head.lower() and 0 < len(body)
    total = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n")
                     if line.startswith(b"content-length")))
    assert len(body) < total  # cut inside the compressed body


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


def test_client_killed_at_random_points_loses_and_doubles_nothing(server_process, proxy,
                                                                  tmp_path):
    """SIGKILL the device's process at random points of adds, edits and
    syncs; and, every third kill, while it waits for a push answer the server
    has sent (the proxy holds it): a batch frozen in flight, committed on the
    server and unanswered on the device. The next run resends it and gets the
    stored answer: nothing lost, nothing doubled."""
    data_dir = tmp_path / "killed"
    login(data_dir, proxy.url).close()
    rng = random.Random(int(os.environ.get("KILL_SEED", "11")))
    saved, start, mid_push, frozen = [], 0, 0, []
    for n in range(int(os.environ.get("KILLS", "8"))):
        held = n % 3 == 0
        if held:
            proxy.holding.clear()
            proxy.add("hold_response", PUSH, count=1)
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), str(start)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # A few records saved (however slow the machine), then a kill at a
        # random point of what follows: an add, an edit or a sync; or, when
        # held, once the server's answer to its first push is held.
        first = b"".join(proc.stdout.readline() for _ in range(1 if held else rng.randint(2, 6)))
        if held:
            wait_until(proxy.holding.is_set, "a push answer held", 120)
        else:
            time.sleep(rng.uniform(0.0, 1.0))
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        saved += (first + out).decode().split()
        start += 1000
        probe = Store(data_dir / "device.db")
        pending = probe.pending_batch()
        probe.close()
        mid_push += pending is not None
        if held:
            # Frozen in flight: the device still holds the batch the server
            # committed (it answered) under the same id.
            assert pending is not None, f"kill {n}: the held push left no frozen batch"
            assert server_query(server_process, "SELECT COUNT(*) FROM batches WHERE "
                                "batch_id = ?", pending[0])[0][0] == 1
            frozen.append(pending[0])
        proxy.rules.clear()
    assert len(saved) > 10
    print(f"{len(saved)} records saved, {mid_push} kills left a batch unanswered, "
          f"{len(frozen)} of them held")
    assert len(frozen) >= 1 and mid_push >= len(frozen)
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
    # The replay rules: each batch applied once (one push audit entry per
    # stored batch, the frozen ones included), and the sequence counter
    # never moved past the largest stored seq (no write made and lost).
    pushes = [json.loads(details)["batch_id"] for (details,) in server_query(
        server_process, "SELECT details FROM audit WHERE action = 'push'")]
    batches = [b for (b,) in server_query(server_process, "SELECT batch_id FROM batches")]
    assert sorted(pushes) == sorted(batches) and len(set(pushes)) == len(pushes)
    assert set(frozen) <= set(batches)
    assert server_query(server_process, "SELECT CAST(value AS INTEGER) FROM meta WHERE "
                        "key = 'seq'") == server_query(server_process,
                                                        "SELECT MAX(seq) FROM records")


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
        server_clock = decode_state(server_query(server_process, "SELECT state FROM records "
                                                 "WHERE id = ?", rid)[0][0])["fields"]["head_name"]["hlc"]
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


EXPORT = b"GET /api/v1/exports/"


@pytest.fixture
def stocked_export(server_process, proxy, tmp_path, monkeypatch):
    """60 households on the server; the `fieldsync` CLI signed in as the
    supervisor through the fault proxy."""
    from click.testing import CliRunner

    from client_sync.cli import cli
    monkeypatch.setenv("FIELDSYNC_GIVE_UP_AFTER", "3")
    monkeypatch.setenv("FIELDSYNC_BACKOFF_FACTOR", "0")
    writer = login(tmp_path / "w", server_process.url)
    for i in range(60):
        writer.add("household", household(i))
    assert writer.sync().applied == 60
    writer.close()

    def run(*args, **kw):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)
    assert run("login", "--server", proxy.url, "--username", "sup",
               input="sup-pass-123\n").exit_code == 0
    out = tmp_path / "exports"
    out.mkdir()
    return run, out


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])   # chunked; Content-Length
def test_export_cut_mid_body_is_one_clear_error_and_no_file(stocked_export, proxy, fmt):
    """The real server's reply cut after 3000 bytes (headers and part of the
    body): one line on stderr, exit 1, no file and no `.part` left; the same
    export then completes."""
    run, folder = stocked_export
    out = folder / f"hh.{fmt}"
    proxy.add("cut_response", EXPORT, after=3000)
    result = run("export", "household", "--format", fmt, "--out", str(out))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "was cut off" in lines[0] and "nothing was saved" in lines[0]
    assert "Traceback" not in result.output and list(folder.iterdir()) == []
    assert proxy.stats["cut_response"] == 1
    result = run("export", "household", "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        assert len(out.read_text("utf-8-sig").splitlines()) == 61
    else:
        import openpyxl
        assert openpyxl.load_workbook(out, read_only=True)["household"].max_row == 61
    assert [p.name for p in folder.iterdir()] == [out.name]


def test_export_progress_counts_records_or_bytes_and_shows_only_on_a_terminal(
        stocked_export, monkeypatch, tmp_path):
    run, folder = stocked_export
    seen = {}
    with Client(tmp_path / "home") as sup:     # the CLI's device folder
        for fmt in ("csv", "xlsx", "zip"):
            calls = []
            sup.export("household" if fmt != "zip" else "all", fmt,
                       out=folder / f"x.{fmt}", progress=lambda *a: calls.append(a))
            seen[fmt] = calls
    size = (folder / "x.xlsx").stat().st_size
    assert seen["csv"][0] == (0, 60, "records") and seen["csv"][-1] == (60, 60, "records")
    assert seen["xlsx"][0] == (0, size, "bytes") and seen["xlsx"][-1] == (size, size, "bytes")
    assert seen["zip"][-1] == ((folder / "x.zip").stat().st_size, None, "bytes")
    quiet = run("export", "household", "--format", "csv", "--out", str(folder / "q.csv"))
    assert quiet.exit_code == 0 and quiet.stderr == ""
    monkeypatch.setattr("client_sync.cli._stderr_is_terminal", lambda: True)
    shown = run("export", "household", "--format", "csv", "--out", str(folder / "t.csv"))
    assert shown.exit_code == 0 and "Downloading household.csv" in shown.stderr


def test_export_read_timeout_is_its_own_setting(monkeypatch, tmp_path):
    """An XLSX sends nothing until built: exports wait `export_read_timeout`
    (FIELDSYNC_EXPORT_READ_TIMEOUT, 600 s), not the 30 s of other calls. A
    stand-in server shows both sides: it thinks for 0.8 s, longer than the
    0.3 s read timeout, before answering an export; and it holds the answer
    to `held.csv` until the device has given up waiting."""
    import http.server
    import threading

    from client_sync.transport import Transport
    assert NetworkConfig.from_env().export_read_timeout == 600
    monkeypatch.setenv("FIELDSYNC_EXPORT_READ_TIMEOUT", "1200")
    assert NetworkConfig.from_env().export_read_timeout == 1200
    gave_up = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if "held" in self.path:
                gave_up.wait(60)
            else:
                time.sleep(0.8)  # at least 0.8 s: more than read_timeout
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/csv; charset=utf-8")
                self.send_header("Content-Length", "8")
                self.end_headers()
                self.wfile.write(b"id\nr1\nr2\n"[:8])
            except OSError:
                pass  # the device has gone

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        patient = NetworkConfig(give_up_after=0.5, connect_timeout=1, read_timeout=0.3,
                                export_read_timeout=120, backoff_factor=0)
        with open(tmp_path / "ok.csv", "wb") as out:
            Transport(url, "t", patient).export("/api/v1/exports/x.csv", {}, out)
        assert (tmp_path / "ok.csv").read_bytes() == b"id\nr1\nr2"
        hasty = NetworkConfig(give_up_after=0.5, connect_timeout=1, read_timeout=30,
                              export_read_timeout=0.3, backoff_factor=0)
        with open(tmp_path / "no.csv", "wb") as out, pytest.raises(SyncError) as err:
            Transport(url, "t", hasty).export("/api/v1/exports/held.csv", {}, out)
        assert "sent nothing for 0.3 s" in str(err.value)
        assert "FIELDSYNC_EXPORT_READ_TIMEOUT" in str(err.value)
    finally:
        gave_up.set()
        server.shutdown()
        server.server_close()

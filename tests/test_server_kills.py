"""The real device against the real server killed at fixed points (issue 18).

`tests/test_crash.py` kills the server at random instants under harness
devices; here the server kills itself at one named point
(`server/testkill.py`, armed by FIELDSYNC_TEST_KILL_AT) while the real
`client_sync` device syncs over HTTP, and each test proves the point was
reached (the flag file) before checking the outcome:

- after a push batch's COMMIT and before its answer: the batch is in the
  server's `batches` table while the device still holds it frozen; after a
  restart the device resends it byte for byte and gets the stored answer
  (`applied`, not a second application's `unchanged`), `seq` and the batch
  and push-audit counts unchanged by the replay;
- in the middle of a checkpoint (some WAL frames copied into the database
  file, not all): every acknowledged batch is there after the restart, once.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import crashkit
from client_sync import Client, NetworkConfig, SyncError
from conftest import ROOT, ServerProcess, free_port, run_cli, wait_until
from server import testkill

# The device gives up within a second once the server is gone: no waiting on it.
QUICK = NetworkConfig(give_up_after=1, connect_timeout=1, read_timeout=20, backoff_factor=0,
                      backoff_jitter=0)


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))


@pytest.fixture
def armed(db_path, tmp_path, monkeypatch):
    """start(point): the real server with the kill armed at `point`; its flag file."""
    servers = []

    def start(point):
        flag = tmp_path / f"killed-at-{point}"
        monkeypatch.setenv(testkill.ENV, f"{point}:{flag}")
        server = ServerProcess(db=db_path, port=free_port(), log=tmp_path / "server.log")
        servers.append(server)
        return server.start(), flag

    yield start
    for server in servers:
        server.stop()


def household(i):
    return {"head_name": f"Killed server {i}", "poverty_status": "poor",
            "registered_on": "2025-04-01", "status": "active"}


def device(path, url):
    client = Client(path, QUICK)
    client.login(url, "hw", "hw-pass-123")
    return client


def server_data(server):
    con = sqlite3.connect(server.db)
    try:
        return {rid: json.loads(d) for rid, d in con.execute("SELECT id, data FROM records")}
    finally:
        con.close()


def record_seqs(db):
    return {rid: row["seq"] for rid, row in db["rows"].items()}


def assert_no_traceback(server):
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_killed_after_commit_before_reply_replays_the_stored_answer(armed, tmp_path):
    server, flag = armed("push-committed")
    d = device(tmp_path / "d", server.url)
    ids = [d.add("household", household(i)) for i in range(12)]
    seq_before = crashkit.read_db(server.db)["seq"][0]

    with pytest.raises(SyncError):
        d.sync()  # the server dies between COMMIT and the answer
    assert server.proc.wait(60) == -signal.SIGKILL
    # It happened: the flag names the batch, which the server committed and
    # remembers, while the device, never answered, holds it frozen.
    frozen = d.store.pending_batch()
    assert frozen is not None
    batch_id = frozen[0]
    assert flag.read_text().startswith("push-committed") and batch_id in flag.read_text()
    # Restarted (same environment: the flag file disarms the kill) before
    # anything here opens the file: the server itself recovers the WAL.
    server.start()
    db = crashkit.read_db(server.db)
    assert (d.device_id, batch_id) in db["batches"]
    assert db["applied_batches"] == [(d.device_id, batch_id)]
    assert set(ids) == set(db["rows"])
    assert db["seq"] == (seq_before + 12, seq_before + 12)
    assert {r["sync_state"] for r in d.list()} == {"sent"} and d.status()["pending"] == 12

    report = d.sync()
    # The same bytes under the same id got the stored answer: `applied` (a
    # second application would have said `unchanged`); nothing written again.
    assert report.complete and report.pushed == 12
    assert (report.applied, report.unchanged, report.conflicts) == (12, 0, 0)
    after = crashkit.read_db(server.db)
    assert after["seq"] == db["seq"] and record_seqs(after) == record_seqs(db)
    assert after["batches"] == db["batches"]
    assert after["applied_batches"] == db["applied_batches"]
    assert after["integrity"] == ["ok"]
    assert d.status()["pending"] == 0 and d.store.pending_batch() is None
    assert {r["id"]: r["data"] for r in d.list()} == server_data(server)
    assert_no_traceback(server)


READERS = r"""
import sqlite3, sys
path, held = sys.argv[1], {}
for line in sys.stdin:
    verb, name = line.split()
    if verb == "begin":  # a read transaction: its snapshot pins the WAL where it is
        held[name] = sqlite3.connect(path, isolation_level=None)
        held[name].execute("BEGIN")
        held[name].execute("SELECT count(*) FROM records").fetchone()
        print("ok", flush=True)
    elif verb == "end":
        held[name].execute("ROLLBACK")
        print("ok", flush=True)
    elif verb == "checkpoint":
        conn = sqlite3.connect(path, isolation_level=None)
        print(*conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone(), flush=True)
        held[name] = conn  # never closed: a close could checkpoint the WAL
"""


class Readers:
    """Readers of the server's database in a process of their own, SIGKILLed
    with the server so that no close of theirs checkpoints the WAL."""

    def __init__(self, path):
        self.proc = subprocess.Popen([sys.executable, "-c", READERS, str(path)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, verb, name):
        self.proc.stdin.write(f"{verb} {name}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().split()

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def test_killed_mid_checkpoint_keeps_every_acknowledged_batch_once(armed, tmp_path):
    server, flag = armed("checkpoint-partial")
    d = device(tmp_path / "d", server.url)
    assert d.sync().complete
    seq0 = crashkit.read_db(server.db)["seq"][0]
    readers = Readers(server.db)
    try:
        # The WAL fully copied, then reader r0 starts: it reads the database
        # file alone, and while it does no checkpoint may copy a frame into it.
        wait_until(lambda: (lambda r: r[0] == "0" and r[1] == r[2])(
            readers.ask("checkpoint", "c")), "the WAL fully checkpointed")
        assert readers.ask("begin", "r0") == ["ok"]
        first = [d.add("household", household(i)) for i in range(10)]
        assert d.sync().applied == 10
        # r1's snapshot ends after the first batch: a checkpoint may copy up
        # to there, not the second batch.
        assert readers.ask("begin", "r1") == ["ok"]
        second = [d.add("household", household(100 + i)) for i in range(10)]
        assert d.sync().applied == 10
        assert not flag.exists(), "a checkpoint copied frames while r0 read"
        database_file = server.db.read_bytes()
        assert readers.ask("end", "r0") == ["ok"]
        # The next checkpoint copies the first batch's frames, not the second's: killed.
        assert server.proc.wait(60) == -signal.SIGKILL
    finally:
        readers.kill()
    said = dict(part.split("=") for part in flag.read_text().split()[2:])
    assert 0 < int(said["copied"]) < int(said["wal_frames"]), said
    assert server.db.read_bytes() != database_file  # it wrote into the database file
    assert Path(f"{server.db}-wal").stat().st_size > 0  # and the WAL still holds every frame

    server.start()
    db = crashkit.read_db(server.db)
    assert db["integrity"] == ["ok"]
    assert set(db["rows"]) == set(first) | set(second)
    assert len(db["applied_batches"]) == len(set(db["applied_batches"])) == 2
    assert set(db["applied_batches"]) == db["batches"]
    assert db["seq"] == (seq0 + 20, seq0 + 20)   # one seq per create, none lost, none doubled
    report = d.sync()
    assert report.complete and report.pushed == 0
    third = [d.add("household", household(200 + i)) for i in range(5)]
    assert d.sync().applied == 5
    db = crashkit.read_db(server.db)
    assert set(db["rows"]) == set(first) | set(second) | set(third)
    assert db["seq"] == (seq0 + 25, seq0 + 25) and len(db["batches"]) == 3
    assert {r["id"]: r["data"] for r in d.list()} == server_data(server)
    assert_no_traceback(server)


def test_a_malformed_kill_setting_stops_serve_with_a_clear_error(db_path, monkeypatch):
    for value, words in (("push-committed", "POINT:FLAGFILE"),
                         ("nowhere:/tmp/flag", "unknown point 'nowhere'")):
        with pytest.raises(ValueError, match=words):
            testkill.parse(value)
        monkeypatch.setenv(testkill.ENV, value)
        proc = run_cli(db_path, "serve", "--port", str(free_port()), check=False)
        assert proc.returncode == 1 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert testkill.parse("") is None and testkill.parse(None) is None
    assert testkill.parse("checkpoint-partial:f") == ("checkpoint-partial", os.path.abspath("f"))

"""A village's sync over an emulated 2G link (make test-2g; root only).

The real server runs in one network namespace and the real device library in
another, joined by a 64 kbit/s link that loses 10 % of packets each way and
adds 500 ms to each round trip; the second profile also drops the link for 4 s
in every 8 (tests/net/link.py). One device adds a day's worth of records
offline and syncs until a sync finishes, as a health worker would; a second
device then pulls them all over the same link. Nothing may be lost or doubled.
The figures (seconds, sync attempts) are printed, never asserted: the deadline
is only there so that a hang fails.
"""
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "net"))
from link import PROFILES, SERVER_IP, SlowLink, missing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PORT = 8080
RECORDS = 300
DEADLINE = 600  # seconds for one device's login and syncs

pytestmark = pytest.mark.net2g


@pytest.fixture(autouse=True)
def able():
    why = missing()
    if why:
        if os.environ.get("FIELDSYNC_REQUIRE_2G"):  # make test-2g: a skip is a failure
            pytest.fail(why)
        pytest.skip(why)


def _server(link, db_path, log):
    proc = link.in_server([sys.executable, "-c", "from server.cli import main; main()",
                           "--db", str(db_path), "serve", "--host", SERVER_IP,
                           "--port", str(PORT), "--workers", "2"],
                          cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    # Asked from inside the server's namespace: not across the slow link.
    probe = (f"import requests, time\nfor _ in range(200):\n    try:\n"
             f"        requests.get('http://{SERVER_IP}:{PORT}/api/v1/', timeout=1); break\n"
             f"    except requests.RequestException: time.sleep(0.1)\nelse: raise SystemExit(1)")
    waited = link.in_server([sys.executable, "-c", probe])
    assert waited.wait(60) == 0, "the server did not start"
    return proc


def _device(link, home, add):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = link.in_device([sys.executable, str(ROOT / "tests" / "net" / "device.py"),
                           "--url", f"http://{SERVER_IP}:{PORT}", "--home", str(home),
                           "--add", str(add), "--deadline", str(DEADLINE)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    out, err = proc.communicate(timeout=DEADLINE + 120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_days_records_cross_a_2g_link_once_each(profile, db_path, tmp_path):
    log = open(tmp_path / "server.log", "wb")
    with SlowLink(PROFILES[profile]) as link:
        server = _server(link, db_path, log)
        try:
            t0 = time.monotonic()
            sent = _device(link, tmp_path / "worker", RECORDS)
            pushed_in = time.monotonic() - t0
            t0 = time.monotonic()
            pulled = _device(link, tmp_path / "second", 0)
            pulled_in = time.monotonic() - t0
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)
        flaps = link.flaps
    con = sqlite3.connect(db_path)
    try:
        stored = {rid: json.loads(data) for rid, data in
                  con.execute("SELECT id, data FROM records WHERE form = 'growth'")}
        # Written once each: the seq counter moves on every write (the id is
        # the primary key, so a count of rows could never show a double).
        writes = int(con.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        # One audit row per committed batch (a resend is answered from the
        # stored answer and adds none): each record applied in exactly one
        # batch, none sent again under another batch id.
        audit = [json.loads(d) for (d,) in con.execute(
            "SELECT details FROM audit WHERE action = 'push'")]
    finally:
        con.close()
    print(f"\n2g profile {profile}: {RECORDS} records pushed (and pulled back) in "
          f"{pushed_in:.1f} s with {sent['syncs']} sync(s) and {sent['login_attempts']} "
          f"login(s); a second device pulled them in {pulled_in:.1f} s with "
          f"{pulled['syncs']} sync(s); link dropped {flaps} time(s)")
    assert sent["complete"] and sent["pending"] == 0, sent["errors"][-5:]
    assert len(sent["records"]) == RECORDS
    # Each record once on the server, as the device holds it.
    assert writes == RECORDS and stored == sent["records"]
    assert sum(a["applied"] for a in audit) == RECORDS
    assert sum(a["records"] for a in audit) == RECORDS
    assert len({a["batch_id"] for a in audit}) == len(audit)
    assert pulled["complete"] and pulled["records"] == sent["records"], pulled["errors"][-5:]
    if PROFILES[profile].flap:
        assert flaps > 0

"""Memory stays flat: a 100,000-change outbox pushed and a 100,000-record pull,
in a separate process whose peak RSS must stay under 200 MB. Slow (minutes):
`make test-long`. MEMORY_RECORDS sets the size."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import sys, time
from client_sync import Client, NetworkConfig
from client_sync.store import uuid7
data_dir, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = Client(data_dir, NetworkConfig(give_up_after=120, read_timeout=120))
client.login(url, "hw", "hw-pass-123")
store = client.store
store.conn.execute("PRAGMA synchronous=OFF")  # only to build the outbox quickly
area = {"form": "household", "form_version": 1, "area": "QN.LM.03"}
for i in range(n):
    store.local_change(uuid7(), user="hw", create=area, data={
        "head_name": f"Hộ gia đình số {i}", "poverty_status": "poor",
        "registered_on": "2025-04-01", "status": "active",
        "address_detail": "Thôn Khe Tiền, xã Đồng Tâm, " * 3})
store.conn.execute("PRAGMA synchronous=FULL")
started = time.monotonic()
report = client.sync()
assert report.complete and report.applied == n and report.pulled >= n, report
# VmHWM, this process's own peak: getrusage's ru_maxrss is kept across exec on
# Linux, so it would report the pytest process's size at the fork (413 MB after
# the 200-kill test ran first in the same session).
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(peak_kb // 1024, round(time.monotonic() - started))
"""


@pytest.mark.slow
def test_hundred_thousand_changes_push_and_pull_in_flat_memory(server_process, tmp_path):
    n = int(os.environ.get("MEMORY_RECORDS", "100000"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "dev"),
                           server_process.url, str(n)], cwd=ROOT, capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mb, seconds = map(int, proc.stdout.split())
    print(f"{n} records: peak RSS {peak_mb} MB, sync {seconds} s")
    assert peak_mb < 200

"""The benchmark scripts still run: one tiny round of each (`bench/run.py --smoke`).

Benchmarks never assert speed; this only keeps them from rotting as the
server, the client and the forms change under them.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_one_tiny_round():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert out.startswith("machine: ")
    for title in ("== wire: bytes per record sent", "== push: records/s",
                  "== pull: records/s", "== push breakdown", "== scaling: records/s",
                  "== device: library add rate",
                  "== peers:", "== growth: z-score measurements/s", "== devices:",
                  "== issue 6 goals"):
        assert title in out, f"{title!r} missing from:\n{out[-3000:]}"
    assert "FAILED" not in out
    latest = json.loads((ROOT / "bench" / "out" / "latest-smoke.json").read_text())
    assert latest["failed"] == []
    # The figures are real numbers, not placeholders.
    assert latest["results"]["push_pull"]["push_creates_1"] > 0
    assert latest["results"]["push_pull"]["pull_5000_fresh"] > 0
    assert "pull >= 100,000 records/s, records never edited" in out
    assert 0 < latest["results"]["wire"]["push_gzip1_bytes"] < 10_000
    # Many devices at once: every operation ran and none failed; the
    # database holds exactly what was acknowledged.
    devices = latest["results"]["devices"]
    assert devices["push_count"] > 0 and devices["first_count"] > 0, devices
    assert devices["errors"] == 0 and devices["stored_minus_expected"] == 0, devices
    assert devices["rss_peak_mb"] > 0


def test_the_server_comparison_runs_one_tiny_pair():
    """bench/servers_ab.py against this tree twice: one run each, figures printed."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "servers_ab.py"), "--pairs", "1",
                           "--rounds", "1", str(ROOT), str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    assert lines[0].startswith("A ") and lines[1].startswith("B "), proc.stdout
    assert all(" records/s, 1 client " in line for line in lines[:2]), proc.stdout
    assert lines[2].startswith("A ") and lines[2].endswith("(median 1.00)"), proc.stdout
    assert lines[3].startswith("B ") and "4-client ratio to A per pair: " in lines[3], proc.stdout

"""Export time and peak memory (RSS) for CSV and XLSX at 100k and 1M records.

Memory must stay flat as the export grows (issue 5): each export runs in a
fresh child process that reads the database through `server.exports` exactly
as the API does (one read snapshot, chunks by seq, streamed writers; XLSX via
xlsxwriter's constant_memory temp files), writes the bytes to a file, and
reports its own peak RSS. A flat export shows the same peak at 100k and 1M.

The database is filled directly with SQL (anc_visit and growth records from
bench/common.py's generator, the shipped forms' shapes), since what is
measured is the export, not the push.

    python bench/export.py            # 100k and 1M records, 1 round each
    python bench/export.py --quick    # 10k and 100k
    python bench/export.py --smoke    # 1k: checks the script runs
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Generator, Table, load_forms, parse_mode, print_machine, uuid7  # noqa: E402

from server import exports  # noqa: E402
from server.db import connect  # noqa: E402
from server.migrations import migrate  # noqa: E402

SIZES = {"full": [100_000, 1_000_000], "quick": [10_000, 100_000], "smoke": [1_000]}
FORM = "anc_visit"


class _Forms:
    """The shipped definitions, shaped like `server.catalog.Catalog` for
    `open_export` (which reads `all()` and `unreadable_forms()`)."""

    class _Form:
        def __init__(self, definition):
            self.definition = definition
            self.id, self.version = definition["id"], definition["version"]

    def __init__(self):
        self.forms = [self._Form(d) for d in load_forms().values()]

    def all(self):
        return self.forms

    def unreadable_forms(self, user):
        return []  # the benchmark exports anc_visit, which no role is barred from


def fill(path: str, n: int):
    """`n` records of FORM in a migrated database (not timed)."""
    db = connect(path)
    migrate(db)
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")
    gen = Generator(seed=7)
    samples = []
    while len(samples) < 2000:
        change = gen.anc_visit()
        samples.append(change["data"])
    now = "2025-03-02T04:05:06.789Z"
    conn.execute("BEGIN")
    rows = []
    for seq in range(1, n + 1):
        data = json.dumps(samples[seq % len(samples)], separators=(",", ":"))
        rows.append((uuid7(), FORM, 1, "QN.LM.03", "{}", data, '{"ga_weeks": 24}', 0,
                     "h", seq, now, now, "hoa", "hoa", "bench-dev-1", "[]"))
        if len(rows) == 50_000:
            conn.executemany("INSERT INTO records (id, form, form_version, area, state, data, "
                             "computed, deleted, hlc, seq, created_at, updated_at, created_by, "
                             "updated_by, device, flags) VALUES "
                             "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            rows.clear()
    if rows:
        conn.executemany("INSERT INTO records (id, form, form_version, area, state, data, "
                         "computed, deleted, hlc, seq, created_at, updated_at, created_by, "
                         "updated_by, device, flags) VALUES "
                         "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute(f"UPDATE meta SET value = '{n}' WHERE key = 'seq'")
    conn.execute("COMMIT")
    conn.close()


def child(path: str, fmt: str, out: str):
    """Run one export in this process and print {seconds, peak_rss_mib, bytes, rows}."""
    user = {"username": "bench", "role": "supervisor", "areas": ["QN.LM"]}
    t0 = time.perf_counter()
    job = exports.open_export(path, _Forms(), user, FORM, fmt,
                              tmpdir=os.path.dirname(out))
    size = 0
    try:
        with open(out, "wb") as handle:
            for data in job.chunks:
                handle.write(data)
                size += len(data)
    finally:
        job.close()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_kib() / 1024,
                      "bytes": size, "rows": job.count}))


def peak_rss_kib() -> int:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux keeps
    ru_maxrss across exec, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path: str, fmt: str, tmp: str) -> dict:
    out = os.path.join(tmp, f"out.{fmt}")
    proc = subprocess.run([sys.executable, __file__, "--child", path, fmt, out],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    os.unlink(out)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    mode = parse_mode(description=__doc__.splitlines()[0])
    print_machine()
    table = Table(f"export of one form ({FORM}), streamed to a file; peak RSS of the "
                  "exporting process")
    with tempfile.TemporaryDirectory(prefix="fieldsync-bench-export-") as tmp:
        for n in SIZES[mode]:
            path = os.path.join(tmp, f"db-{n}.db")
            fill(path, n)
            for fmt in ("csv", "xlsx"):
                result = measure(path, fmt, tmp)
                if result["rows"] != n:   # a broken export, not a slow one
                    raise RuntimeError(f"exported {result['rows']} of {n} records")
                label = f"{fmt} {n:,} records"
                table.add(f"{label}: time", "s", result["seconds"])
                table.add(f"{label}: records/s", "rec/s", n / result["seconds"])
                table.add(f"{label}: peak RSS", "MiB", result["peak_rss_mib"])
                table.add(f"{label}: file size", "MiB", result["bytes"] / 2 ** 20)
            os.unlink(path)
    table.print()


if __name__ == "__main__":
    main()

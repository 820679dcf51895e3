"""Indicator report and work list speed (issue 15), printed, never asserted.

    .venv/bin/python bench/indicators.py [--quick | --smoke] [--records N] [--fresh]

Builds a migrated database whose `facts` table holds N records' facts
(a province: 10 districts x 10 communes x 5 villages; persons, pregnancies,
ANC contacts, outcomes, PNC visits, growth measurements, as extracted by
server/indicators/facts.py from realistic values), then times, each in a
fresh child process (so its peak RSS is the report's own):
- the province's indicator report for a year (goal <= 10 s, RSS <= 200 MB at 1M);
- one commune-month (goal <= 200 ms);
- one commune's sam_mam work list (goal <= 200 ms).

Each line gives wall and CPU time, peak RSS and the machine's load average
(the machine may be shared). Generating 1M records takes minutes: the
database is kept in bench/.cache/ (keyed by size, seed and `BUILD_VERSION`)
and reused; `--fresh` builds it again.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import migrations  # noqa: E402
from server.db import connect, write_transaction  # noqa: E402
from server.indicators import facts  # noqa: E402

COMMUNE = "QN.D0.C0"
#: Bump when `build` changes what it generates, so cached databases are rebuilt.
BUILD_VERSION = 1
CACHE = Path(__file__).resolve().parent / ".cache"


def build(path, n, seed=1):
    rnd = random.Random(seed)
    db = connect(str(path))
    migrations.migrate(db)
    rows, made = [], 0
    base = date(2026, 1, 1)

    def add(form, area, values, computed=None):
        nonlocal made
        subject, d, f = facts.extract(form, values, computed or {})
        rows.append((str(uuid.UUID(int=rnd.getrandbits(128))), form, area, subject, d,
                     json.dumps(f, separators=(",", ":"))))
        made += 1
        return rows[-1][0]

    def flush():
        with write_transaction(db):
            db.conn.executemany("INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?)", rows)
        rows.clear()

    while made < n:
        area = f"QN.D{rnd.randrange(10)}.C{rnd.randrange(10)}.V{rnd.randrange(5)}"
        day = lambda lo, hi: (base + timedelta(days=rnd.randint(lo, hi))).isoformat()  # noqa
        woman = add("person", area, {"sex": "female", "dob": day(-12000, -6000),
                                     "ethnicity_code": rnd.choice(["01", "09", "02"]),
                                     "vital_status": "alive", "hi_has_card": "yes",
                                     "hi_valid_from": day(-300, -1), "hi_valid_to": day(1, 300)})
        preg = add("pregnancy", area, {"woman_id": woman, "lmp_date": day(-300, -250),
                                       "edd": day(-20, 30), "status": "ongoing"})
        for _ in range(rnd.randint(2, 6)):
            add("anc_visit", area, {"pregnancy_id": preg, "visit_date": day(-240, -10),
                                    "contact_type": "anc_checkup", "danger_signs": ["none"],
                                    "referred_to": "none"}, {"ga_weeks": rnd.randint(6, 40)})
        child = add("person", area, {"sex": rnd.choice(["male", "female"]),
                                     "dob": day(-1500, 300), "ethnicity_code": "09",
                                     "vital_status": "alive", "hi_has_card": "no"})
        add("pregnancy_outcome", area, {
            "pregnancy_id": preg, "outcome_date": day(-30, 330), "outcome_type": "live_birth",
            "place": rnd.choice(["CHS", "home"]), "attendant": "midwife",
            "mother_outcome": "alive_well",
            "baby": [{"child_id": child, "sex": "male", "status": "alive"}]})
        add("pnc_visit", area, {"pregnancy_id": preg, "visit_date": day(0, 335),
                                "visitor_role": "vhw", "mother_status": "alive",
                                "mother_danger_signs": ["none"], "referred_to": "none",
                                "baby": [{"child_id": child, "status": "alive",
                                          "danger_signs": ["none"]}]},
            {"day_postpartum": rnd.randint(0, 10), "baby": [{"exclusive_bf": True}]})
        for _ in range(rnd.randint(1, 4)):
            whz = rnd.gauss(-0.5, 1.2)
            add("growth", area, {"child_id": child, "child_dob": day(-1500, -200),
                                 "child_sex": "male", "measured_on": day(0, 330),
                                 "muac_mm": rnd.randint(105, 160), "referred_to": "none"},
                {"age_days": rnd.randint(0, 1826), "waz": rnd.gauss(-0.8, 1.1),
                 "haz": rnd.gauss(-1.2, 1.2), "whz": whz, "baz": whz, "flags": [],
                 "nutrition_class": "sam" if whz < -3 else "mam" if whz < -2 else "normal"})
        if len(rows) >= 20000:
            flush()
    flush()
    db.execute("ANALYZE")
    db.conn.close()   # the last connection: checkpoints and removes the WAL
    return made


CHILD = r"""
import json, resource, sys, time
from datetime import date
from server.db import connect
from server.indicators import compute
from server.exports import area_clause
from server import worklists
db = connect(sys.argv[1]); what, area, start, end = sys.argv[2:6]
scopes = [area]
clause, params = area_clause(scopes)
t0, c0 = time.perf_counter(), time.process_time()
if what == "indicators":
    out = compute.indicators(db, clause, params, scopes, date.fromisoformat(start),
                             date.fromisoformat(end))
else:
    out = worklists.worklist(db, {"role": "admin", "areas": []}, what, area,
                             date.fromisoformat(end))
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
# VmHWM, not ru_maxrss: on Linux ru_maxrss keeps the parent's peak across
# fork and exec, so a parent that mapped the database would be counted.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:")) if sys.platform == "linux" else \
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "cpu_s": cpu, "rss_mb": hwm / 1000}))
"""


def timed(path, what, area, start, end):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), what, area, start, end],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-800:])
    out = json.loads(proc.stdout)
    out["load"] = os.getloadavg()[0]
    return out


def database(n, fresh=False):
    """`(path, records)` of a built database of `n` records, from the cache
    when there is one."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"indicators-{n}-seed1-v{BUILD_VERSION}.db"
    if path.exists() and not fresh:
        db = connect(str(path))
        migrations.migrate(db)   # a cached file from before a new migration
        made = db.execute("SELECT count(*) FROM facts").fetchone()[0]
        print(f"reusing {path.name} ({made:,} records' facts)", flush=True)
        return path, made
    part = path.with_suffix(".part")
    part.unlink(missing_ok=True)
    t0 = time.perf_counter()
    made = build(part, n)
    os.replace(part, path)
    print(f"built {made:,} records' facts in {time.perf_counter() - t0:.1f} s", flush=True)
    return path, made


def _line(what, r, goal):
    return (f"{what}: {r['seconds'] * 1000:,.0f} ms wall, {r['cpu_s'] * 1000:,.0f} ms CPU, "
            f"peak RSS {r['rss_mb']:.0f} MB, load {r['load']:.1f} ({goal})")


def run(mode="full", records=None, fresh=False):
    n = records or {"full": 1_000_000, "quick": 50_000, "smoke": 2_000}[mode]
    if mode == "smoke" and not records:
        with tempfile.TemporaryDirectory() as tmp:   # too small to keep
            path = Path(tmp) / "ind.db"
            made = build(path, n)
            return _report(path, made)
    path, made = database(n, fresh)
    return _report(path, made)


def _report(path, made):
    prov = timed(path, "indicators", "QN", "2026-01-01", "2026-12-31")
    month = timed(path, "indicators", COMMUNE, "2026-03-01", "2026-03-31")
    wl = timed(path, "sam_mam", COMMUNE, "", "2026-12-01")
    print(_line(f"province report for a year, {made:,} records", prov,
                "goal <= 10 s, <= 200 MB at 1M"))
    print(_line("commune-month report", month, "goal <= 200 ms"))
    print(_line("commune sam_mam work list", wl, "goal <= 200 ms"))
    return {"records": made, "province_s": prov["seconds"], "province_cpu_s": prov["cpu_s"],
            "province_rss_mb": prov["rss_mb"], "load": prov["load"],
            "commune_month_ms": month["seconds"] * 1000, "worklist_ms": wl["seconds"] * 1000}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--smoke", action="store_true")
    p.add_argument("--records", type=int)
    p.add_argument("--fresh", action="store_true", help="build the database again")
    a = p.parse_args()
    run("smoke" if a.smoke else "quick" if a.quick else "full", a.records, a.fresh)

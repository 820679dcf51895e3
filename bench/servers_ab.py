"""Push throughput of two or more server trees, runs alternated: A, B, A, B...

    .venv/bin/python bench/servers_ab.py --pairs 5 TREE_A TREE_B [TREE_C ...]

Each TREE is a checkout with its own `.venv` (`make .venv/.installed`
there). For each tree in turn, a fresh server of that tree
(`fieldsync-server serve`, its defaults: two workers) takes `--rounds`
rounds of four concurrent clients pushing 5 batches of 500 creates each,
then one client pushing 5 batches; the next tree follows, and so on
`--pairs` times, so that a machine whose speed drifts (a shared host) moves
every tree alike. The clients are this tree's bench code, run with the
tree's own Python; `--v1` sends version-1 records only, which every tree
since forms v1 accepts (a tree from before forms v2 refuses v2 records).

Printed per run: the tree, the four-client and one-client medians of its
rounds, and how the four keep-alive connections were split over the
server's worker processes (from `ss`, after the first round). Then, per
tree, the median of its runs, and each run's four-client ratio to the
first tree's run beside it. Benchmarks measure; nothing is asserted.

How the waitress change was judged on today's code (bench/README.md, "Four
clients on the same code"): TREE_A main, TREE_B main with gunicorn's
`gthread` worker in `server/wsgi.py` (`worker_class`, `threads: 4`).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
SIZE, BATCHES = 500, 5


def one_run(rounds: int, v1: bool) -> dict:
    """In the tree's own Python: one fresh server, `rounds` rounds."""
    sys.path.insert(0, str(HERE.parent))
    import common
    if v1:  # the Generator's records fitted to the v1 forms
        common.load_forms = functools.partial(common.load_forms, version=1)
    import push_pull as pp
    four, one, split = [], [], []
    with common.serve("worker") as srv:
        clients = [srv.client("worker", common.device_id(i)) for i in range(1, 5)]
        gens = [common.Generator(seed=i, node=common.device_id(i)) for i in range(1, 5)]
        warm, _ = pp._bodies(gens[0], clients[0].node, 1, SIZE)
        pp._push_all(clients[0], warm, SIZE)
        for _ in range(rounds):
            bodies = [pp._bodies(g, c.node, BATCHES, SIZE)[0] for g, c in zip(gens, clients)]
            four.append(4 * BATCHES * SIZE / pp._concurrent(clients, bodies, SIZE))
            if not split:
                split = _split(srv.url.rsplit(":", 1)[1])
            creates, _ = pp._bodies(gens[0], clients[0].node, BATCHES, SIZE)
            one.append(BATCHES * SIZE / pp._push_all(clients[0], creates, SIZE))
    return {"four": statistics.median(four), "one": statistics.median(one), "split": split}


def _split(port: str) -> list[int]:
    """Established connections to `port`, counted per server process
    ([] where iproute2's `ss` is not installed)."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    pids = re.findall(r"pid=(\d+)", out)
    return sorted((pids.count(p) for p in set(pids)), reverse=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", type=Path)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--v1", action="store_true", help="version-1 records only")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:  # the child: print one run's figures as JSON
        print(json.dumps(one_run(a.rounds, a.v1)))
        return
    # Labelled by position (A, B, ...): the same tree may be given twice.
    labels = [f"{chr(65 + i)} {tree}" for i, tree in enumerate(a.trees)]
    runs = [[] for _ in a.trees]
    for _ in range(a.pairs):
        for i, tree in enumerate(a.trees):
            args = [str(tree.resolve() / ".venv" / "bin" / "python"), str(HERE), "--one",
                    "--rounds", str(a.rounds), *(["--v1"] if a.v1 else []), str(tree)]
            proc = subprocess.run(args, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{tree}: {proc.stderr.strip()[-800:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[i].append(run)
            print(f"{labels[i]}: 4 clients {run['four']:,.0f} records/s, 1 client "
                  f"{run['one']:,.0f}, connections per worker {run['split']}", flush=True)
    for label, rs in zip(labels, runs):
        ratios = [r["four"] / f["four"] for r, f in zip(rs, runs[0])]
        print(f"{label}: 4 clients median {statistics.median(r['four'] for r in rs):,.0f}, "
              f"1 client median {statistics.median(r['one'] for r in rs):,.0f}, "
              "4-client ratio to A per pair: " + " ".join(f"{x:.2f}" for x in ratios)
              + f" (median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()

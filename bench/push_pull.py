"""Push and pull throughput against the production server, and where server
time goes per pushed record.

Push: `fieldsync-server serve` (gunicorn, its default workers), real HTTP,
batches of 500 realistic changes pre-encoded as compact JSON (the client's
own encoding is not the server's throughput), full validation, per-field
merge, `synchronous=FULL`. Creates and edits (one or two fields of each
created record, with bases) are measured separately; one client, then four
concurrent clients (four devices). One more row: creates in batches of 20, a
health worker's day of visits, where each request's fixed cost shows.

Pull: everything the pushes stored (every record created, then edited once),
from an empty cursor, in pages of 1,000 and 5,000, as the device library
pulls: `clocks=common`, zstd (gzip for clients without it), decoded with
orjson. One row each for DESIGN's default (`clocks=all`), for
`clocks=sparse` (devices before `common`), for pages not compressed (a LAN)
and for pages not decoded (server and HTTP alone). One more row pulls as
many records that were never edited (most visits and measurements), from an
area of their own.

Breakdown: the same push in-process (Flask test client, no HTTP) under
cProfile, the time split into parse, envelope, form validation, merge, SQL,
storage encoding, response and the rest.

Goals (issue 6): push (one client, creates) >= 20,000 records/s; pull >=
100,000 records/s.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import tempfile
import threading
import time
from pathlib import Path

import common
from common import BATCH, Generator, Table, encode, push_body

PUSH_GOAL = 20_000
SMALL, SMALL_BATCHES = 20, 50      # a day's visits, sent as one batch each
PULL_GOAL = 100_000


def _check(answer: dict, n: int):
    bad = [x for x in answer["results"] if x["status"] not in ("applied", "unchanged")]
    if bad or len(answer["results"]) != n:
        raise RuntimeError(f"{len(bad)} of {n} changes not applied; first: {bad[:1]}")


def _bodies(gen: Generator, node: str, batches: int, size: int):
    """(create bodies, edit bodies), encoded before the clock starts."""
    created = [gen.creates(size) for _ in range(batches)]
    edits = [[gen.edit(c) for c in batch] for batch in created]
    return ([encode(push_body(b, node)) for b in created],
            [encode(push_body(b, node)) for b in edits])


def _push_all(client: common.Client, bodies: list[bytes], size: int) -> float:
    t0 = time.perf_counter()
    for body in bodies:
        _check(client.push_raw(body), size)
    return time.perf_counter() - t0


def _concurrent(clients, bodies_by_client, size) -> float:
    """Wall time for every client pushing its bodies at once."""
    errors = []
    start = threading.Barrier(len(clients) + 1)

    def work(client, bodies):
        start.wait()
        try:
            _push_all(client, bodies, size)
        except Exception as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, b))
               for c, b in zip(clients, bodies_by_client)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def _pull_rate(client: common.Client, limit: int, decode: bool = True,
               clocks: str = "common", gzip: bool = True) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = client.pull_all(limit, decode=decode, clocks=clocks, gzip=gzip)
    return n / (time.perf_counter() - t0), n


def run(mode: str = "full") -> dict:
    rounds = common.mode_rounds(mode, 5, 2)
    pull_rounds = common.mode_rounds(mode, 5, 1)
    size = BATCH if mode != "smoke" else 50
    batches = {"full": 10, "quick": 1, "smoke": 1}[mode]      # one client, per round
    batches4 = {"full": 5, "quick": 1, "smoke": 1}[mode]      # each of four clients
    per_round = size * batches
    out = {}
    # Four devices of one health worker's village team (one user: adding
    # users costs an argon2 hash each and changes nothing measured).
    with common.serve("worker") as srv:
        clients = [srv.client("worker", common.device_id(i)) for i in range(1, 5)]
        gens = [Generator(seed=i, node=common.device_id(i)) for i in range(1, 5)]
        # Warm-up: the first requests open connections and compile the forms.
        warm, _ = _bodies(gens[0], clients[0].node, 1, size)
        _push_all(clients[0], warm, size)

        creates1, edits1, creates4, edits4, small1 = [], [], [], [], []
        for _ in range(rounds):
            c_bodies, e_bodies = _bodies(gens[0], clients[0].node, batches, size)
            creates1.append(per_round / _push_all(clients[0], c_bodies, size))
            edits1.append(per_round / _push_all(clients[0], e_bodies, size))
            prepared = [_bodies(g, c.node, batches4, size) for g, c in zip(gens, clients)]
            n4 = 4 * batches4 * size
            creates4.append(n4 / _concurrent(clients, [p[0] for p in prepared], size))
            if mode != "quick":  # the one-minute budget of bench-quick
                edits4.append(n4 / _concurrent(clients, [p[1] for p in prepared], size))
            small, _ = _bodies(gens[0], clients[0].node, SMALL_BATCHES, SMALL)
            small1.append(SMALL * SMALL_BATCHES / _push_all(clients[0], small, SMALL))

        table = Table(f"push: records/s over HTTP, batches of {size}; per round {batches} "
                      f"batch(es) from one client, {batches4} from each of four; "
                      f"`fieldsync-server serve` defaults")
        out["push_creates_1"] = table.add("creates, 1 client", "records/s", creates1)
        out["push_edits_1"] = table.add("edits, 1 client", "records/s", edits1)
        out["push_creates_4"] = table.add("creates, 4 concurrent clients", "records/s", creates4)
        if edits4:
            out["push_edits_4"] = table.add("edits, 4 concurrent clients", "records/s", edits4)
        out["push_creates_small"] = table.add(
            f"creates, 1 client, batches of {SMALL}", "records/s", small1,
            note=f"{1000 * SMALL / common.summary(small1)[0]:.2f} ms a batch")
        table.print()

        # Pull: the health worker's area holds every record pushed above.
        stored = None
        pull = Table("pull: records/s over HTTP from an empty cursor, every record edited "
                     "once; as the device pulls (clocks=common, zstd, orjson) unless noted")
        for limit in (1000, 5000):
            rates = []
            for _ in range(pull_rounds):
                rate, stored = _pull_rate(clients[0], limit)
                rates.append(rate)
            out[f"pull_{limit}"] = pull.add(f"pages of {limit}", "records/s", rates,
                                            f"{stored:,} records")
        rates = [_pull_rate(clients[0], 5000, clocks="all")[0] for _ in range(pull_rounds)]
        out["pull_5000_all_clocks"] = pull.add("pages of 5000, every clock (DESIGN's default)",
                                               "records/s", rates)
        rates = [_pull_rate(clients[0], 5000, clocks="sparse")[0] for _ in range(pull_rounds)]
        out["pull_5000_sparse"] = pull.add("pages of 5000, clocks=sparse (older devices)",
                                           "records/s", rates)
        # Uncompressed (a LAN), for comparison.
        rates = [_pull_rate(clients[0], 5000, gzip=False)[0] for _ in range(pull_rounds)]
        out["pull_5000_identity"] = pull.add("pages of 5000, not compressed", "records/s",
                                             rates)
        # The same pages, not decoded: what the server and HTTP alone deliver.
        rates = [_pull_rate(clients[0], 5000, decode=False)[0] for _ in range(pull_rounds)]
        out["pull_5000_raw"] = pull.add("pages of 5000, not decoded by the client",
                                        "records/s", rates)
        # Most records (a visit, a measurement) are never edited after their
        # create: as many of those, in an area of their own, pulled the same way.
        fresh = _fresh_client(srv, stored)
        rates = []
        for _ in range(pull_rounds):
            rate, n = _pull_rate(fresh, 5000)
            rates.append(rate)
        out["pull_5000_fresh"] = pull.add("pages of 5000, records never edited", "records/s",
                                          rates, f"{n:,} records")
        pull.print()
    out["stored"] = stored
    out["breakdown"] = breakdown(mode)
    _verdicts(out)
    return out


FRESH_AREA, FRESH_USER = "QN.LM.09", "fresh-worker"


def _fresh_client(srv, n: int) -> common.Client:
    """A client of a health worker whose area holds `n` records, each as created."""
    srv.add_user(FRESH_USER, areas=(FRESH_AREA,))
    client = srv.client(FRESH_USER, common.device_id(9))
    gen = Generator(seed=9, node=client.node, area=FRESH_AREA)
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        _check(client.push_raw(encode(push_body(gen.creates(size), client.node))), size)
    return client


def _verdicts(out):
    for name, value, goal in (("push, 1 client, creates", out["push_creates_1"], PUSH_GOAL),
                              ("pull, pages of 1000", out["pull_1000"], PULL_GOAL),
                              ("pull, pages of 5000", out["pull_5000"], PULL_GOAL),
                              ("pull, pages of 5000, records never edited",
                               out["pull_5000_fresh"], PULL_GOAL)):
        verdict = "met" if value >= goal else f"missed: {value / goal:.0%} of the goal"
        print(f"goal: {name} >= {goal:,} records/s: {value:,.0f} -> {verdict}")


# -- where server time goes ----------------------------------------------------------

# Categories by entry function (file suffix, function name). A category's time
# is the inclusive time of its entries, minus calls from another entry of the
# same category (no double counting when, say, one validator calls another).
CATEGORIES = [
    ("parse (read body, JSON decode)", [("server/body.py", "read_json")]),
    ("envelope (PushSchema, ChangeSchema)", [("server/api/sync.py", "_check_envelope"),
                                             ("schemas/wire.py", "load_change")]),
    ("idempotency (canonical body hash)", [("server/api/sync.py", "_body_sha256")]),
    ("form validation (change + merged record)", [
        ("schemas/forms/compiled.py", "validate_create"),
        ("schemas/forms/compiled.py", "validate_change"),
        ("schemas/forms/compiled.py", "validate_record")]),
    # A create's computed fields are derived inside its validation, and a
    # create whose clocks are all trusted skips the merge (its registers are
    # built in storage.create_texts): both rows read 0 for this workload.
    ("computed fields (compute(), when not derived in validation)",
     [("schemas/forms/compiled.py", "compute")]),
    ("merge (schemas.merge.merge; skipped by plain creates)", [("schemas/merge.py", "merge")]),
    ("SQL (sqlite3 calls)", "sqlite3"),
    ("storage encoding (JSON columns)", [("server/storage.py", "_dumps"),
                                         ("server/storage.py", "encode_state"),
                                         ("server/storage.py", "create_texts"),
                                         ("server/storage.py", "wire_text"),
                                         ("server/storage.py", "get_records")]),
    ("respond (the answer, encoded in the push: its Response)",
     [("server/api/sync.py", "_json_answer")]),
]
TOTAL = ("flask/app.py", "wsgi_app")


def _matches(func, entries):
    file, _, name = func
    return any(file.endswith(f) and name == n for f, n in entries)


def _category_time(stats, entries) -> float:
    if entries == "sqlite3":  # C methods: leaves, so their own time is all of it
        return sum(v[2] for f, v in stats.items() if f[0] == "~" and "sqlite3." in f[2])
    total = 0.0
    for func, (_, _, _, _, callers) in stats.items():
        if not _matches(func, entries):
            continue
        for caller, (_, _, _, ct) in callers.items():
            if not _matches(caller, entries):
                total += ct
    return total


def _sql_inside_other_categories(stats) -> float:
    """SQL time spent inside `get_records` (counted as SQL, not storage encoding)."""
    return sum(ct for f, v in stats.items() if f[0] == "~" and "sqlite3." in f[2]
               for caller, (_, _, _, ct) in v[4].items()
               if caller[0].endswith("server/storage.py") and caller[2] == "get_records")


def breakdown(mode: str = "full") -> dict:
    """Per-record server time of a create push, in-process under cProfile."""
    from server import create_app

    size = BATCH if mode != "smoke" else 50
    batches = {"full": 20, "quick": 1, "smoke": 1}[mode]
    with contextlib.ExitStack() as stack:
        if common.SHARE:  # the run's shared database: no second init (seconds)
            srv = stack.enter_context(common.serve("prof", "QN.PR.01"))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fieldsync-prof-"))
            srv = common.Server(db_path=Path(tmp) / "prof.db")  # only for its CLI helpers
            stack.callback(srv.tmp.cleanup)
            srv.cli("init")
            srv.add_user("prof", areas=("QN.PR.01",))
        app = create_app({"DB": srv.db_path})
        http = app.test_client()
        r = http.post("/api/v1/auth/login", json={"username": "prof", "password": common.PASSWORD,
                                                  "device_id": common.device_id(7),
                                                  "app_version": "bench"})
        headers = {"Authorization": f"Bearer {r.get_json()['token']}",
                   "Content-Type": "application/json"}
        gen = Generator(seed=7, area="QN.PR.01", node=common.device_id(7))

        def push(bodies):
            for body in bodies:
                resp = http.post("/api/v1/sync/push", data=body, headers=headers)
                _check(resp.get_json(), size)

        push(_bodies(gen, common.device_id(7), 1, size)[0])  # warm-up
        bodies, _ = _bodies(gen, common.device_id(7), batches, size)
        plain, _ = _bodies(gen, common.device_id(7), batches, size)
        t0 = time.perf_counter()
        push(plain)
        unprofiled = (time.perf_counter() - t0) / (batches * size) * 1e6
        prof = cProfile.Profile()
        prof.enable()
        push(bodies)
        prof.disable()
    stats = pstats.Stats(prof).stats
    n = batches * size
    total = sum(v[3] for f, v in stats.items() if _matches(f, [TOTAL]))
    table = Table(f"push breakdown: server time per created record, in-process, cProfile "
                  f"({n:,} records; unprofiled {unprofiled:.0f} µs/record in-process)")
    rows, accounted = {}, 0.0
    for label, entries in CATEGORIES:
        t = _category_time(stats, entries)
        if label.startswith("storage encoding"):
            t -= _sql_inside_other_categories(stats)
        rows[label] = t
        accounted += t
    rows["other (Flask, auth, storage logic, clock)"] = total - accounted
    for label, t in rows.items():
        us = t / n * 1e6
        table.add(label, "µs/record", us, f"{t / total:.0%}")
    table.add("total (profiled)", "µs/record", total / n * 1e6)
    table.print()
    return {"unprofiled_us": unprofiled,
            "shares": {k: v / total for k, v in rows.items()},
            "us": {k: v / n * 1e6 for k, v in rows.items()},
            "top": _top(stats, total)}


def _top(stats, total, k=15):
    """The functions with the most own time: where to look first."""
    ranked = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:k]
    lines = ["\ntop own-time functions (profiled push):"]
    for (file, line, name), v in ranked:
        short = file.split("site-packages/")[-1].replace(str(common.ROOT) + "/", "")
        lines.append(f"  {v[2] / total:5.1%}  {v[1]:>8} calls  {name}  ({short}:{line})")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None):
    common.script_main(run, __doc__, argv)


if __name__ == "__main__":
    main()

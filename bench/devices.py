"""Many devices at once: a commune's day of syncs against one server (issue 14).

`fieldsync-server serve` (its defaults: 2 gunicorn workers, waitress with 4
task threads each) on a free 127.0.0.1 port with a fresh database. The
villages are filled first (not measured): each village's records pushed
over HTTP by a seeding device. Then, all at once, the devices of the
commune sync their day, each with its own health-worker account:

- **login** (argon2id on the server: the costliest request there is) for
  the new phones and one device in ten (an expired token, a sign-out); a
  token lasts weeks, so the others hold one from an earlier day;
- **a first sync of a village** for a share of the devices (a new or
  replaced phone): every record of its village, page after page as the
  device library pulls (`clocks=common`, the server's default page,
  zstd/gzip, decoded with orjson), timed from the first page to the last;
- then a few rounds of **push** (5-30 changes, mostly new visits and
  measurements, about one in five an edit of one of the device's own
  earlier records, based on its clock) and **pull** (what the village
  changed since the device's cursor: the other devices' pushes), each round
  after a pause, as a worker saves forms between syncs.

The devices that are not new start from a cursor at the end of their
village (as if they synced yesterday), signed in-process with the server's
own cursor code and secret, and with a token from the server's own
`auth.login` run in-process with the password check short-cut; accounts
are created in-process with one precomputed argon2id hash (bench only:
hundreds of argon2id runs would take minutes of setup). The logins of the
day still verify the password on the server.

The whole day is compressed into a minute or two (pauses of seconds
between syncs, not hours): a far higher rate than a commune's real day,
which makes this a peak, not an average.

The devices run as threads in a few client processes (so that the client
side's GIL does not add to the latencies), start over a ramp, and stop at
a deadline: a run is bounded in time and in count. Push bodies are encoded
before the clock starts. A reset connection is retried once (a push replays
its stored answer by batch id; the device library does the same), and a 503
(the server's bound on password checks at once, a busy database) is sent
again after its `Retry-After`, as the device library does; both are
counted apart; anything else that is not a 200 with every change
`applied`/`unchanged`, or a first sync with fewer records than its village
held, is an error. At the end the database must hold exactly the records
pushed (preload plus acknowledged creates).

Printed: p50, p99 and max latency per operation, requests and errors, and
the server's memory: the RSS of its processes (gunicorn master and
workers, from /proc) idle after start, the peak of their sum sampled every
0.2 s during the run, and each process' high-water mark (VmHWM).
Benchmarks print, never assert.

    .venv/bin/python bench/devices.py [--quick | --smoke]
    BENCH_ALL_LOGIN=1 .venv/bin/python bench/devices.py   # every device signs in
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import orjson

import common
from common import Generator, encode, push_body

MODES = {
    # devices, villages, records per village, push/pull rounds per device,
    # devices doing a first sync, ramp (s), pause between rounds (s),
    # deadline (s), client processes
    "full": dict(devices=200, villages=20, village_records=2000, rounds=5, first=20,
                 ramp=20.0, pause=(1.0, 6.0), deadline=300.0, procs=4),
    "quick": dict(devices=40, villages=4, village_records=300, rounds=2, first=4,
                  ramp=3.0, pause=(0.2, 1.5), deadline=60.0, procs=2),
    "smoke": dict(devices=6, villages=2, village_records=40, rounds=1, first=2,
                  ramp=0.5, pause=(0.05, 0.2), deadline=60.0, procs=1),
}
OPS = ("login", "first sync (village)", "push", "pull")
PUSH_SIZE = (5, 30)
#: A 503 is sent again after its Retry-After (with up to 50 % jitter) until
#: this long after the first try, as the device library does by default
#: (FIELDSYNC_GIVE_UP_AFTER).
BUSY_GIVE_UP_S = 60.0
EDIT_SHARE = 0.2
SEED_BATCH = 500


def village(v: int) -> str:
    return f"QN.LM.{v + 1:02d}"


# -- the server's processes and their memory -------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def server_pids(master: int) -> list[int]:
    """The server process and its descendants (gunicorn master and workers)."""
    pids, todo = [], [master]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pids) -> float:
    return sum(_status_kb(p, "VmRSS") for p in pids) / 1024


class MemorySampler(threading.Thread):
    """The sum of the server processes' RSS every 0.2 s; `peak` in MB."""

    def __init__(self, master: int):
        super().__init__(daemon=True)
        self.master, self.peak, self.stop = master, 0.0, threading.Event()

    def run(self):
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, rss_mb(server_pids(self.master)))


# -- the setup: accounts, villages, cursors --------------------------------------

def _accounts(db_path: str, names_areas):
    """Health-worker accounts, created in-process with one precomputed hash."""
    from server import auth
    from server import db as sdb
    real = auth.hash_password
    the_hash = real(common.PASSWORD)
    auth.hash_password = lambda password: the_hash
    try:
        db = sdb.connect(db_path)
        for name, area in names_areas:
            auth.add_user(db, name, common.PASSWORD, "health_worker", [area])
        db.conn.close()
    finally:
        auth.hash_password = real


def _tokens(db_path: str, names) -> dict:
    """{username: token} for devices that signed in on an earlier day.

    Through the server's own `auth.login` (its token and device rows), in an
    app context holding the server's default settings, with the password
    check short-cut (bench only): 180 argon2id checks would take minutes.
    """
    from flask import Flask

    from server import DEFAULTS, auth
    from server import db as sdb
    app = Flask("bench-devices")
    app.config.update(DEFAULTS)
    real = auth.verify_password
    auth.verify_password = lambda password_hash, password: password == common.PASSWORD
    try:
        db = sdb.connect(db_path)
        with app.app_context():
            out = {name: auth.login(db, name, common.PASSWORD, node, "bench", "127.0.0.1")[0]
                   for name, node in names}
        db.conn.close()
    finally:
        auth.verify_password = real
    return out


def _cursors(db_path: str, names_areas) -> dict:
    """{username: a cursor at the newest record}, as after yesterday's sync."""
    from server import cursor
    from server import db as sdb
    db = sdb.connect(db_path)
    top = db.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
    out = {name: cursor.encode(db, {"username": name, "role": "health_worker",
                                    "areas": [area]}, top)
           for name, area in names_areas}
    db.conn.close()
    return out


def _fill(srv, villages: int, per_village: int) -> dict:
    """Each village's records, pushed by a seeding device; {area: count}."""
    counts = {}
    for v in range(villages):
        area, name = village(v), f"seed-{v + 1:02d}"
        client = srv.client(name, f"seed-dev-{v + 1:02d}")
        gen = Generator(seed=1000 + v, node=client.node, area=area)
        left = per_village
        while left:
            n = min(SEED_BATCH, left)
            client.push(gen.creates(n))
            left -= n
        counts[area] = per_village
        client.http.close()
    return counts


# -- one device ------------------------------------------------------------------

class Device:
    """One phone: its account, its pre-encoded pushes, its timings."""

    def __init__(self, i: int, cfg: dict, url: str, cursor: str | None, token: str | None,
                 limit: int):
        self.i, self.url, self.limit = i, url, limit
        self.v = i % cfg["villages"]
        self.area = village(self.v)
        self.user, self.node = f"vhw-{i + 1:03d}", f"dev-{i + 1:03d}"
        self.first = cursor is None
        self.cursor, self.token = cursor, token
        rng = random.Random(i)
        self.start = rng.uniform(0, cfg["ramp"])
        self.pauses = [rng.uniform(*cfg["pause"]) for _ in range(cfg["rounds"])]
        gen = Generator(seed=i, node=self.node, area=self.area)
        self.bodies, self.sizes, self.new = [], [], []
        mine = []
        for _ in range(cfg["rounds"]):
            n = rng.randint(*PUSH_SIZE)
            edits = min(len(mine), round(n * EDIT_SHARE))
            changes = [gen.edit(c) for c in rng.sample(mine, edits)]
            new = gen.creates(n - edits)
            mine.extend(new)
            self.new.append(len(new))
            self.bodies.append(encode(push_body(changes + new, self.node)))
            self.sizes.append(n)
        self.results: list[tuple[str, float, int]] = []   # (op, seconds, records)
        self.errors: list[tuple[str, str]] = []
        self.retries = 0
        self.busy_retries = 0    # 503s waited out (Retry-After) and sent again
        self.rng = rng
        self.acked_creates = 0   # creates in the pushes answered 200, all applied

    def _send(self, method: str, path: str, **kw):
        """One request, as the device library sends it: a reset connection is
        retried once, and a 503 (a login storm past the server's password
        checks, a busy database) after its Retry-After, until BUSY_GIVE_UP_S."""
        give_up = time.monotonic() + BUSY_GIVE_UP_S
        while True:
            for attempt in (0, 1):
                try:
                    r = self.http.request(method, self.url + path, timeout=120, **kw)
                    break
                except self._reset_errors:
                    if attempt:
                        raise
                    self.retries += 1
            try:
                wait = float(r.headers.get("Retry-After", "5"))
            except ValueError:
                wait = 5.0
            wait = min(max(wait, 0.0), 60.0) * self.rng.uniform(1.0, 1.5)
            if r.status_code != 503 or time.monotonic() + wait > give_up:
                return r
            self.busy_retries += 1
            time.sleep(wait)

    def _timed(self, op: str, fn):
        t0 = time.perf_counter()
        try:
            records = fn()
        except Exception as exc:  # noqa: BLE001 (counted and reported, never raised)
            self.errors.append((op, f"{type(exc).__name__}: {str(exc)[:200]}"))
            return False
        self.results.append((op, time.perf_counter() - t0, records))
        return True

    def _login(self):
        r = self._send("POST", "/api/v1/auth/login", json={
            "username": self.user, "password": common.PASSWORD, "device_id": self.node,
            "app_version": "bench"})
        if r.status_code != 200:
            raise RuntimeError(f"login {r.status_code} {r.text[:200]}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['token']}"
        return 0

    def _pull(self):
        n = 0
        while True:
            params = {"limit": self.limit, "clocks": "common"}
            if self.cursor:
                params["cursor"] = self.cursor
            r = self._send("GET", "/api/v1/sync/pull", params=params)
            if r.status_code != 200:
                raise RuntimeError(f"pull {r.status_code} {r.text[:200]}")
            page = orjson.loads(r.content)
            n += len(page["records"])
            self.cursor, more = page["cursor"], page["more"]
            del page  # as the device library: one decoded page at a time
            if not more:
                return n

    def _first_sync(self, expected: int):
        n = self._pull()
        if n < expected:
            raise RuntimeError(f"first sync got {n} records; the village held {expected}")
        return n

    def _push(self, k: int):
        body = self.bodies[k]
        r = self._send("POST", "/api/v1/sync/push", data=body,
                       headers={"Content-Type": "application/json"})
        if r.status_code != 200:
            raise RuntimeError(f"push {r.status_code} {r.text[:200]}")
        results = orjson.loads(r.content)["results"]
        bad = [x for x in results if x["status"] not in ("applied", "unchanged")]
        if bad or len(results) != self.sizes[k]:
            raise RuntimeError(f"{len(bad)} of {self.sizes[k]} not applied: {str(bad[:1])[:200]}")
        return self.sizes[k]

    def run(self, t0: float, deadline: float, village_count: int):
        import requests
        self._reset_errors = (requests.ConnectionError,)
        self.http = requests.Session()
        time.sleep(max(0.0, t0 + self.start - time.monotonic()))
        try:
            if self.token:
                self.http.headers["Authorization"] = f"Bearer {self.token}"
            elif not self._timed("login", self._login):
                return
            if self.first and not self._timed("first sync (village)",
                                              lambda: self._first_sync(village_count)):
                return
            for k, pause in enumerate(self.pauses):
                if time.monotonic() + pause > deadline:
                    return
                time.sleep(pause)
                if self._timed("push", lambda: self._push(k)):
                    self.acked_creates += self.new[k]
                self._timed("pull", self._pull)
        finally:
            self.http.close()


def _process(specs, cfg, url, limit, counts, ready, go, out):
    """One client process: its devices as threads, results put on `out`."""
    devices = [Device(i, cfg, url, cursor, token, limit) for i, cursor, token in specs]
    ready.put(len(devices))
    t0 = go.get()
    # go holds the parent's time.monotonic() (one clock on this machine).
    deadline = t0 + cfg["deadline"]
    threads = [threading.Thread(target=d.run, args=(t0, deadline, counts[d.area]))
               for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put([{"results": d.results, "errors": d.errors, "retries": d.retries,
              "busy_retries": d.busy_retries, "creates": d.acked_creates} for d in devices])


# -- the run ---------------------------------------------------------------------

def _pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def run(mode: str = "full") -> dict:
    cfg = MODES[mode]
    n, villages = cfg["devices"], cfg["villages"]
    names = [(f"vhw-{i + 1:03d}", village(i % villages)) for i in range(n)]
    seeds = [(f"seed-{v + 1:02d}", village(v)) for v in range(villages)]
    first = set(range(0, n, max(1, n // cfg["first"])))
    first = set(sorted(first)[:cfg["first"]])
    out = {}
    print(f"\n== devices: {n} devices in {villages} villages, {cfg['village_records']:,} "
          f"records a village; {len(first)} first syncs, "
          f"{n if os.environ.get('BENCH_ALL_LOGIN') else len(first) + len(range(5, n, 10))} "
          f"logins, {cfg['rounds']} push+pull rounds each; ramp {cfg['ramp']:.0f} s, pauses {cfg['pause'][0]}-{cfg['pause'][1]} s, "
          f"deadline {cfg['deadline']:.0f} s; {cfg['procs']} client process(es)", flush=True)
    with common.Server() as srv:
        master = srv.proc.pid
        t = time.perf_counter()
        _accounts(srv.db_path, seeds + names)
        counts = _fill(srv, villages, cfg["village_records"])
        cursors = _cursors(srv.db_path, names)
        # New phones (first sync) and one device in ten (an expired token, a
        # sign-out) log in during the day; the rest hold yesterday's token.
        # BENCH_ALL_LOGIN=1: every device signs in at the start of its day
        # (a morning when a commune's tokens all expired: the login storm).
        relogin = set(range(n)) if os.environ.get("BENCH_ALL_LOGIN") else set(range(5, n, 10))
        tokens = _tokens(srv.db_path, [(names[i][0], f"dev-{i + 1:03d}") for i in range(n)
                                       if i not in first and i not in relogin])
        setup = time.perf_counter() - t
        import requests
        limit = requests.get(srv.url + "/api/v1/", timeout=30).json()["limits"][
            "pull_limit_default"]
        idle_mb = rss_mb(server_pids(master))

        ctx = multiprocessing.get_context("fork")
        ready, out_q = ctx.Queue(), ctx.Queue()
        gos = []
        procs = []
        for p in range(cfg["procs"]):
            specs = [(i, None if i in first else cursors[names[i][0]],
                      tokens.get(names[i][0])) for i in range(p, n, cfg["procs"])]
            go = ctx.Queue()
            proc = ctx.Process(target=_process,
                               args=(specs, cfg, srv.url, limit, counts, ready, go, out_q),
                               daemon=True)
            proc.start()
            procs.append(proc)
            gos.append(go)
        for _ in procs:
            ready.get(timeout=600)   # every body encoded before the clock starts
        sampler = MemorySampler(master)
        sampler.start()
        t0 = time.monotonic()
        for go in gos:
            go.put(t0)
        devices = []
        for _ in procs:
            devices.extend(out_q.get(timeout=cfg["deadline"] + 600))
        wall = time.monotonic() - t0
        for proc in procs:
            proc.join(30)
        sampler.stop.set()
        sampler.join()
        pids = server_pids(master)
        end_mb = rss_mb(pids)
        hwm = {pid: _status_kb(pid, "VmHWM") / 1024 for pid in pids}
        con = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True)
        stored = con.execute("SELECT count(*) FROM records").fetchone()[0]
        con.close()

    by_op = {op: [] for op in OPS}
    records = {op: 0 for op in OPS}
    errors = {op: 0 for op in OPS}
    first_errors = []
    for d in devices:
        for op, secs, k in d["results"]:
            by_op[op].append(secs)
            records[op] += k
        for op, msg in d["errors"]:
            errors[op] += 1
            if len(first_errors) < 5:
                first_errors.append(f"{op}: {msg}")
    retries = sum(d["retries"] for d in devices)
    busy = sum(d["busy_retries"] for d in devices)
    expected = sum(counts.values()) + sum(d["creates"] for d in devices)
    lost = stored - expected

    print(f"setup (accounts, {sum(counts.values()):,} village records pushed, cursors): "
          f"{setup:.0f} s; the day: {wall:.1f} s", flush=True)
    head = f"{'operation':22} {'count':>6} {'records':>8} {'p50 ms':>8} {'p99 ms':>8} " \
           f"{'max ms':>8} {'errors':>6}"
    print(head)
    for op in OPS:
        v = by_op[op]
        p50, p99 = _pct(v, 0.5), _pct(v, 0.99)
        fmt = (lambda x: "-" if x is None else f"{1000 * x:,.0f}")
        print(f"{op:22} {len(v):>6} {records[op]:>8,} {fmt(p50):>8} {fmt(p99):>8} "
              f"{fmt(max(v) if v else None):>8} {errors[op]:>6}")
        key = op.split()[0]
        out[f"{key}_count"] = len(v)
        out[f"{key}_p50_ms"] = None if p50 is None else 1000 * p50
        out[f"{key}_p99_ms"] = None if p99 is None else 1000 * p99
        out[f"{key}_errors"] = errors[op]
    total_req = sum(len(v) for v in by_op.values())
    total_err = sum(errors.values())
    print(f"errors: {total_err} (0 expected); connection resets retried: {retries}; "
          f"503s retried after Retry-After: {busy}; "
          f"records stored {stored:,}, expected {expected:,} ({lost:+d})")
    for line in first_errors:
        print(f"  {line}")
    print(f"server memory (RSS, {len(pids)} processes: gunicorn master + workers): "
          f"idle {idle_mb:.0f} MB, peak {sampler.peak:.0f} MB, at the end {end_mb:.0f} MB; "
          f"per-process high-water: " + ", ".join(f"{v:.0f}" for v in sorted(hwm.values()))
          + " MB", flush=True)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"(2 cores; the clients run on the same machine)")
    out.update({"operations": total_req, "errors": total_err, "retries": retries,
                "busy_retries": busy,
                "stored_minus_expected": lost, "rss_idle_mb": idle_mb,
                "rss_peak_mb": sampler.peak, "rss_end_mb": end_mb, "wall_s": wall,
                "load": load[0]})
    return out


if __name__ == "__main__":
    common.script_main(run, __doc__)

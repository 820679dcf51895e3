"""Peers: the same records pushed and pulled through fieldsync, Kinto and
pouchdb-server, in the same run, with the ratios.

- fieldsync: `fieldsync-server serve`, push batches of 500, pull pages of 1,000.
- Kinto (memory backend): `POST /v1/batch` of 500 `PUT`s (batch limit raised
  from 25 to 1,000), pulled with `?_limit=1000` and its `Next-Page` links.
- pouchdb-server (CouchDB protocol, LevelDB): `_bulk_docs` of 500 docs,
  pulled with `_changes?include_docs=true&limit=1000`.

Each peer is installed by this script under bench/.peers/ (git-ignored), in
its own environment: a virtualenv for Kinto, an npm prefix for
pouchdb-server; never a dependency of the project. Where one cannot be
installed or started, the script says why and goes on. `--quick` and
`--smoke` only use peers already installed (installing takes minutes).

A peer stores the change as a plain document (no validation, no per-field
merge, no conflict log): the ratios price fieldsync's guarantees.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import BATCH, PEERS, Generator, Table, encode, push_body

PEER_AREA = "QN.PE.01"
# A device of its own: a device belongs to the first user who signs in on it,
# and the benchmarks share one database. As long as "bench-dev-1": the same bytes.
PEER_DEVICE = "bench-dev-p"
KINTO_VERSION = "26.5.0"
POUCHDB_VERSION = "4.2.0"
KINTO_DIR = PEERS / "kinto"
POUCH_DIR = PEERS / "pouchdb"

KINTO_INI = """\
[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = %(http_port)s
threads = 4

[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.memory
kinto.storage_url =
kinto.cache_backend = kinto.core.cache.memory
kinto.cache_url =
kinto.permission_backend = kinto.core.permission.memory
kinto.permission_url =
kinto.userid_hmac_secret = bench-not-a-secret
multiauth.policies = basicauth
multiauth.policy.basicauth.use = kinto.core.authentication.BasicAuthAuthenticationPolicy
kinto.bucket_create_principals = system.Authenticated
# The default of 25 sub-requests would make a batch of 500 twenty requests.
kinto.batch_max_requests = 1000
kinto.storage_max_fetch_size = 10000

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = WARNING
formatter = plain

[formatter_plain]
format = %(levelname)s %(name)s %(message)s
"""


# -- installing --------------------------------------------------------------

def _run(cmd, timeout, **kw) -> str | None:
    """None on success, else the reason (last lines of the output)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if p.returncode != 0:
        return " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
    return None


def kinto_exe() -> Path:
    return KINTO_DIR / "venv" / "bin" / "kinto"


def install_kinto(allow: bool) -> str | None:
    """Kinto in its own virtualenv; None when ready, else why not."""
    if kinto_exe().exists():
        return None
    if not allow:
        return "not installed (run `make bench` once to install it)"
    print(f"peers: installing kinto=={KINTO_VERSION} into {KINTO_DIR}/venv ...", flush=True)
    KINTO_DIR.mkdir(parents=True, exist_ok=True)
    why = _run([sys.executable, "-m", "venv", str(KINTO_DIR / "venv")], 120)
    why = why or _run([str(KINTO_DIR / "venv" / "bin" / "pip"), "install", "--quiet",
                       f"kinto=={KINTO_VERSION}"], 900)
    if why:
        shutil.rmtree(KINTO_DIR / "venv", ignore_errors=True)
        return f"pip install kinto failed: {why}"
    return None


def pouch_exe() -> Path:
    return POUCH_DIR / "node_modules" / ".bin" / "pouchdb-server"


def install_pouchdb(allow: bool) -> str | None:
    """pouchdb-server in its own npm prefix; None when ready, else why not."""
    if pouch_exe().exists():
        return None
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (pouchdb-server needs Node.js and npm)"
    if not allow:
        return "not installed (run `make bench` once to install it)"
    print(f"peers: installing pouchdb-server@{POUCHDB_VERSION} into {POUCH_DIR} ...",
          flush=True)
    POUCH_DIR.mkdir(parents=True, exist_ok=True)
    why = _run(["npm", "install", "--prefix", str(POUCH_DIR), "--no-audit", "--no-fund",
                "--loglevel=error", f"pouchdb-server@{POUCHDB_VERSION}"], 900)
    if why:
        return f"npm install pouchdb-server failed: {why}"
    return None


# -- running -----------------------------------------------------------------

class Process:
    """A peer server process on a free port, stopped by its pid on exit."""

    def __init__(self, argv, probe_path: str, cwd: Path, log: Path):
        self.argv, self.probe_path, self.cwd, self.log_path = argv, probe_path, cwd, log
        self.proc = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            common.wait_http(self.probe_path, timeout=60, proc=self.proc)
        except BaseException as exc:
            self.__exit__()
            tail = self.log_path.read_text()[-400:].strip() if self.log_path.exists() else ""
            raise RuntimeError(f"{exc}; log: {tail}") from None
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class KintoPeer:
    name = "Kinto (memory)"

    def __init__(self, tmp: Path):
        self.port = common.free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        ini = tmp / "kinto.ini"
        ini.write_text(KINTO_INI)
        self.process = Process([str(kinto_exe()), "start", "--ini", str(ini), "--port",
                                str(self.port)], self.url + "/", tmp, tmp / "kinto.log")

    def __enter__(self):
        import requests
        self.process.__enter__()
        self.http = requests.Session()
        token = base64.b64encode(b"bench:bench").decode()
        self.http.headers.update({"Authorization": f"Basic {token}",
                                  "Content-Type": "application/json"})
        self.http.put(self.url + "/buckets/bench", json={}, timeout=30).raise_for_status()
        self.collection = "/buckets/bench/collections/records"
        self.http.put(self.url + self.collection, json={}, timeout=30).raise_for_status()
        return self

    def __exit__(self, *exc):
        self.process.__exit__()

    def push(self, changes) -> bytes:
        body = {"defaults": {"method": "PUT"},
                "requests": [{"path": f"{self.collection}/records/{c['id']}",
                              "body": {"data": {k: v for k, v in c.items() if k != "id"}}}
                             for c in changes]}
        return encode(body)

    def send(self, body: bytes, n: int):
        r = self.http.post(self.url + "/batch", data=body, timeout=300)
        r.raise_for_status()
        bad = [x for x in r.json()["responses"] if x["status"] not in (200, 201)]
        if bad:
            raise RuntimeError(f"kinto: {len(bad)} of {n} failed: {bad[0]}")

    def pull_all(self, limit: int) -> int:
        url = f"{self.url}{self.collection}/records?_limit={limit}&_sort=last_modified"
        n = 0
        while url:
            r = self.http.get(url, timeout=300)
            r.raise_for_status()
            n += len(r.json()["data"])
            url = r.headers.get("Next-Page")
        return n


class PouchPeer:
    name = "pouchdb-server (LevelDB)"

    def __init__(self, tmp: Path):
        self.port = common.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = tmp / "pouch"
        data.mkdir()
        self.process = Process([str(pouch_exe()), "--port", str(self.port), "--dir", str(data),
                                "--no-stdout-logs"], self.url + "/", data, tmp / "pouch.log")

    def __enter__(self):
        import requests
        self.process.__enter__()
        self.http = requests.Session()
        self.http.headers["Content-Type"] = "application/json"
        self.http.put(self.url + "/bench", timeout=30).raise_for_status()
        return self

    def __exit__(self, *exc):
        self.process.__exit__()

    def push(self, changes) -> bytes:
        return encode({"docs": [{"_id": c["id"], **{k: v for k, v in c.items() if k != "id"}}
                                for c in changes]})

    def send(self, body: bytes, n: int):
        r = self.http.post(self.url + "/bench/_bulk_docs", data=body, timeout=300)
        r.raise_for_status()
        bad = [x for x in r.json() if not x.get("ok")]
        if bad:
            raise RuntimeError(f"pouchdb: {len(bad)} of {n} failed: {bad[0]}")

    def pull_all(self, limit: int) -> int:
        since, n = 0, 0
        while True:
            r = self.http.get(self.url + "/bench/_changes",
                              params={"include_docs": "true", "limit": limit, "since": since},
                              timeout=300)
            r.raise_for_status()
            page = r.json()
            n += len(page["results"])
            if len(page["results"]) < limit:
                return n
            since = page["last_seq"]


class FieldsyncPeer:
    name = "fieldsync"

    def __init__(self, tmp: Path):
        self.serving = common.serve("peer", PEER_AREA)

    def __enter__(self):
        server = self.serving.__enter__()
        self.client = server.client("peer", PEER_DEVICE)
        return self

    def __exit__(self, *exc):
        self.serving.__exit__(None, None, None)

    def push(self, changes) -> bytes:
        return encode(push_body(changes, self.client.node))

    def send(self, body: bytes, n: int):
        answer = self.client.push_raw(body)
        bad = [x for x in answer["results"] if x["status"] != "applied"]
        if bad:
            raise RuntimeError(f"fieldsync: {len(bad)} of {n} not applied: {bad[0]}")

    def pull_all(self, limit: int) -> int:
        return self.client.pull_all(limit)


# -- the comparison ------------------------------------------------------------

def _measure(peer_cls, batches_of_changes, warmup, rounds, limit):
    """(push rates, pull rates): each round pushes new records, then pulls all."""
    pushes, pulls = [], []
    with tempfile.TemporaryDirectory(prefix="fieldsync-peer-") as tmp, \
            peer_cls(Path(tmp)) as peer:
        peer.send(peer.push(warmup), len(warmup))
        for r in range(rounds):
            bodies = [(peer.push(b), len(b)) for b in batches_of_changes[r]]
            n = sum(k for _, k in bodies)
            t0 = time.perf_counter()
            for body, k in bodies:
                peer.send(body, k)
            pushes.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            got = peer.pull_all(limit)
            pulls.append(got / (time.perf_counter() - t0))
    return pushes, pulls, got


def run(mode: str = "full") -> dict:
    rounds = common.mode_rounds(mode, 3, 2)
    size = BATCH if mode != "smoke" else 50
    per_round = {"full": 6, "quick": 1, "smoke": 1}[mode]  # batches per round
    limit = 1000 if mode != "smoke" else 100
    allow_install = mode == "full"
    gen = Generator(seed=11, area=PEER_AREA, node=PEER_DEVICE)
    # The same changes for every system.
    work = [[gen.creates(size) for _ in range(per_round)] for _ in range(rounds)]
    warmup = gen.creates(10)

    peers = [FieldsyncPeer]
    skipped = {}
    for cls, install in ((KintoPeer, install_kinto), (PouchPeer, install_pouchdb)):
        why = install(allow_install)
        if why:
            skipped[cls.name] = why
        else:
            peers.append(cls)
    if common.server_available():
        skipped["fieldsync"] = common.server_available()
        peers.remove(FieldsyncPeer)

    results = {}
    for cls in peers:
        try:
            results[cls.name] = _measure(cls, work, warmup, rounds, limit)
        except Exception as exc:  # a peer that fails to run is reported, not fatal
            skipped[cls.name] = f"failed: {str(exc)[:300]}"

    n = size * per_round
    table = Table(f"peers: the same {n:,} records per round, pushed in batches of {size}, "
                  f"then all pulled in pages of {limit}")
    for name, (pushes, pulls, stored) in results.items():
        table.add(f"{name}: push", "records/s", pushes)
        table.add(f"{name}: pull", "records/s", pulls, f"{stored:,} records at the end")
    table.print()
    out = {"skipped": skipped}
    ours = results.get("fieldsync")
    for name, (pushes, pulls, _) in results.items():
        med_push, med_pull = common.summary(pushes)[0], common.summary(pulls)[0]
        out[name] = {"push": med_push, "pull": med_pull}
        if ours and name != "fieldsync":
            p = common.summary(ours[0])[0] / med_push
            q = common.summary(ours[1])[0] / med_pull
            out[name].update(push_ratio=p, pull_ratio=q)
            print(f"ratio fieldsync / {name}: push {p:.2f}x, pull {q:.2f}x")
    for name, why in skipped.items():
        print(f"peer skipped: {name}: {why}")
    pouch = out.get(PouchPeer.name)
    if pouch and "push_ratio" in pouch:
        for what, ratio, goal in (("push", pouch["push_ratio"], 2),
                                  ("pull", pouch["pull_ratio"], 4)):
            verdict = "met" if ratio >= goal else f"missed ({ratio:.2f}x)"
            print(f"goal: {what} >= {goal}x pouchdb-server: {verdict}")
    return out


def main(argv=None):
    common.script_main(run, __doc__, argv)


if __name__ == "__main__":
    main()

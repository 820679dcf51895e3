"""What every benchmark shares: the machine, the rounds and their table, a
real server process, and realistic records.

Benchmarks measure; they never assert. Each script repeats a measurement a
few rounds and prints the median and the min–max, so one noisy round (a
checkpoint, a page-cache miss) shows as spread instead of hiding in a mean.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import json
import os
import platform
import random
import re
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / ".peers"
VENV_BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from schemas import clock as hlc  # noqa: E402

AREA = "QN.LM.03"
PASSWORD = "bench-password-not-secret"
BATCH = 500


# -- the machine ---------------------------------------------------------------

def machine() -> dict:
    """CPU model, cores, RAM, Python, SQLite and the date: printed with every table."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": ram,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "os": f"{platform.system()} {platform.release()}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['os']}; "
            f"Python {m['python']}, SQLite {m['sqlite']}; {m['date']}")


def print_machine():
    print(machine_line(), flush=True)


# -- rounds and tables -----------------------------------------------------------

def summary(values):
    """(median, min, max) of the measured values."""
    return statistics.median(values), min(values), max(values)


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


class Table:
    """Rows of (name, unit, values...) printed with median and min–max.

    :param title: what was measured, printed above the table.
    """

    def __init__(self, title: str):
        self.title = title
        self.rows: list[tuple] = []

    def add(self, name: str, unit: str, values, note: str = ""):
        """One measured quantity over several rounds (or one value)."""
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        med, lo, hi = summary(values)
        self.rows.append((name, unit, med, lo, hi, len(values), note))
        return med

    def text(self) -> str:
        head = ("measure", "unit", "median", "min", "max", "rounds", "")
        body = [(n, u, _fmt(m), _fmt(lo), _fmt(hi), str(k), note)
                for n, u, m, lo, hi, k, note in self.rows]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(6)]
        lines = [f"\n== {self.title}"]
        for r in [head, *body]:
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
            cells += [r[i].rjust(widths[i]) for i in range(2, 6)]
            lines.append("  ".join(cells) + (f"  {r[6]}" if r[6] else ""))
        return "\n".join(lines)

    def print(self):
        print(self.text(), flush=True)


# -- ids and clocks -------------------------------------------------------------

def uuid7(millis: int | None = None) -> str:
    """A version 7 UUID (RFC 9562): 48-bit ms timestamp, then random bits.

    Time-ordered ids keep SQLite's primary-key index writes local (DESIGN.md).
    """
    ms = time.time_ns() // 1_000_000 if millis is None else millis
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def device_id(n: int = 1) -> str:
    return f"bench-dev-{n}"


def device_clock(node: str) -> hlc.Clock:
    """A device HLC on the real wall clock, as the library keeps one."""
    return hlc.Clock(node)


# -- realistic records ----------------------------------------------------------
# Values follow DOMAIN.md F4/F7 and the shipped forms (schemas/forms/); the
# smoke test validates them with the forms compiler, so they stay valid as
# the forms evolve.

_PROVIDERS = ["doctor", "assistant_doctor", "midwife", "nurse", "village_midwife", "vhw"]
_ANC_PLACES = ["CHS", "district", "home", "outreach"]
_DANGER = ["bleeding", "severe_headache_blurred_vision", "fever", "reduced_fetal_movement"]
_TOPICS = ["nutrition", "birth_preparedness", "danger_signs", "breastfeeding",
           "family_planning", "HB_use"]


class Generator:
    """Realistic changes from one health worker's device.

    A worker follows a few dozen pregnancies and children, so refs repeat;
    ids are UUIDv7 and clocks come from the device's HLC, as on a device.

    :param seed: makes values (not ids or clocks) reproducible.
    :param node: the device id (the clock's node).
    :param area: the records' area.
    """

    def __init__(self, seed: int = 1, node: str = "bench-dev-1", area: str = AREA,
                 today: date | None = None):
        self.rng = random.Random(seed)
        self.clock = device_clock(node)
        self.area = area
        self.today = today or date.today()
        # (id, LMP): visits fall 4-44 weeks after the LMP, as the form checks.
        self.pregnancies = [(uuid7(), self.today - timedelta(days=self.rng.randint(40, 290)))
                            for _ in range(40)]
        self.children = [(uuid7(), self.today - timedelta(days=self.rng.randint(30, 1750)))
                         for _ in range(60)]
        self.forms = load_forms()

    def _day(self, back_max: int, back_min: int = 1) -> date:
        return self.today - timedelta(days=self.rng.randint(back_min, back_max))

    def anc_visit(self) -> dict:
        r = self.rng
        pregnancy, lmp = r.choice(self.pregnancies)
        span = (self.today - lmp).days
        visit = lmp + timedelta(days=r.randint(28, max(28, min(span, 300))))
        ga_weeks = (visit - lmp).days // 7
        checkup = r.random() < 0.8
        data = {
            "pregnancy_id": pregnancy,
            "lmp_date": lmp.isoformat(),
            "visit_date": visit.isoformat(),
            "contact_type": "anc_checkup" if checkup else "home_followup_by_vhw",
            # anc_visit v2: a check-up is never by a VHW (their visit is a home follow-up).
            "provider": r.choice(_PROVIDERS[:-1] if checkup else _PROVIDERS),
            "place": r.choice(_ANC_PLACES),
        }
        if checkup:
            sys_bp = r.randint(95, 135)
            data.update({
                "weight_kg": round(r.uniform(42, 75), 1),
                "bp_systolic": sys_bp,
                "bp_diastolic": r.randint(55, min(85, sys_bp - 10)),
                "oedema": r.random() < 0.05,
                "urine_protein": r.choice(["neg", "neg", "neg", "trace", "not_done"]),
            })
            if r.random() < 0.2:
                data["height_cm"] = round(r.uniform(145, 165), 1)
        if ga_weeks >= 12:
            data["fetal_heart_rate"] = r.randint(120, 160)
        if ga_weeks >= 20:
            data["fundal_height_cm"] = min(45, max(5, ga_weeks + r.randint(-2, 2)))
        if ga_weeks >= 32:
            data["presentation"] = r.choice(["cephalic", "cephalic", "breech", "unknown"])
        if r.random() < 0.5:
            data["haemoglobin_g_dl"] = round(r.uniform(9.0, 13.5), 1)
        if r.random() < 0.4:
            data["tetanus_dose"] = r.choice(["none", "TT1", "TT2", "booster"])
        if r.random() < 0.6:
            data["ifa_tablets_given"] = r.choice([30, 60, 90])
        danger = r.random() < 0.1
        data["danger_signs"] = [r.choice(_DANGER)] if danger else ["none"]
        data["referred_to"] = r.choice(["CHS", "district"]) if danger else "none"
        if r.random() < 0.7:
            data["counselling_topics"] = sorted(r.sample(_TOPICS, r.randint(1, 3)))
        if r.random() < 0.7:
            data["next_visit_date"] = (visit + timedelta(days=r.choice([14, 28, 30]))).isoformat()
        return self._change("anc_visit", data)

    def growth(self) -> dict:
        r = self.rng
        child, dob = r.choice(self.children)
        measured = max(dob + timedelta(days=1), self._day(60))
        age = (measured - dob).days
        data = {
            "child_id": child,
            "child_dob": dob.isoformat(),
            "child_sex": r.choice(["male", "female"]),        # growth v2 (dropped for v1)
            "child_dob_precision": "exact",
            "measured_on": measured.isoformat(),
            "weight_kg": round(r.uniform(3.0, 6.0) + age * 0.0055, 2),
            "lenhei_cm": round(r.uniform(50.0, 56.0) + age * 0.028, 1),
            "position": "lying" if age < 731 else "standing",
            "oedema_bilateral": False,
            "referred_to": "none",
            "counselled": r.random() < 0.8,
        }
        if 183 <= age <= 1826:
            data["muac_mm"] = r.randint(125, 170)
            if r.random() < 0.3:
                # growth v2: 100 000 IU at 6–11 months, 200 000 IU from 12 months.
                data["vitamin_a_given"] = r.choice(["none", "100k_iu" if age < 365 else "200k_iu"])
        if _severe(data, age):   # growth v2: SAM (by WHZ) must be referred, as a worker would
            data["referred_to"] = "CHS"
        return self._change("growth", data)

    def _change(self, form: str, data: dict) -> dict:
        data = fit_to_form(self.forms.get(form), data)
        return {"id": uuid7(), "form": form, "form_version": self.forms_version(form),
                "area": self.area, "data": data, "hlc": self.clock.now()}

    def forms_version(self, form: str) -> int:
        d = self.forms.get(form)
        return int(d["version"]) if d else 1

    def create(self) -> dict:
        """One create: anc_visit and growth alternate, the two commonest forms."""
        return self.anc_visit() if self.rng.random() < 0.5 else self.growth()

    def creates(self, n: int) -> list[dict]:
        return [self.create() for _ in range(n)]

    def edit(self, stored: dict) -> dict:
        """An edit of a stored create: one or two of its fields, based on their clocks."""
        r = self.rng
        editable = {"anc_visit": ["weight_kg", "haemoglobin_g_dl", "ifa_tablets_given",
                                  "provider"],
                    "growth": ["weight_kg", "counselled", "lenhei_cm"]}[stored["form"]]
        present = [k for k in editable if k in stored["data"]]
        data = {}
        for name in r.sample(present, min(len(present), r.randint(1, 2))):
            old = stored["data"][name]
            if name == "counselled":
                data[name] = not old
            elif name == "ifa_tablets_given":
                data[name] = 120 - old if old != 60 else 90
            elif name == "provider":
                data[name] = "midwife" if old != "midwife" else "nurse"
            else:
                data[name] = round(old + 0.1 * r.randint(1, 5), 1)
        # Based on the value the device last saw: a sequential edit, no conflict.
        change = {"id": stored["id"], "form": stored["form"],
                  "form_version": stored["form_version"], "area": stored["area"],
                  "data": data, "hlc": self.clock.now(),
                  "bases": {k: stored["hlc"] for k in data}}
        return change


def load_forms(version: int | None = None) -> dict:
    """{form_id: latest shipped definition} from schemas/forms/, or {} before they
    exist; with `version`, that version's definitions only."""
    out = {}
    pattern = f"*/v{version}.json" if version else "*/v*.json"
    for path in sorted((ROOT / "schemas" / "forms").glob(pattern)):
        with contextlib.suppress(ValueError, OSError):
            d = json.loads(path.read_text())
            if d.get("id") not in out or d["version"] > out[d["id"]]["version"]:
                out[d["id"]] = d
    return out


def _severe(data: dict, age: int) -> bool:
    """Whether WHO's z-scores class this generated measurement SAM."""
    from schemas.compute import REGISTRY
    return REGISTRY["who_zscores.nutrition_class"](
        sex=data["child_sex"], dob_precision="exact", age_days=age, weight=data["weight_kg"],
        lenhei=data["lenhei_cm"], position=data["position"], oedema=False,
        muac=data.get("muac_mm")) == "sam"


def fit_to_form(definition: dict | None, data: dict) -> dict:
    """Keep only the fields the shipped definition has (the forms are the truth)."""
    if not definition:
        return data
    names = {f["name"] for f in definition.get("fields", [])}
    return {k: v for k, v in data.items() if k in names}


def push_body(changes: list[dict], node: str = "bench-dev-1") -> dict:
    """A push request body (DESIGN.md "HTTP API v1")."""
    return {"device_id": node, "batch_id": str(uuid.uuid4()),
            "device_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "app_version": "bench", "records": changes}


def encode(obj) -> bytes:
    """Compact JSON, as the device library sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def gzipped(raw: bytes, level: int = 1) -> bytes:
    return gzip.compress(raw, compresslevel=level, mtime=0)


# -- the real server process -----------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_available() -> str | None:
    """None when `fieldsync-server` can run here; otherwise why not."""
    exe = VENV_BIN / "fieldsync-server"
    if not exe.exists():
        return f"{exe} is not installed"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    if proc.returncode != 0 or "serve" not in proc.stdout:
        return "fieldsync-server --help failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    return None


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None):
    import requests
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class Server:
    """`fieldsync-server serve` on a free 127.0.0.1 port with a fresh database.

    Use as a context manager; the process is stopped (by its pid) on exit.

    :param workers: gunicorn worker processes (`serve --workers`).
    :param db_path: an existing database to serve instead of a fresh one
        (already initialised, e.g. preloaded for the scaling benchmark).
    """

    def __init__(self, workers: int = 2, db_path: str | Path | None = None):
        self.workers = workers
        self.tmp = tempfile.TemporaryDirectory(prefix="fieldsync-bench-")
        self.db_path = str(db_path or Path(self.tmp.name) / "fieldsync.db")
        self.fresh = db_path is None
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def cli(self, *args, stdin: str | None = None) -> str:
        proc = subprocess.run([str(VENV_BIN / "fieldsync-server"), "--db", self.db_path, *args],
                              input=stdin, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"fieldsync-server {' '.join(args[:2])} failed: "
                               f"{proc.stderr.strip()[-500:]}")
        return proc.stdout

    def add_user(self, name: str, role: str = "health_worker", areas=(AREA,)):
        args = ["user", "add", name, "--role", role]
        for a in areas:
            args += ["--area", a]
        # The password goes on stdin (never the command line); confirmed twice.
        self.cli(*args, stdin=f"{PASSWORD}\n{PASSWORD}\n")

    def __enter__(self):
        if self.fresh:
            self.cli("init")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(Path(self.tmp.name) / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "fieldsync-server"), "--db", self.db_path, "serve",
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(self.url + "/api/v1/", proc=self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: gunicorn's quick shutdown (SIGTERM waits for idle
            # keep-alive connections); nothing is in flight at this point.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        self.tmp.cleanup()

    def client(self, username: str, node: str) -> "Client":
        return Client(self.url, username, node)


class Client:
    """A logged-in HTTP session for one device (plain requests; resets retried)."""

    def __init__(self, url: str, username: str, node: str):
        import requests
        from urllib3.util import Retry
        self.url, self.node = url, node
        self.http = requests.Session()
        # gunicorn closes a keep-alive connection idle for 2 s; a request sent
        # on it just as it closes is reset (seen once in `make bench`: the
        # four clients wait while the next round's bodies are generated).
        # Resending is safe: a push replays its stored answer by batch id.
        self.http.mount("http://", requests.adapters.HTTPAdapter(max_retries=Retry(
            total=2, connect=2, read=2, status=0, allowed_methods=None, backoff_factor=0)))
        r = self.http.post(url + "/api/v1/auth/login", json={
            "username": username, "password": PASSWORD, "device_id": node,
            "app_version": "bench"}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"login as {username} failed: {r.status_code} {r.text[:300]}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['token']}"

    def push_raw(self, body: bytes, gzip_body: bool = False) -> dict:
        """POST an encoded push body; returns the decoded answer, raising on non-200."""
        headers = {"Content-Type": "application/json"}
        if gzip_body:
            headers["Content-Encoding"] = "gzip"
        r = self.http.post(self.url + "/api/v1/sync/push", data=body, headers=headers,
                           timeout=300)
        if r.status_code != 200:
            raise RuntimeError(f"push failed: {r.status_code} {r.text[:300]}")
        return orjson.loads(r.content)  # as the device library decodes answers

    def push(self, changes: list[dict]) -> dict:
        answer = self.push_raw(encode(push_body(changes, self.node)))
        bad = [x for x in answer["results"] if x["status"] not in ("applied", "unchanged")]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(changes)} not applied; first: "
                               f"{json.dumps(bad[0])[:400]}")
        return answer

    def pull_page(self, cursor: str | None, limit: int, clocks: str = "common",
                  gzip: bool = True) -> tuple[dict, int]:
        """One pull page: (decoded answer, response bytes on the wire).

        As the device library pulls: common clocks, zstd (else gzip), orjson
        decoding; ``clocks="all"`` is DESIGN's default (every field's clock),
        ``"sparse"`` what devices asked for before ``common``.
        """
        params = {"limit": limit, "clocks": clocks}
        if cursor:
            params["cursor"] = cursor
        headers = {} if gzip else {"Accept-Encoding": "identity"}
        r = self.http.get(self.url + "/api/v1/sync/pull", params=params, headers=headers,
                          timeout=300)
        if r.status_code != 200:
            raise RuntimeError(f"pull failed: {r.status_code} {r.text[:300]}")
        return orjson.loads(r.content), len(r.content)

    def pull_all(self, limit: int, decode: bool = True, clocks: str = "common",
                 gzip: bool = True) -> int:
        """Pull everything from the start; returns the number of records.

        :param decode: False reads each page's cursor from its tail and counts
            records without decoding the JSON: the server and HTTP alone.
        """
        cursor, n = None, 0
        while True:
            if decode:
                page, _ = self.pull_page(cursor, limit, clocks, gzip)
                n += len(page["records"])
                cursor, more = page["cursor"], page["more"]
                del page  # as the device library: one decoded page held at a time
            else:
                params = {"limit": limit, "clocks": clocks, **({"cursor": cursor} if cursor else {})}
                r = self.http.get(self.url + "/api/v1/sync/pull", params=params, timeout=300)
                if r.status_code != 200:
                    raise RuntimeError(f"pull failed: {r.status_code} {r.text[:300]}")
                body = r.content
                n += body.count(b'"seq":')
                tail = body[-2000:]
                cursor = re.search(rb'"cursor":\s*"([^"]+)"', tail).group(1).decode()
                more = re.search(rb'"more":\s*(true|false)', tail).group(1) == b"true"
            if not more:
                return n


# One server for every script of a `--quick`/`--smoke` run (run.py turns this
# on): starting, initialising and stopping a server costs seconds each time,
# which a one-minute run cannot spend six times. Each script then works in its
# own area. Full runs give every script a fresh server and database.
SHARE = False
_shared: Server | None = None


@contextlib.contextmanager
def serve(user: str, area: str = AREA, workers: int = 2):
    """A running server holding `user` (health worker of `area`).

    Fresh for this block, or the run's shared one when `SHARE` is on.
    """
    global _shared
    if not SHARE:
        with Server(workers=workers) as srv:
            srv.add_user(user, areas=(area,))
            yield srv
        return
    if _shared is None:
        _shared = Server().__enter__()
        _shared.users = set()
        atexit.register(_shared.__exit__)
    if user not in _shared.users:
        _shared.add_user(user, areas=(area,))
        _shared.users.add(user)
    yield _shared


def mode_rounds(mode: str, full: int, quick: int) -> int:
    return {"full": full, "quick": quick, "smoke": 1}[mode]


def script_main(run, doc, argv=None):
    """A benchmark script run alone: its mode flags, the machine line, `run(mode)`."""
    mode = parse_mode(argv, doc.splitlines()[0])
    print_machine()
    return run(mode)


def parse_mode(argv=None, description: str = ""):
    """`--quick` / `--smoke` for every script; returns 'full', 'quick' or 'smoke'."""
    import argparse
    p = argparse.ArgumentParser(description=description)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="fewer, smaller rounds (under a minute in all)")
    g.add_argument("--smoke", action="store_true", help="one tiny round: checks the script runs")
    a = p.parse_args(argv)
    return "smoke" if a.smoke else "quick" if a.quick else "full"

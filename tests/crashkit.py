"""Helpers for the fault tests: valid records from a form definition, devices
that push until acknowledged, the model of what was sent, and its check.

The crash test (tests/test_crash.py) and the API fuzz (tests/test_api_fuzz.py)
share these. Nothing here mocks the server: devices speak real HTTP to the
real `fieldsync-server serve` process, and the check reads the real SQLite
file and a real full pull.
"""
from __future__ import annotations

import gzip
import json
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import requests

from schemas.clock import Clock
from server.storage import decode_state

ROOT = Path(__file__).resolve().parent.parent
FORMS_DIR = ROOT / "schemas" / "forms"
PUSH = "/api/v1/sync/push"
PULL = "/api/v1/sync/pull"
#: Statuses a valid change may get; `rejected`/`forbidden` mean a harness or server bug.
GOOD_STATUSES = {"applied", "unchanged", "conflict"}
#: The model's key for a record's tombstone register (no form field has this name).
TOMBSTONE = "\0deleted"


# -- forms ----------------------------------------------------------------------

def load_form(form_id, version=None):
    """The bundled definition of `form_id` (latest version unless given), or None."""
    folder = FORMS_DIR / form_id
    files = sorted(folder.glob("v*.json"), key=lambda p: int(p.stem[1:])) if folder.is_dir() else []
    if version is not None:
        files = [p for p in files if p.stem == f"v{version}"]
    return json.loads(files[-1].read_text(encoding="utf-8")) if files else None


def _compiled(definition):
    """The form compiler's view of the definition, or None while it is not written."""
    try:
        from schemas import forms
    except ImportError:
        return None
    return forms.compile_form(definition)


def _bound_is_literal(bound):
    return bound is None or isinstance(bound, (int, float)) or (
        isinstance(bound, str) and bound.startswith("today"))


def _mentions(node, name):
    """True when a rule, bound or compute input (data, not code) names field `name`."""
    if isinstance(node, dict):
        return any(_mentions(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, name) for v in node)
    return node == name


_RULE_KEYS = ("relevant", "min", "max", "compute", "min_count", "max_count")


class FormSampler:
    """Valid creates and edits for one form, read from its definition.

    Edits touch only *independent* fields (no skip logic, no bound on another
    field, no other field's rule mentioning them), so any mix of concurrent
    valid edits is still a valid record and every change gets `applied`,
    `unchanged` or `conflict`, never `rejected`.
    """

    def __init__(self, definition):
        self.definition = definition
        self.form = _compiled(definition)
        self.fields = [f for f in definition["fields"] if f["type"] != "computed"]
        # Everything that could tie one field to another: other fields' rules
        # and the form-level checks.
        rules = [{k: v for k, v in f.items() if k in _RULE_KEYS}
                 for f in definition["fields"]] + [definition.get("checks", [])]
        self.editable = [
            f["name"] for f in self.fields
            if f["type"] in ("integer", "decimal", "boolean", "choice", "multi_choice",
                             "string", "text")
            and "relevant" not in f and "pattern" not in f
            and _bound_is_literal(f.get("min")) and _bound_is_literal(f.get("max"))
            and not any(_mentions(r, f["name"]) for r in rules)]
        if not self.editable:
            raise ValueError(f"form {definition['id']} has no independent field to edit")
        self._by_name = {f["name"]: f for f in self.fields}

    @property
    def id(self):
        return self.definition["id"]

    @property
    def version(self):
        return self.definition["version"]

    # values ------------------------------------------------------------------

    def value(self, spec, rng, today=None):
        """A random valid value for one field (literal bounds honoured)."""
        today = today or date.today()
        kind = spec["type"]
        lo, hi = spec.get("min"), spec.get("max")
        if kind == "integer":
            lo = lo if isinstance(lo, (int, float)) else 0
            hi = hi if isinstance(hi, (int, float)) else lo + 50
            return rng.randint(int(lo), int(hi))
        if kind == "decimal":
            lo = lo if isinstance(lo, (int, float)) else 0
            hi = hi if isinstance(hi, (int, float)) else lo + 50
            return round(rng.uniform(lo, hi), 1)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "choice":
            return rng.choice(spec["choices"])["value"]
        if kind == "multi_choice":
            values = [c["value"] for c in spec["choices"]]
            n = rng.randint(max(1, spec.get("min_count", 1)),
                            min(len(values), spec.get("max_count", 3), 3))
            return sorted(rng.sample(values, n), key=values.index)
        if kind in ("string", "text"):
            n = rng.randint(max(spec.get("min_length", 2), 2),
                            max(min(spec.get("max_length", 12), 12), spec.get("min_length", 2), 2))
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
        if kind == "date":
            return (today - timedelta(days=rng.randint(2, 20))).isoformat()
        if kind == "time":
            return f"{rng.randint(7, 17):02d}:{rng.choice([0, 15, 30, 45]):02d}"
        if kind == "datetime":
            return (datetime.now(timezone.utc) - timedelta(days=3)).isoformat(timespec="seconds")
        if kind == "ref":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if kind == "geopoint":
            return {"lat": 21.0, "lon": 107.0}
        if kind == "repeat":
            n = max(spec.get("min_count", 1), 1)
            return [{s["name"]: self.value(s, rng, today) for s in spec["fields"]
                     if s.get("required") and "relevant" not in s} for _ in range(n)]
        raise ValueError(f"no sampler for field type {kind!r}")

    def create(self, rng):
        """A complete, valid record's data (checked by the form compiler when it exists)."""
        for _ in range(50):
            data = {}
            for spec in self.fields:
                if "relevant" in spec:
                    continue
                if spec.get("required") or rng.random() < 0.5:
                    data[spec["name"]] = self._create_value(spec, data, rng)
            if self.form is None:
                return data
            checked = self.form.validate_create(data)
            if not checked.errors:
                return data
        raise AssertionError(f"cannot build a valid {self.id}: {checked.errors}")

    def _create_value(self, spec, data, rng):
        # An upper bound on another field ("0 to attendees_total"): stay at the
        # low end, which every value of the other field allows.
        bound = spec.get("max")
        if isinstance(bound, dict) and spec["type"] in ("integer", "decimal"):
            lo = spec.get("min") if isinstance(spec.get("min"), (int, float)) else 0
            other = data.get(bound.get("field"))
            return min(lo, other) if isinstance(other, (int, float)) else lo
        return self.value(spec, rng)

    def edit(self, rng, n=None):
        """{field: value} for 1-3 independent fields."""
        names = rng.sample(self.editable, n or rng.randint(1, min(3, len(self.editable))))
        return {name: self.value(self._by_name[name], rng) for name in names}

    def normalise(self, data):
        """Values as the server stores them (canonical form), for the model."""
        if self.form is None:
            return dict(data)
        checked = self.form.validate_change(data)
        assert not checked.errors, checked.errors
        return dict(checked.data)


def pick_form(preferred=("group_session", "household")):
    """The first preferred form that is bundled and has independent fields."""
    for form_id in preferred:
        definition = load_form(form_id)
        if definition is not None:
            try:
                return FormSampler(definition)
            except ValueError:
                continue
    return None


# -- the model of what devices sent -----------------------------------------------

@dataclass
class Sent:
    """One change as sent: the record id, and each field's (clock, value)."""
    id: str
    device: str
    create: bool
    fields: dict            # name (TOMBSTONE for a delete/restore) -> (clock, normalised value)


@dataclass
class Batch:
    """One push as sent (`body`, resent byte for byte) and whether it was acknowledged."""
    device: str
    batch_id: str
    body: bytes
    changes: list
    acked: bool = False
    attempts: int = 0
    answer: dict | None = None


@dataclass
class Stats:
    kills: int = 0
    batches: int = 0
    acked: int = 0
    attempts: int = 0
    changes: int = 0
    creates: int = 0
    shared_edits: int = 0
    deletes: int = 0
    statuses: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def retries(self):
        return self.attempts - self.batches

    def summary(self, records, conflicts=0):
        s = dict(sorted(self.statuses.items()))
        return (f"kills={self.kills} batches={self.batches} acked={self.acked} "
                f"attempts={self.attempts} retries={self.retries} changes={self.changes} "
                f"creates={self.creates} shared_edits={self.shared_edits} deletes={self.deletes} "
                f"records_on_server={records} conflicts_logged={conflicts} statuses={s}")


class Device:
    """One device: its own id, token and HLC; builds batches and pushes them
    until a 200 answer, resending the same body under the same batch id."""

    def __init__(self, base_url, device_id, token, login_hlc, area, sampler, rng,
                 shared_ids, stats, retry_budget_s=60.0):
        self.url = base_url
        self.device_id = device_id
        self.token = token
        self.clock = Clock(device_id)
        self.clock.observe(login_hlc)
        self.area = area
        self.sampler = sampler
        self.rng = rng
        self.shared = shared_ids
        self.own = set()         # ids of the records this device created
        self.seen = {}           # (id, field) -> clock this device last wrote
        self.stats = stats
        self.http = requests.Session()
        self.batches = []
        self.retry_budget_s = retry_budget_s

    def change(self, record_id, data, create, deleted=None):
        """A wire change: each field its own clock, `hlc` the newest, `bases` when
        known; `deleted` True/False makes it a delete/restore (tombstone clock = hlc)."""
        clocks = {name: self.clock.now() for name in data}
        hlc = max(clocks.values()) if clocks else self.clock.now()
        bases = {n: self.seen[(record_id, n)] for n in data if (record_id, n) in self.seen}
        wire = {"id": record_id, "form": self.sampler.id, "form_version": self.sampler.version,
                "area": self.area, "data": data, "hlc": hlc,
                "clocks": {n: c for n, c in clocks.items() if c != hlc}}
        if bases:
            wire["bases"] = bases
        for name, c in clocks.items():
            self.seen[(record_id, name)] = c
        norm = self.sampler.normalise(data) if data else {}
        fields = {name: (clocks[name], norm[name]) for name in data}
        if deleted is not None:
            wire["deleted"] = deleted
            fields[TOMBSTONE] = (hlc, deleted)
        return wire, Sent(record_id, self.device_id, create, fields)

    def new_batch(self, size, creates_only=False):
        """The next batch: creates, edits of own records, edits of shared ones."""
        wires, sents = [], []
        for _ in range(size):
            roll = 0.0 if creates_only else self.rng.random()
            if roll < 0.35 or not self.own:
                rid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
                wire, sent = self.change(rid, self.sampler.create(self.rng), create=True)
                self.own.add(rid)
            elif roll < 0.4:  # delete or restore one of its own or a shared record
                rid = self.rng.choice(sorted(self.own) + self.shared)
                wire, sent = self.change(rid, {}, create=False,
                                         deleted=self.rng.random() < 0.7)
            elif roll < 0.65 or not self.shared:
                rid = self.rng.choice(sorted(self.own))
                wire, sent = self.change(rid, self.sampler.edit(self.rng), create=False)
            else:
                rid = self.rng.choice(self.shared)
                wire, sent = self.change(rid, self.sampler.edit(self.rng), create=False)
            wires.append(wire)
            sents.append(sent)
        batch_id = f"b-{self.device_id}-{len(self.batches):05d}"
        body = json.dumps({"device_id": self.device_id, "batch_id": batch_id,
                           "device_time": datetime.now(timezone.utc).isoformat(),
                           "app_version": "crash-test", "records": wires}).encode()
        batch = Batch(self.device_id, batch_id, body, sents)
        self.batches.append(batch)
        return batch

    def push_until_acked(self, batch, stop=None):
        """Send the same body until 200; give up only when `stop` is set and the
        server still does not answer, or after the retry budget."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if self.rng.random() < 0.3:  # some batches gzipped, as devices on 2G send them
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(batch.body)
        else:
            body = batch.body
        deadline = time.monotonic() + self.retry_budget_s
        failures = 0
        while True:
            batch.attempts += 1
            try:
                resp = self.http.post(self.url + PUSH, data=body, headers=headers,
                                      timeout=(2, 15))
            except requests.RequestException:
                resp = None
            if resp is not None and resp.status_code == 200:
                answer = resp.json()
                batch.acked, batch.answer = True, answer
                self.clock.observe(answer["hlc"])
                return True
            if resp is not None and resp.status_code < 500:
                # 4xx for a valid batch is a server bug; 409 would mean the
                # resend was not recognised as the same batch.
                raise AssertionError(f"{batch.batch_id}: HTTP {resp.status_code} {resp.text[:500]}")
            if (stop is not None and stop.is_set() and batch.attempts > 50) \
                    or time.monotonic() > deadline:
                return False
            # Jittered exponential backoff, capped low: the server is back within ~1 s.
            time.sleep(self.rng.uniform(0.5, 1.0) * min(0.25, 0.01 * 2 ** min(failures, 5)))
            failures += 1


def await_ready(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/api/v1/", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer")


# -- checking the server against the model ------------------------------------------

def read_db(path):
    """{id: row} with state decoded, plus the integrity check and seq/id counts."""
    conn = sqlite3.connect(path)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        counts = conn.execute("SELECT count(*), count(DISTINCT id), count(DISTINCT seq), "
                              "count(seq) FROM records").fetchone()
        rows = {}
        for rid, state, data, seq, deleted in conn.execute(
                "SELECT id, state, data, seq, deleted FROM records"):
            rows[rid] = {"state": decode_state(state), "data": json.loads(data), "seq": seq,
                         "deleted": bool(deleted)}
        batches = {(d, b) for d, b in conn.execute("SELECT device_id, batch_id FROM batches")}
        conflicts = [(rid, name, json.loads(cur), json.loads(lose)) for rid, name, cur, lose in
                     conn.execute("SELECT record_id, field, current, losing FROM conflicts")]
    finally:
        conn.close()
    return {"integrity": [r[0] for r in integrity], "counts": counts, "rows": rows,
            "batches": batches, "conflicts": conflicts}


def registers(row):
    """{field: register} of a stored row, the tombstone under TOMBSTONE."""
    regs = dict(row["state"]["fields"])
    if row["state"].get("deleted") is not None:
        regs[TOMBSTONE] = row["state"]["deleted"]
    return regs


def verify(model_batches, db):
    """Every failure of the contract, as readable lines (empty list: all good).

    - every acknowledged change is present: the field's stored clock is at
      least the largest acknowledged clock for it;
    - no wrong winner: the stored (clock, value) is exactly one that was sent
      (an unacknowledged change may have committed before a kill: it may win
      only with the larger clock, and then exactly as sent);
    - nothing doubled: ids and seqs unique; nothing stored that nobody sent.
    """
    problems = []
    if db["integrity"] != ["ok"]:
        problems.append(f"integrity_check: {db['integrity'][:5]}")
    total, distinct_ids, distinct_seq, seqs = db["counts"]
    if not total == distinct_ids == distinct_seq == seqs:
        problems.append(f"doubled: rows={total} ids={distinct_ids} seqs={distinct_seq}/{seqs}")
    sent = {}        # (id, field) -> {clock: value}
    acked_max = {}   # (id, field) -> largest acknowledged clock
    created_acked, all_ids = set(), set()
    for batch in model_batches:
        for change in batch.changes:
            all_ids.add(change.id)
            if change.create and batch.acked:
                created_acked.add(change.id)
            for name, (clock, value) in change.fields.items():
                sent.setdefault((change.id, name), {})[clock] = value
                if batch.acked:
                    key = (change.id, name)
                    acked_max[key] = max(acked_max.get(key, ""), clock)
    rows = db["rows"]
    for rid in sorted(set(rows) - all_ids):
        problems.append(f"stored record nobody sent: {rid}")
    for rid in sorted(created_acked - set(rows)):
        problems.append(f"acknowledged record lost: {rid}")
    for (rid, name), want in sorted(acked_max.items()):
        row = rows.get(rid)
        reg = registers(row).get(name) if row else None
        if reg is None:
            problems.append(f"acknowledged field lost: {rid}.{name} (clock {want})")
            continue
        clock = reg.get("origin") or reg["hlc"]
        if clock < want:
            problems.append(f"acknowledged change lost: {rid}.{name} stored {clock} < acked {want}")
    for rid, row in rows.items():
        for name, reg in registers(row).items():
            clock = reg.get("origin") or reg["hlc"]
            options = sent.get((rid, name), {})
            if clock not in options:
                problems.append(f"wrong winner: {rid}.{name} has clock {clock} nobody sent")
            elif options[clock] != reg["value"]:
                problems.append(f"wrong winner: {rid}.{name} clock {clock} value "
                                f"{reg['value']!r} != sent {options[clock]!r}")
            elif name != TOMBSTONE and row["data"].get(name) != reg["value"]:
                problems.append(f"data column disagrees with state: {rid}.{name}")
    # The conflict log keeps losing values exactly as sent, winner beside them
    # (an edit against a delete: one side is the tombstone, any field).
    by_record = {}
    for (rid, name), options in sent.items():
        by_record.setdefault(rid, set()).update(
            (c, json.dumps(v, sort_keys=True)) for c, v in options.items())
    for rid, name, current, losing in db.get("conflicts", []):
        for side, reg in (("losing", losing), ("current", current)):
            if (reg["hlc"], json.dumps(reg["value"], sort_keys=True)) not in by_record.get(rid, ()):
                problems.append(f"conflict log {side} value of {rid}.{name} at {reg['hlc']} "
                                f"was never sent")
        if not losing["hlc"] < current["hlc"]:
            problems.append(f"conflict log: loser {losing['hlc']} not older than winner "
                            f"{current['hlc']} ({rid}.{name})")
    return problems


def full_pull(url, token, limit=200):
    """Every page of a pull from the start: (records in order, pages)."""
    records, cursor, pages = [], None, 0
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        resp = requests.get(url + PULL, params=params, headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text[:500]
        page = resp.json()
        records += page["records"]
        cursor, pages = page["cursor"], pages + 1
        if not page["more"]:
            return records, pages


class Puller:
    """A device that keeps a replica by pulling pages with its cursor, across
    kills (a failed page is asked for again with the same cursor)."""

    def __init__(self, base_url, token, limit=50):
        self.url, self.limit = base_url, limit
        self.headers = {"Authorization": f"Bearer {token}"}
        self.cursor = None
        self.replica = {}       # id -> the latest pulled record
        self.pages = 0
        self.failures = 0
        self.http = requests.Session()

    def page(self):
        """Pull one page; True if the server said there is more."""
        params = {"limit": self.limit} | ({"cursor": self.cursor} if self.cursor else {})
        try:
            resp = self.http.get(self.url + PULL, params=params, headers=self.headers,
                                 timeout=(2, 15))
        except requests.RequestException:
            resp = None
        if resp is None or resp.status_code >= 500:
            self.failures += 1
            time.sleep(0.05)
            return True
        assert resp.status_code == 200, resp.text[:500]
        body = resp.json()
        for record in body["records"]:
            self.replica[record["id"]] = record
        self.cursor, self.pages = body["cursor"], self.pages + 1
        return body["more"]

    def drain(self, deadline_s=60):
        deadline = time.monotonic() + deadline_s
        while self.page():
            assert time.monotonic() < deadline, "pull never finished"


def pull_matches_db(records, db):
    """A full pull holds each stored record once, at its stored state."""
    problems = []
    ids = [r["id"] for r in records]
    if len(ids) != len(set(ids)):
        problems.append(f"pull returned {len(ids) - len(set(ids))} records twice")
    seqs = [r["seq"] for r in records]
    if seqs != sorted(seqs):
        problems.append("pull not in commit (seq) order")
    pulled = {r["id"]: r for r in records}
    rows = db["rows"]
    if set(pulled) != set(rows):
        problems.append(f"pull ids != db ids: missing {sorted(set(rows) - set(pulled))[:5]}, "
                        f"extra {sorted(set(pulled) - set(rows))[:5]}")
    for rid in set(pulled) & set(rows):
        p, row = pulled[rid], rows[rid]
        clocks = {n: reg["hlc"] for n, reg in row["state"]["fields"].items()}
        if p["data"] != row["data"] or p["clocks"] != clocks or p["seq"] != row["seq"] \
                or p["deleted"] != row["deleted"]:
            problems.append(f"pulled {rid} differs from the db row")
    return problems


# -- raw sockets ---------------------------------------------------------------------

def send_partial(host, port, path, headers, body, fraction=0.5, chunked=False):
    """Start an HTTP request, send `fraction` of the body, then hang up, and
    wait until the server has closed the connection.

    With `chunked`, the body goes as Transfer-Encoding: chunked and the
    connection closes mid-chunk stream (no terminating chunk).
    """
    cut = max(1, int(len(body) * fraction))
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body[:cut]
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body[:cut]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        # The "link drops": the server reads the stump, then the end of the
        # stream. Returns once the server has closed its side, so whatever it
        # does with the stump, it has done.
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(120)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass

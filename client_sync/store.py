"""The device's local store: records, the outbox, sent batches, the HLC.

One SQLite file (``device.db`` in the data folder), WAL mode with
``synchronous=FULL``: a tablet loses power, and a change the health worker
saw saved must survive it. Every public method that writes runs in one
``BEGIN IMMEDIATE`` transaction, so a crash at any instant leaves either the
whole step or none of it.

Tables:

``records``  each record's merge state (schemas.merge), its sync state
             (pending, sent, acknowledged, conflict, rejected, forbidden) and
             the server's errors for it.
``outbox``   one entry per record with unsynced changes, coalesced: each field
             with its value, the clock of its last edit and its base. While an
             entry is in a sent batch it carries that batch id and a snapshot
             of the clocks sent; ``edit_seq`` tells whether it was edited since.
``batches``  each sent, unanswered batch, byte for byte, so a retry is the
             same request and the server's batch-id replay answers it.
``forms``    the form definitions last fetched from the server.
``meta``     device id, HLC, login, pull cursor, last sync, skew (JSON values).

The layout's version is SQLite's ``PRAGMA user_version``. Opening a store
brings an older layout up to date, each step (``MIGRATIONS``) in the same
transaction as the version it writes, and refuses a store written by a newer
fieldsync: an older app must not write a layout it does not know.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import secrets
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from schemas import merge as merging
from schemas.clock import Clock

from .errors import FieldsyncError, RecordNotFound

SYNC_STATES = ("pending", "sent", "acknowledged", "conflict", "rejected", "forbidden")
HELD_STATES = ("rejected", "forbidden")  # not resent until edited or after a new login

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    form TEXT NOT NULL,
    form_version INTEGER NOT NULL,
    area TEXT NOT NULL,
    state TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    sync_state TEXT NOT NULL,
    errors TEXT,
    warnings TEXT,
    pull_gen INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_form_area ON records (form, area);
CREATE INDEX IF NOT EXISTS records_sync_state ON records (sync_state);
CREATE TABLE IF NOT EXISTS outbox (
    record_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    form TEXT NOT NULL,
    form_version INTEGER NOT NULL,
    area TEXT NOT NULL,
    fields TEXT NOT NULL,
    deleted TEXT,
    edit_seq INTEGER NOT NULL,
    batch_id TEXT,
    sent_seq INTEGER,
    sent TEXT,
    held TEXT
);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox (batch_id);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    body BLOB NOT NULL,
    count INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forms (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
"""


def uuid7() -> str:
    """A time-ordered UUID (version 7): keeps index writes local on both sides."""
    ms = time.time_ns() // 1_000_000
    rand_a, rand_b = secrets.randbits(12), secrets.randbits(62)
    value = ((ms & (1 << 48) - 1) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _m001_baseline(conn):
    # The layout as first shipped; a store made before versioning has it
    # already (version 0), so these statements change nothing there.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


#: Layout steps, in order: the store's version is how many have run. A later
#: layout change is a new function here, never an edit of an earlier one.
MIGRATIONS = (_m001_baseline,)


class StoreTooNew(FieldsyncError):
    """The device's data was written by a newer fieldsync."""


class Store:
    """The local SQLite store of one device.

    :param path: the database file; its folder is created if needed.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # durable across power loss
        try:
            with self.transaction():
                self._migrate()
                if self._meta("device_id") is None:
                    # Made once and kept: the server ties tokens and batch ids to it.
                    self._set_meta("device_id", "dev-" + secrets.token_hex(6))
        except StoreTooNew:
            self.conn.close()
            raise

    def _migrate(self):
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreTooNew(
                f"The data in {self.path} was written by a newer fieldsync (layout "
                f"{version}; this one knows up to {len(MIGRATIONS)}). Update the app; "
                "nothing was changed.")
        for step in MIGRATIONS[version:]:
            step(self.conn)
        if version < len(MIGRATIONS):
            self.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self):
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta ---------------------------------------------------------------

    def _meta(self, key, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, key, value):
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          (key, _dumps(value)))

    def get_meta(self, key, default=None):
        """A value of the ``meta`` table (JSON-decoded)."""
        return self._meta(key, default)

    def set_meta(self, **values):
        """Set several ``meta`` values in one transaction."""
        with self.transaction():
            for key, value in values.items():
                self._set_meta(key, value)

    @property
    def device_id(self) -> str:
        return self._meta("device_id")

    # -- clock --------------------------------------------------------------

    def _tick(self) -> str:
        """A fresh local clock, persisted in the caller's transaction.

        The clock is re-read inside the transaction so two processes on one
        data folder never issue the same clock.
        """
        clock = Clock(self.device_id, self._meta("hlc"))
        value = clock.now()
        self._set_meta("hlc", value)
        return value

    def _observe(self, remote):
        if remote:
            clock = Clock(self.device_id, self._meta("hlc"))
            self._set_meta("hlc", clock.observe(remote))

    def observe(self, remote):
        """Advance the persisted HLC past a clock received from the server."""
        if remote:
            with self.transaction():
                self._observe(remote)

    @property
    def hlc(self):
        return self._meta("hlc")

    # -- records ------------------------------------------------------------

    def _row(self, record_id):
        return self.conn.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()

    def get(self, record_id):
        """The record's view (see :meth:`view`), or ``None``."""
        row = self._row(record_id)
        return None if row is None else self.view(row)

    @staticmethod
    def view(row) -> dict:
        """A record as the API shows it: plain values plus its sync state."""
        state = json.loads(row["state"])
        return {"id": row["id"], "form": row["form"], "form_version": row["form_version"],
                "area": row["area"], "data": merging.values(state),
                "deleted": bool(row["deleted"]), "sync_state": row["sync_state"],
                "errors": json.loads(row["errors"]) if row["errors"] else None,
                "warnings": json.loads(row["warnings"]) if row["warnings"] else None,
                "hlc": merging.record_hlc(state) if state["fields"] or state["deleted"] else None}

    def state(self, record_id):
        """The record's merge state, or ``None``."""
        row = self._row(record_id)
        return None if row is None else json.loads(row["state"])

    def iter_records(self, form=None, area=None, sync_state=None, include_deleted=False):
        """Yield record views, streamed (memory stays flat on big stores).

        :param area: an area code; its whole subtree matches (dot boundary).
        """
        sql, args = "SELECT * FROM records WHERE 1=1", []
        if form:
            sql += " AND form = ?"
            args.append(form)
        if area:
            sql += " AND (area = ? OR area LIKE ? ESCAPE '\\')"
            args += [area, area.replace("_", "\\_").replace("%", "\\%") + ".%"]
        if sync_state:
            sql += " AND sync_state = ?"
            args.append(sync_state)
        if not include_deleted:
            sql += " AND deleted = 0"
        sql += " ORDER BY form, id"
        # A separate cursor; rows are fetched lazily.
        for row in self.conn.execute(sql, args):
            yield self.view(row)

    def _save_record(self, state, sync_state, *, errors=..., warnings=..., pull_gen=None):
        deleted = int(merging.is_deleted(state))
        existing = self._row(state["id"])
        if existing is None:
            self.conn.execute(
                "INSERT INTO records (id, form, form_version, area, state, deleted, sync_state,"
                " errors, warnings, pull_gen, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (state["id"], state["form"], state["form_version"], state["area"], _dumps(state),
                 deleted, sync_state,
                 None if errors is ... or errors is None else _dumps(errors),
                 None if warnings is ... or warnings is None else _dumps(warnings),
                 pull_gen or 0, utc_now()))
            return
        sets = {"form_version": state["form_version"], "state": _dumps(state), "deleted": deleted,
                "sync_state": sync_state, "updated_at": utc_now()}
        if errors is not ...:
            sets["errors"] = None if errors is None else _dumps(errors)
        if warnings is not ...:
            sets["warnings"] = None if warnings is None else _dumps(warnings)
        if pull_gen is not None:
            sets["pull_gen"] = pull_gen
        self.conn.execute(f"UPDATE records SET {', '.join(k + ' = ?' for k in sets)} WHERE id = ?",
                          (*sets.values(), state["id"]))

    # -- local changes --------------------------------------------------------

    def local_change(self, record_id, *, user, data=None, delete=False, create=None):
        """Commit one local add, edit or delete, and queue it in the outbox.

        All fields of one call share one fresh clock. The outbox entry keeps,
        for each field, the base of the first unsynced edit, so a chain of
        offline edits still tells the server which server value it started from.

        :param create: ``{"form", "form_version", "area"}`` to create the record.
        :param data: normalised ``{field: value}`` (already validated).
        :param delete: write a tombstone.
        :returns: the record's view after the change.
        """
        data = data or {}
        with self.transaction():
            row = self._row(record_id)
            if create is not None:
                if row is not None:
                    raise FieldsyncError(f"Record {record_id} already exists.")
                state = {"id": record_id, "form": create["form"],
                         "form_version": create["form_version"], "area": create["area"],
                         "fields": {}, "deleted": None}
            else:
                if row is None:
                    raise RecordNotFound(f"No record {record_id} on this device.")
                state = json.loads(row["state"])
                if merging.is_deleted(state):
                    raise FieldsyncError(f"Record {record_id} is deleted.")
            clock = self._tick()
            device = self.device_id
            entry = self._entry(record_id)
            if entry is None:
                top = self.conn.execute("SELECT COALESCE(MAX(position), 0) FROM outbox").fetchone()[0]
                entry = {"record_id": record_id, "position": top + 1, "form": state["form"],
                         "form_version": state["form_version"], "area": state["area"],
                         "fields": {}, "deleted": None, "edit_seq": 0, "batch_id": None,
                         "sent_seq": None, "sent": None, "held": None, "new": True}
            for name, value in data.items():
                reg = state["fields"].get(name)
                pending = entry["fields"].get(name)
                if pending is not None and reg is not None and reg["hlc"] == pending["clock"]:
                    base = pending["base"]  # still our unsynced value: keep its base
                else:
                    base = reg["hlc"] if reg is not None else None
                state["fields"][name] = {"value": value, "hlc": clock, "device": device,
                                         "user": user, "base": base, "origin": None}
                entry["fields"][name] = {"value": value, "clock": clock, "base": base}
            if delete:
                # The fields this device had seen when deleting: the server
                # logs no conflict for them (they are not concurrent edits).
                seen = {name: reg["hlc"] for name, reg in state["fields"].items()
                        if reg["device"] != device}
                state["deleted"] = {"value": True, "hlc": clock, "device": device, "user": user,
                                    "base": seen, "origin": None}
                entry["deleted"] = {"value": True, "clock": clock, "seen": seen}
            entry["edit_seq"] += 1
            entry["held"] = None
            self._save_entry(entry)
            self._save_record(state, "pending")
            return self.view(self._row(record_id))

    def _entry(self, record_id):
        row = self.conn.execute("SELECT * FROM outbox WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else self._entry_of(row)

    @staticmethod
    def _entry_of(row):
        entry = dict(row)
        entry["fields"] = json.loads(entry["fields"])
        entry["deleted"] = json.loads(entry["deleted"]) if entry["deleted"] else None
        entry["sent"] = json.loads(entry["sent"]) if entry["sent"] else None
        entry["new"] = False
        return entry

    def _save_entry(self, entry):
        values = (entry["position"], entry["form"], entry["form_version"], entry["area"],
                  _dumps(entry["fields"]), _dumps(entry["deleted"]) if entry["deleted"] else None,
                  entry["edit_seq"], entry["batch_id"], entry["sent_seq"],
                  _dumps(entry["sent"]) if entry["sent"] else None, entry["held"],
                  entry["record_id"])
        if entry.get("new"):
            self.conn.execute(
                "INSERT INTO outbox (position, form, form_version, area, fields, deleted, edit_seq,"
                " batch_id, sent_seq, sent, held, record_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                values)
            entry["new"] = False
        else:
            self.conn.execute(
                "UPDATE outbox SET position = ?, form = ?, form_version = ?, area = ?, fields = ?,"
                " deleted = ?, edit_seq = ?, batch_id = ?, sent_seq = ?, sent = ?, held = ?"
                " WHERE record_id = ?", values)

    # -- outbox -> batches ------------------------------------------------------

    @staticmethod
    def change_of(entry) -> dict:
        """The wire change for an outbox entry (DESIGN.md "Records and changes")."""
        fields = entry["fields"]
        tomb = entry["deleted"]
        hlc = tomb["clock"] if tomb else max(f["clock"] for f in fields.values())
        change = {"id": entry["record_id"], "form": entry["form"],
                  "form_version": entry["form_version"], "area": entry["area"],
                  "data": {name: f["value"] for name, f in fields.items()}, "hlc": hlc,
                  "clocks": {name: f["clock"] for name, f in fields.items() if f["clock"] != hlc},
                  "bases": {name: f["base"] for name, f in fields.items() if f["base"]}}
        if tomb:
            change["deleted"] = tomb["value"]
            if tomb["value"]:
                change["bases"] = {**tomb.get("seen", {}), **change["bases"]}
        return change

    def pending_batch(self):
        """The oldest sent, unanswered batch: ``(batch_id, body, count)`` or ``None``."""
        row = self.conn.execute(
            "SELECT batch_id, body, count FROM batches ORDER BY position LIMIT 1").fetchone()
        return None if row is None else (row["batch_id"], bytes(row["body"]), row["count"])

    def make_batch(self, limit, max_bytes, app_version):
        """Freeze the next ``limit`` queued entries into a batch, or ``None``.

        The gzip body is stored with its batch id before it is ever sent, so
        a retry after any failure or crash sends the very same bytes.
        """
        with self.transaction():
            rows = self.conn.execute(
                "SELECT * FROM outbox WHERE batch_id IS NULL AND held IS NULL"
                " ORDER BY position LIMIT ?", (limit,)).fetchall()
            if not rows:
                return None
            entries = [self._entry_of(r) for r in rows]
            batch_id = str(uuid.uuid4())
            while True:
                body = {"device_id": self.device_id, "batch_id": batch_id,
                        "device_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                        "app_version": app_version,
                        "records": [self.change_of(e) for e in entries]}
                raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
                if len(raw) <= max_bytes or len(entries) == 1:
                    break
                entries = entries[: len(entries) // 2]
            top = self.conn.execute("SELECT COALESCE(MAX(position), 0) FROM batches").fetchone()[0]
            body = gzip.compress(raw, 6, mtime=0)
            self.conn.execute("INSERT INTO batches (batch_id, position, body, count, created_at)"
                              " VALUES (?, ?, ?, ?, ?)", (batch_id, top + 1, body, len(entries), utc_now()))
            for entry in entries:
                sent = {name: f["clock"] for name, f in entry["fields"].items()}
                if entry["deleted"]:
                    sent["~deleted"] = entry["deleted"]["clock"]
                self.conn.execute(
                    "UPDATE outbox SET batch_id = ?, sent_seq = edit_seq, sent = ? WHERE record_id = ?",
                    (batch_id, _dumps(sent), entry["record_id"]))
                self.conn.execute("UPDATE records SET sync_state = 'sent' WHERE id = ?",
                                  (entry["record_id"],))
            return batch_id, body, len(entries)

    def batch_record_ids(self, batch_id):
        return [r[0] for r in self.conn.execute(
            "SELECT record_id FROM outbox WHERE batch_id = ? ORDER BY position", (batch_id,))]

    def drop_batch(self, batch_id):
        """Forget a batch the server certainly did not store (413, 409).

        Its entries go back to the queue; they will be sent in a new batch.
        """
        with self.transaction():
            self.conn.execute("UPDATE outbox SET batch_id = NULL, sent_seq = NULL, sent = NULL"
                              " WHERE batch_id = ?", (batch_id,))
            self.conn.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    def hold(self, record_id, state, errors):
        """Keep an entry out of batches (e.g. one record too large for any batch)."""
        with self.transaction():
            self.conn.execute("UPDATE outbox SET held = ? WHERE record_id = ?", (state, record_id))
            self.conn.execute("UPDATE records SET sync_state = ?, errors = ? WHERE id = ?",
                              (state, _dumps(errors), record_id))

    def release_held(self):
        """Let rejected and forbidden entries be sent once more (after a new login)."""
        with self.transaction():
            self.conn.execute("UPDATE outbox SET held = NULL WHERE held IS NOT NULL")

    def apply_answer(self, batch_id, answer) -> dict:
        """Commit the server's answer to a batch; count the outcomes.

        An entry leaves the outbox only here, in the same transaction as the
        answer, and only for the clocks the server answered: a field edited
        again since the batch was sent stays queued.
        """
        counts = {"applied": 0, "unchanged": 0, "conflict": 0, "rejected": 0, "forbidden": 0,
                  "unanswered": 0}
        with self.transaction():
            rows = self.conn.execute("SELECT * FROM outbox WHERE batch_id = ?", (batch_id,)).fetchall()
            entries = {r["record_id"]: self._entry_of(r) for r in rows}
            self._observe(answer.get("hlc"))
            results = answer.get("results")
            for result in results if isinstance(results, list) else []:
                # A result we cannot read leaves its change queued, to send again.
                if not isinstance(result, dict) or not isinstance(result.get("id"), str):
                    continue
                entry = entries.pop(result["id"], None)
                status = result.get("status")
                if entry is None or status not in counts:
                    continue
                counts[status] += 1
                self._apply_result(entry, status, result)
            for entry in entries.values():  # no answer for these: send again
                counts["unanswered"] += 1
                self._requeue(entry, "pending")
            self.conn.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            skew = answer.get("skew")
            if isinstance(skew, dict) and skew:
                self._set_meta("skew", {**skew, "at": utc_now()})
        return counts

    def _requeue(self, entry, sync_state, held=None, errors=...):
        entry.update(batch_id=None, sent_seq=None, sent=None, held=held)
        self._save_entry(entry)
        self.conn.execute("UPDATE records SET sync_state = ? WHERE id = ?",
                          (sync_state, entry["record_id"]))
        if errors is not ...:
            self.conn.execute("UPDATE records SET errors = ? WHERE id = ?",
                              (_dumps(errors) if errors else None, entry["record_id"]))

    def _apply_result(self, entry, status, result):
        record_id = entry["record_id"]
        edited_since = entry["edit_seq"] != entry["sent_seq"]
        sent = entry["sent"] or {}
        if status in HELD_STATES:
            errors = result.get("errors") if isinstance(result.get("errors"), dict) else None
            errors = errors or {
                "area": ["You may not write this record (its form or area is outside your scope)."]}
            if edited_since:
                self._requeue(entry, "pending", errors=errors)
            else:
                self._requeue(entry, status, held=status, errors=errors)
            return
        state = json.loads(self._row(record_id)["state"])
        record = result.get("record")
        if merging.readable_wire(record) and record["id"] == record_id:
            state = self._adopt(state, record, sent)
        # Drop what the server answered; keep what was edited again meanwhile.
        for name, clock in sent.items():
            if name == "~deleted":
                if entry["deleted"] and entry["deleted"]["clock"] == clock:
                    entry["deleted"] = None
            elif name in entry["fields"] and entry["fields"][name]["clock"] == clock:
                del entry["fields"][name]
        if not entry["fields"] and not entry["deleted"]:
            self.conn.execute("DELETE FROM outbox WHERE record_id = ?", (record_id,))
            sync_state = "conflict" if status == "conflict" else "acknowledged"
        else:
            entry.update(batch_id=None, sent_seq=None, sent=None, held=None)
            self._save_entry(entry)
            sync_state = "pending"
        warnings = result.get("warnings")
        self._save_record(state, sync_state, errors=None,
                          warnings=warnings if isinstance(warnings, dict) and warnings else None)

    def _adopt(self, state, wire, sent):
        """Merge a record the server returned with an answer (conflict or re-stamp).

        A field whose local clock is still the one we sent, but whose server
        clock differs, takes the server's register as is: either our value
        lost, or the server re-stamped a clock too far ahead, which a plain
        merge would never let win (the bad clock is larger).
        """
        state = {**state, "fields": dict(state["fields"])}
        clocks = wire.get("clocks") or {}
        for name, value in (wire.get("data") or {}).items():
            clock = clocks.get(name, wire["hlc"])
            reg = state["fields"].get(name)
            if name in sent and reg is not None and reg["hlc"] == sent[name] and clock != sent[name]:
                state["fields"][name] = {"value": value, "hlc": clock, "device": "server",
                                         "user": "", "base": None, "origin": reg["hlc"]}
        tomb, local = wire.get("tombstone"), state.get("deleted")
        if (tomb and "~deleted" in sent and local is not None and local["hlc"] == sent["~deleted"]
                and tomb["hlc"] != sent["~deleted"]):
            state["deleted"] = {"value": tomb["deleted"], "hlc": tomb["hlc"], "device": "server",
                                "user": "", "base": local.get("base"), "origin": local["hlc"]}
        self._observe(wire.get("hlc"))
        return self._merge_remote(state, wire)

    @staticmethod
    def _merge_remote(state, wire):
        change = merging.from_wire(wire)
        for _ in range(len(change["data"]) + 2):
            try:
                return merging.merge(state, change, device="server", user="").record
            except merging.ClockReused as exc:
                # The server holds another value under our clock (normalised
                # differently): the server's copy is authoritative.
                state = {**state, "fields": dict(state["fields"])}
                if exc.field == merging.DELETED:
                    state["deleted"] = None
                else:
                    state["fields"].pop(exc.field, None)
        raise FieldsyncError(f"Could not merge record {wire['id']} from the server.")

    # -- pull -------------------------------------------------------------------

    def apply_pull(self, records, cursor, *, generation):
        """Merge one pulled page and save the cursor, in one transaction.

        The cursor only moves with the page it belongs to, so a crash or a
        cut connection re-pulls at most that page, harmlessly (the merge is
        idempotent). Unsynced local edits keep winning where their clocks do.
        """
        top = None
        with self.transaction():
            for wire in records:
                row = self._row(wire["id"])
                state = self._merge_remote(json.loads(row["state"]) if row else None, wire)
                clocks = [wire["hlc"], *(wire.get("clocks") or {}).values()]
                newest = max(clocks)
                top = newest if top is None or newest > top else top
                if row is None:
                    sync_state = "acknowledged"
                else:
                    queued = self.conn.execute("SELECT 1 FROM outbox WHERE record_id = ?",
                                               (wire["id"],)).fetchone()
                    unchanged = state == json.loads(row["state"])
                    if queued or (row["sync_state"] == "conflict" and unchanged):
                        sync_state = row["sync_state"]
                    else:
                        sync_state = "acknowledged"
                self._save_record(state, sync_state, pull_gen=generation)
            self._observe(top)
            self._set_meta("cursor", cursor)

    def start_resync(self):
        """The server's scope changed: pull everything again from the start.

        Records not seen again by the end of the full pull (and with nothing
        queued) are outside the new scope and are removed then, not now, so a
        cut connection never leaves the device emptier than before.
        """
        with self.transaction():
            generation = self._meta("pull_gen", 0) + 1
            self._set_meta("pull_gen", generation)
            self._set_meta("resyncing", True)
            self._set_meta("cursor", None)
            return generation

    def finish_pull(self):
        """The pull reached ``more: false``: finish a resync if one was running."""
        with self.transaction():
            if self._meta("resyncing"):
                self.conn.execute(
                    "DELETE FROM records WHERE pull_gen < ? AND id NOT IN"
                    " (SELECT record_id FROM outbox)", (self._meta("pull_gen", 0),))
                self._set_meta("resyncing", False)

    # -- users and forms ----------------------------------------------------------

    def unsynced_count(self) -> int:
        """Records with changes the server has not answered (incl. rejected)."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def queued_count(self) -> int:
        """Records a sync would send (not held)."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE held IS NULL").fetchone()[0]

    def reset_for_user(self):
        """Forget the previous user's records, cursor and login (nothing unsynced)."""
        with self.transaction():
            if self.unsynced_count():
                raise FieldsyncError("Unsynced changes remain; refusing to forget them.")
            self.conn.execute("DELETE FROM records")
            self.conn.execute("DELETE FROM batches")
            for key in ("cursor", "resyncing", "last_sync", "skew", "token"):
                self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def save_forms(self, definitions, etag=None):
        """Replace the cached form definitions with the server's (if they
        changed); `etag` is the server's tag for them (`forms_etag`).

        :returns: whether the definitions changed.
        """
        digest = hashlib.sha256(_dumps(definitions).encode()).hexdigest()
        if digest == self._meta("forms_sha256"):
            if etag != self._meta("forms_etag"):
                with self.transaction():
                    self._set_meta("forms_etag", etag)
            return False
        with self.transaction():
            self._set_meta("forms_sha256", digest)
            self._set_meta("forms_etag", etag)
            self.conn.execute("DELETE FROM forms")
            for definition in definitions:
                self.conn.execute("INSERT OR REPLACE INTO forms (id, version, definition)"
                                  " VALUES (?, ?, ?)",
                                  (definition["id"], definition["version"], _dumps(definition)))
        return True

    def forms_etag(self):
        """The server's ETag for the cached definitions; None while none are cached."""
        if self.conn.execute("SELECT 1 FROM forms LIMIT 1").fetchone() is None:
            return None
        return self._meta("forms_etag")

    def load_forms(self):
        """The cached server definitions (empty before the first sync)."""
        return [json.loads(r[0]) for r in
                self.conn.execute("SELECT definition FROM forms ORDER BY id, version")]

    def counts(self) -> dict:
        """Records per sync state."""
        return dict(self.conn.execute(
            "SELECT sync_state, COUNT(*) FROM records GROUP BY sync_state").fetchall())

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

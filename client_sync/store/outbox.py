"""The outbox and its batches: local changes queued, frozen, sent, answered.

``outbox``   one entry per record with unsynced changes, coalesced: each field
             with its value, the clock of its last edit and its base. While an
             entry is in a sent batch it carries that batch id and a snapshot
             of the clocks sent; ``edit_seq`` tells whether it was edited since.
``batches``  each sent, unanswered batch, byte for byte, so a retry is the
             same request and the server's batch-id replay answers it.

A local change writes its record and its outbox entry in one transaction
(:meth:`Outbox.local_change`); an entry leaves the outbox only with the
server's answer to it (:meth:`Outbox.apply_answer`).
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, timezone

from schemas import merge as merging

from ..errors import FieldsyncError, RecordNotFound
from ..i18n import N_
from .database import _dumps, utc_now
from .layout import HELD_STATES
from .records import Records


class Outbox(Records):
    """Local changes and the batches that carry them (on top of the records)."""

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
                    raise FieldsyncError(N_("Record {id} already exists.", id=record_id))
                state = {"id": record_id, "form": create["form"],
                         "form_version": create["form_version"], "area": create["area"],
                         "fields": {}, "deleted": None}
            else:
                if row is None:
                    raise RecordNotFound(N_("No record {id} on this device.", id=record_id))
                state = json.loads(row["state"])
                if merging.is_deleted(state):
                    raise FieldsyncError(N_("Record {id} is deleted.", id=record_id))
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

    # -- counts -------------------------------------------------------------------

    def unsynced_count(self) -> int:
        """Records with changes the server has not answered (incl. rejected)."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def queued_count(self) -> int:
        """Records a sync would send (not held)."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE held IS NULL").fetchone()[0]


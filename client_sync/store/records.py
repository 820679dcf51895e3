"""Records and forms on the device: local records, get and list, pulled pages.

The ``records`` table holds each record's merge state (schemas.merge), its
sync state (``layout.SYNC_STATES``) and the server's errors and warnings for
it; the ``forms`` table the form definitions last fetched from the server.
Pulled records merge in here (:meth:`Records.apply_pull`), with the same
merge the server uses; local changes and the outbox are in ``outbox.py``,
which builds on this class.
"""

from __future__ import annotations

import hashlib
import json

from schemas import merge as merging

from ..errors import FieldsyncError
from ..i18n import N_
from .database import Database, _dumps, utc_now


class Records(Database):
    """The device's records and cached form definitions."""

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
        raise FieldsyncError(N_("Could not merge record {id} from the server.", id=wire["id"]))

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

    # -- forms and counts ---------------------------------------------------------

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

    # -- conflicts, search ---------------------------------------------------------

    def replace_conflicts(self, entries):
        """Store the server's open conflicts (``GET /api/v1/conflicts?status=open``
        entries) in place of the last list, in one transaction.

        A record with an open conflict and nothing queued shows ``conflict``;
        one whose conflicts were all resolved goes back to ``acknowledged``.
        """
        with self.transaction():
            self.conn.execute("DELETE FROM conflicts")
            for e in entries:
                self.conn.execute(
                    "INSERT OR REPLACE INTO conflicts (id, record_id, form, area, field, current,"
                    " losing, created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (e["id"], e["record_id"], e["form"], e["area"], e["field"],
                     _dumps(e.get("current")), _dumps(e.get("losing")), e.get("created_at")))
            not_queued = "id NOT IN (SELECT record_id FROM outbox)"
            self.conn.execute(
                "UPDATE records SET sync_state = 'conflict' WHERE sync_state = 'acknowledged'"
                f" AND {not_queued} AND id IN (SELECT record_id FROM conflicts)")
            self.conn.execute(
                "UPDATE records SET sync_state = 'acknowledged' WHERE sync_state = 'conflict'"
                f" AND {not_queued} AND id NOT IN (SELECT record_id FROM conflicts)")
            self._set_meta("conflicts_at", utc_now())

    def conflicts(self, record_id=None):
        """The stored open conflicts, oldest first: ``{id, record_id, form, area,
        field, current: {value, hlc, device, user}, losing: {…}, created_at}``."""
        sql, args = "SELECT * FROM conflicts", []
        if record_id is not None:
            sql, args = sql + " WHERE record_id = ?", [record_id]
        return [{**dict(row), "current": json.loads(row["current"]),
                 "losing": json.loads(row["losing"])}
                for row in self.conn.execute(sql + " ORDER BY id", args)]

    def conflicts_known(self) -> bool:
        """Whether the server's conflict list was ever fetched (a server older
        than the contract addition refuses health workers)."""
        return self._meta("conflicts_at") is not None

    def ids_with_prefix(self, prefix, limit=10):
        """Record ids starting with ``prefix`` (case-insensitive), at most ``limit``."""
        prefix = prefix.lower()
        escaped = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM records WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
            (escaped + "%", limit))]

    def release_forbidden(self) -> int:
        """The user's scope changed: let entries refused as forbidden be sent
        again (each is answered afresh). Returns how many."""
        with self.transaction():
            return self.conn.execute(
                "UPDATE outbox SET held = NULL WHERE held = 'forbidden'").rowcount

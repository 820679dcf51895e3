"""All SQL for records: saving changes (push, server changes) and reading them (pull).

Writes happen inside one `write_transaction` per batch. A `Writer` carries
what that transaction shares: the server clock, the next sequence number, the
commit time, the compiled forms. Sequence numbers are taken under the write
lock, so commit order equals `seq` order and a pull cursor never skips a
change committed while a device was paging.
"""
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from schemas import merge as merging

from . import clock
from .catalog import Catalog
from .scope import area_sql, can_read_form, can_write_form, covers

SERVER_DEVICE = "server"


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _register_out(reg):
    """A register as the conflict log shows it: {value, hlc, device, user}."""
    return {"value": reg.get("value"), "hlc": reg.get("hlc"), "device": reg.get("device"),
            "user": reg.get("user")}


def get_record(db, record_id):
    """The stored row as a dict with `state` decoded, or None."""
    row = db.execute("SELECT id, form, form_version, area, state, seq, flags, created_at "
                     "FROM records WHERE id = ?", [record_id]).fetchone()
    if row is None:
        return None
    return {"id": row[0], "form": row[1], "form_version": row[2], "area": row[3],
            "state": json.loads(row[4]), "seq": row[5], "flags": json.loads(row[6]),
            "created_at": row[7]}


def today(tz_name):
    """The date in the deployment's time zone ("today" in form bounds)."""
    return datetime.now(ZoneInfo(tz_name)).date()


class Writer:
    """Applies changes inside one write transaction; `finish()` before COMMIT.

    :param db: a connection inside `write_transaction`.
    :param tolerance_seconds: field clocks further ahead of the server are re-stamped.
    :param tz_name: the deployment time zone, for "today" in form bounds.
    """

    def __init__(self, db, *, tolerance_seconds=300, tz_name="Asia/Ho_Chi_Minh",
                 catalog=None):
        self.db = db
        self.clock = clock.load(db)
        self.seq = int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        self.now = clock.commit_time(db)   # never before the last commit's
        self.catalog = catalog or Catalog(db)
        self.today = today(tz_name)
        self.bound = clock.tolerance_bound(int(tolerance_seconds * 1000))
        self.restamped = 0

    def _next_seq(self):
        self.seq += 1
        return self.seq

    def finish(self):
        """Persist the sequence number and the server clock (inside the transaction)."""
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", [str(self.seq)])
        clock.save(self.db, self.clock)
        clock.save_commit_time(self.db, self.now)

    # -- one change ----------------------------------------------------------

    def apply(self, change, *, user, device):
        """Check, merge and save one validated wire change; return its result.

        Precedence (DESIGN.md "Push"): `forbidden`, then `rejected`, then the merge.
        """
        record_id = change["id"]
        stored = get_record(self.db, record_id)
        form = self.catalog.get(change["form"], change["form_version"])
        definition = form.definition if form else {"restricted_to": None}
        if not covers(user, change["area"]) or (stored and not covers(user, stored["area"])):
            return _forbidden(record_id, "This record's area is outside your areas.")
        if form is not None and not can_write_form(user, definition):
            return _forbidden(record_id, "Your role may not write this form.")
        if stored and (stored["form"] != change["form"] or stored["area"] != change["area"]):
            return _rejected(record_id, {"id": [
                "identity_mismatch: a record's form and area are fixed at creation; "
                f"this id is a {stored['form']} record."]}, code="identity_mismatch")
        if form is None:
            if self.catalog.has_form(change["form"]):
                versions = ", ".join(map(str, self.catalog.versions(change["form"])))
                return _rejected(record_id, {"form_version": [
                    f"Version {change['form_version']} of {change['form']} is not "
                    f"published (published: {versions})."]}, code="unknown_version")
            return _rejected(record_id, {"form": [f"Unknown form {change['form']!r}."]},
                             code="unknown_form")
        creating = stored is None and not change.get("deleted")
        checked = (form.validate_create(change["data"], today=self.today) if creating
                   else form.validate_change(change["data"], today=self.today))
        if checked.errors:
            return _rejected(record_id, checked.errors, code="invalid")
        change = {**change, "data": checked.data}
        for c in [change["hlc"], *change.get("clocks", {}).values()]:
            if c <= self.bound:  # only trusted clocks move the server's
                self.clock.observe(c)
        try:
            result = merging.merge(stored["state"] if stored else None, change,
                                   device=device, user=user["username"],
                                   restamp=self.clock.now, max_clock=self.bound)
        except merging.ClockReused as exc:
            return _rejected(record_id, {exc.field: [
                "clock_reused: this clock already carries a different value; the "
                "device's clock state is broken (sign in again to get a new device id)."]},
                code="clock_reused")
        self.restamped += len(result.restamped)
        state = result.record
        if result.changed:
            stored = self._save(stored, state, user=user["username"], device=device)
        self._log_conflicts(state, result.conflicts)
        status = "conflict" if result.lost else "applied" if result.changed else "unchanged"
        out = {"id": record_id, "status": status}
        if checked.warnings:
            out["warnings"] = checked.warnings
        if (status == "conflict" or result.restamped) and can_read_form(user, definition):
            out["record"] = merging.to_wire(state, stored["seq"] if stored else None)
        return out

    def _save(self, stored, state, *, user, device):
        values = merging.values(state)
        form = self.catalog.get(state["form"], state["form_version"])
        computed, flags = {}, list(stored["flags"]) if stored else []
        if form is not None:
            computed = form.compute(values) if not merging.is_deleted(state) else {}
            checked = form.validate_record(values, today=self.today)
            # Two valid concurrent edits can make an invalid record: keep it and
            # flag it for review; rejecting would break convergence.
            invalid = bool(checked.errors) and not merging.is_deleted(state)
            flags = [f for f in flags if f != "invalid_merge"] + (["invalid_merge"] if invalid else [])
        seq = self._next_seq()
        row = [state["form"], state["form_version"], state["area"], _dumps(state),
               _dumps(values), _dumps(computed), int(merging.is_deleted(state)),
               merging.record_hlc(state), seq, self.now, user, device, _dumps(flags)]
        if stored is None:
            self.db.execute(
                "INSERT INTO records (form, form_version, area, state, data, computed, deleted, "
                "hlc, seq, updated_at, updated_by, device, flags, id, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row + [state["id"], self.now, user])
        else:
            self.db.execute(
                "UPDATE records SET form = ?, form_version = ?, area = ?, state = ?, data = ?, "
                "computed = ?, deleted = ?, hlc = ?, seq = ?, updated_at = ?, updated_by = ?, "
                "device = ?, flags = ? WHERE id = ?", row + [state["id"]])
        return {"id": state["id"], "seq": seq, "flags": flags}

    def _log_conflicts(self, state, conflicts):
        # One entry per record, field and losing clock: a resend logs nothing new.
        for c in conflicts:
            self.db.execute(
                "INSERT OR IGNORE INTO conflicts (record_id, form, area, field, current, "
                "losing, losing_hlc, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)",
                [state["id"], state["form"], state["area"], c.field,
                 _dumps(_register_out(c.winner)), _dumps(_register_out(c.loser)),
                 c.loser["hlc"], self.now])


def _forbidden(record_id, message):
    return {"id": record_id, "status": "forbidden", "errors": {"area": [message]}}


def _rejected(record_id, errors, code):
    return {"id": record_id, "status": "rejected", "code": code, "errors": errors}


def note_rejection(db, device_id, result, now):
    """Keep the device's outstanding rejections current (for `GET /devices`)."""
    if result.get("id") is None:
        return
    if result["status"] in ("rejected", "forbidden"):
        db.execute("INSERT INTO rejections (device_id, record_id, errors, at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (device_id, record_id) DO UPDATE SET errors = excluded.errors, "
                   "at = excluded.at", [device_id, result["id"], _dumps(result["errors"]), now])
    else:
        db.execute("DELETE FROM rejections WHERE device_id = ? AND record_id = ?",
                   [device_id, result["id"]])


def apply_server_change(db, record_id, data, user, *, deleted=None, catalog=None,
                        tolerance_seconds=300, tz_name="Asia/Ho_Chi_Minh"):
    """Apply a change made on the server (e.g. a conflict resolution).

    Call inside `write_transaction(db)`. The change takes a fresh server clock
    and is based on the stored clocks of the fields it sets, so it wins and is
    no new conflict; it goes through the same validation, merge and save as a
    push, so it gets a new `seq` and reaches every device on its next pull.

    :param data: {field: value} to set (`None` clears a field).
    :param user: the acting user dict (`username`, `role`, `areas`).
    :param deleted: True deletes, False restores, None leaves as is.
    :returns: a push-style result: {id, status, errors?, record?}; status
        `applied`, `unchanged`, `rejected`, `forbidden`, or `not_found`.
    """
    stored = get_record(db, record_id)
    if stored is None:
        return {"id": record_id, "status": "not_found",
                "errors": {"id": ["No record with this id."]}}
    writer = Writer(db, tolerance_seconds=tolerance_seconds, tz_name=tz_name, catalog=catalog)
    fields = stored["state"]["fields"]
    hlc = writer.clock.now()
    change = {"id": record_id, "form": stored["form"],
              "form_version": stored["state"]["form_version"], "area": stored["area"],
              "data": dict(data), "hlc": hlc, "clocks": {},
              "bases": {k: fields[k]["hlc"] for k in data if k in fields}}
    if deleted is not None:
        change["deleted"] = deleted
        if deleted:  # the server has seen every stored value it deletes over
            change["bases"] = {k: r["hlc"] for k, r in fields.items()}
    result = writer.apply(change, user=user, device=SERVER_DEVICE)
    writer.finish()
    if "record" not in result and result["status"] in ("applied", "unchanged"):
        row = get_record(db, record_id)
        result["record"] = merging.to_wire(row["state"], row["seq"])
    return result


# -- pull ----------------------------------------------------------------------

def unreadable_forms(user, catalog):
    """Form ids whose records this user may not read (`restricted_to`)."""
    return sorted(f for f, r in catalog.restricted_forms().items()
                  if not can_read_form(user, {"restricted_to": r}))


def pull_query(user, hidden_forms):
    """The pull SELECT and its parameters after the area/form filter (seq, limit first)."""
    where, params = area_sql(user)
    sql = ("SELECT state, seq FROM records WHERE seq > ? AND " + where)
    if hidden_forms:
        sql += " AND form NOT IN (" + ", ".join("?" * len(hidden_forms)) + ")"
        params += hidden_forms
    return sql + " ORDER BY seq LIMIT ?", params


def pull(db, user, after, limit, catalog=None):
    """Records changed after `after` in the user's scope, in commit order.

    :returns: (records in wire form, next cursor seq, more)
    """
    catalog = catalog or Catalog(db)
    sql, params = pull_query(user, unreadable_forms(user, catalog))
    rows = db.execute(sql, [after] + params + [limit + 1]).fetchall()
    top = int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
    more = len(rows) > limit
    rows = rows[:limit]
    records = [merging.to_wire(json.loads(state), seq) for state, seq in rows]
    # Past the last page, the cursor jumps to the newest seq of this snapshot:
    # everything up to it is committed and either returned or out of scope.
    cursor = rows[-1][1] if more else max(after, top)
    return records, cursor, more


def max_seq(db):
    return int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])


__all__ = ["Writer", "apply_server_change", "get_record", "pull", "note_rejection"]

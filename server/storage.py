"""All SQL for records: saving changes (push, server changes) and reading them (pull).

Writes happen inside one `write_transaction` per batch. A `Writer` carries
what that transaction shares: the server clock, the next sequence number, the
commit time, the compiled forms. Sequence numbers are taken under the write
lock, so commit order equals `seq` order and a pull cursor never skips a
change committed while a device was paging.
"""
from typing import NamedTuple

import orjson

from schemas import merge as merging
from schemas.forms import local_today

from . import clock
from .catalog import Catalog
# The column codecs live in codec.py; imported here too, where callers found them.
from .codec import _dumps, create_texts, decode_state, encode_state, wire_text  # noqa: F401
from .rejections import cap_errors, forbidden as _forbidden, rejected as _rejected
from .indicators import facts
from .scope import area_sql, can_read_form, can_write_form, covers

SERVER_DEVICE = "server"


def _register_out(reg):
    """A register as the conflict log shows it: {value, hlc, device, user}."""
    return {"value": reg.get("value"), "hlc": reg.get("hlc"), "device": reg.get("device"),
            "user": reg.get("user")}


_RECORD_COLUMNS = "id, form, form_version, area, state, seq, flags, created_at"


def _record(row):
    return {"id": row[0], "form": row[1], "form_version": row[2], "area": row[3],
            "state": decode_state(row[4]), "seq": row[5], "flags": orjson.loads(row[6]),
            "created_at": row[7]}


def get_record(db, record_id):
    """The stored row as a dict with `state` decoded, or None."""
    row = db.execute(f"SELECT {_RECORD_COLUMNS} FROM records WHERE id = ?",
                     [record_id]).fetchone()
    return None if row is None else _record(row)


def get_records(db, ids):
    """`get_record` of many ids at once: {id: record} for those stored."""
    ids = list(dict.fromkeys(ids))
    out = {}
    for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = ids[i:i + 500]
        out.update((row[0], _record(row)) for row in db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk))
    return out


def today(tz_name):
    """The date in the deployment's time zone ("today" in form bounds)."""
    return local_today(tz_name)


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
        self._stored = {}    # {id: stored record or None}: `preload` and this batch's saves
        self._unseen = None  # the largest trusted clock the server clock has not observed
        self._covered = ({}, None)  # ({area: covers(user, area)}, that user): few areas a batch

    def _next_seq(self):
        self.seq += 1
        return self.seq

    def preload(self, ids):
        """Read the stored records of a batch's ids in one query (under the lock)."""
        found = get_records(self.db, ids)
        self._stored.update((rid, found.get(rid)) for rid in ids)

    def _stored_record(self, record_id):
        if record_id not in self._stored:
            return get_record(self.db, record_id)
        stored = self._stored[record_id]
        if stored is not None and stored["state"] is None:  # saved by a create
            stored["state"] = decode_state(stored["packed"])
        return stored

    def _covers(self, user, area):
        known, of = self._covered
        if of is not user:
            known, of = self._covered = ({}, user)
        found = known.get(area)
        if found is None:
            found = known[area] = covers(user, area)
        return found

    def _observe(self):
        # Observing only the largest clock is the same as observing each in
        # turn: the server clock just has to move past all of them before it
        # issues one (a re-stamp, the answer's hlc, the saved state).
        if self._unseen is not None:
            self.clock.observe(self._unseen)
            self._unseen = None

    def hlc(self):
        """A fresh server clock, past every clock this writer has accepted."""
        self._observe()
        return self.clock.now()

    def finish(self):
        """Persist the sequence number and the server clock (inside the transaction)."""
        self._observe()
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", [str(self.seq)])
        clock.save(self.db, self.clock)
        clock.save_commit_time(self.db, self.now)

    # -- one change ----------------------------------------------------------

    def apply(self, change, *, user, device, prechecked=None):
        """Check, merge and save one validated wire change; return its result.

        Precedence (DESIGN.md "Push"): `forbidden`, then `rejected`, then the merge.

        :param prechecked: this change's entry from `precheck` (done before
            the write lock), used only if its guesses hold under the lock.
        """
        record_id = change["id"]
        stored = self._stored_record(record_id)
        form = self.catalog.get(change["form"], change["form_version"])
        definition = form.definition if form else {"restricted_to": None}
        if not self._covers(user, change["area"]) or (
                stored and not self._covers(user, stored["area"])):
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
        if (prechecked is not None and prechecked.form is form
                and prechecked.creating == creating and prechecked.today == self.today):
            checked, omitted = prechecked.result, prechecked.omitted
        else:
            checked, omitted = (form.validate_create(change["data"], today=self.today)
                                if creating else
                                form.validate_change(change["data"], today=self.today)), 0
        if checked.errors:
            return _rejected(record_id, checked.errors, code="invalid", omitted=omitted)
        change = {**change, "data": checked.data}
        sent = [change["hlc"], *(change.get("clocks") or {}).values()]
        trusted = top = max(sent)
        if top > self.bound:  # only trusted clocks move the server's
            trusted = max((c for c in sent if c <= self.bound), default=None)
        if trusted is not None and (self._unseen is None or trusted > self._unseen):
            self._unseen = trusted
        if creating and change["data"] and top <= self.bound and change.get("deleted") is None:
            # A create with every clock trusted and no tombstone (`deleted:
            # false` is a restore register of its own): nothing to merge,
            # re-stamp or log; its stored columns come straight from the change.
            self._write(None, change, checked.data, *create_texts(change, device,
                                                                  user["username"]),
                        user=user["username"], device=device, checked=(form, checked))
            out = {"id": record_id, "status": "applied"}
            if checked.warnings:
                out["warnings"] = checked.warnings
            return out
        try:
            result = merging.merge(stored["state"] if stored else None, change,
                                   device=device, user=user["username"],
                                   restamp=self.hlc, max_clock=self.bound)
        except merging.ClockReused as exc:
            return _rejected(record_id, {exc.field: [
                "clock_reused: this clock already carries a different value; the "
                "device's clock state is broken (sign in again to get a new device id)."]},
                code="clock_reused")
        self.restamped += len(result.restamped)
        state = result.record
        if result.changed:
            # A create's merged values are normally its checked data: _save
            # need not check them again.
            stored = self._save(stored, state, user=user["username"], device=device,
                                checked=(form, checked) if creating else None)
        self._log_conflicts(state, result.conflicts)
        status = "conflict" if result.lost else "applied" if result.changed else "unchanged"
        out = {"id": record_id, "status": status}
        if checked.warnings:
            out["warnings"] = checked.warnings
        if (status == "conflict" or result.restamped) and can_read_form(user, definition):
            out["record"] = merging.to_wire(state, stored["seq"] if stored else None)
        return out

    def _save(self, stored, state, *, user, device, checked=None):
        """Write the merged `state` under a new seq.

        :param checked: `(form, result)`: that form's `validate_create`
            passed with every rule (the same checks as `validate_record`, the
            same `today`); when the merged values are exactly its data, the
            record is not validated a second time, and its computed fields
            are the ones the validation derived, if it did.
        """
        saved = self._write(stored, state, merging.values(state), encode_state(state),
                            wire_text(state), merging.record_hlc(state), user=user,
                            device=device, checked=checked, deleted=merging.is_deleted(state))
        saved["state"] = state
        return saved

    def _write(self, stored, head, values, packed, wire, hlc, *, user, device, checked,
               deleted=False):
        """The row of a record: `head` gives its id, form, form_version and
        area; `packed` and `wire` its stored texts (encode_state, wire_text)."""
        form = self.catalog.get(head["form"], head["form_version"])
        computed, flags = {}, list(stored["flags"]) if stored else []
        warnings = None   # the merged record's warnings, stored with it (issue 15)
        if form is not None:
            valid = checked is not None and checked[0] is form and checked[1].data == values
            if deleted:
                computed = {}
            elif valid and checked[1].computed is not None:
                computed = checked[1].computed
            else:
                computed = form.compute(values)
            # Two valid concurrent edits can make an invalid record: keep it and
            # flag it for review; rejecting would break convergence. A deleted
            # record is never flagged, so it needs no check.
            if deleted:
                invalid = False
            elif valid:
                invalid, warnings = False, checked[1].warnings
            else:
                whole = form.validate_record(values, today=self.today)
                invalid, warnings = bool(whole.errors), whole.warnings
            flags = [f for f in flags if f != "invalid_merge"] + (["invalid_merge"] if invalid else [])
        seq = self._next_seq()
        # Pull's stored JSON (see wire_text) goes in the same statement. An
        # UPDATE whose wire text happens to equal the old one leaves it NULL
        # (trigger records_wire_stale): pull then builds it from `state`,
        # the same answer.
        row = [head["form_version"], packed, _dumps(values),
               _dumps(computed) if computed else "{}", int(deleted), hlc, seq, self.now, user,
               device, _dumps(flags) if flags else "[]", wire,
               _dumps(warnings) if warnings else None, head["id"]]
        if stored is None:
            self.db.execute(
                "INSERT INTO records (form_version, state, data, computed, deleted, hlc, seq, "
                "updated_at, updated_by, device, flags, wire, warnings, id, form, area, created_at, "
                "created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row + [head["form"], head["area"], self.now, user])
        else:  # a record's form and area never change: their indexes are left alone
            self.db.execute(
                "UPDATE records SET form_version = ?, state = ?, data = ?, computed = ?, "
                "deleted = ?, hlc = ?, seq = ?, updated_at = ?, updated_by = ?, device = ?, "
                "flags = ?, wire = ?, warnings = ? WHERE id = ?", row)
        facts.record_written(self.db, head, values, computed, deleted)  # indicators' facts
        # `state` (decoded) is filled in by _save, or on first use (_stored_record).
        saved = {"id": head["id"], "form": head["form"], "form_version": head["form_version"],
                 "area": head["area"], "state": None, "packed": packed, "seq": seq,
                 "flags": flags, "created_at": stored["created_at"] if stored else self.now}
        if head["id"] in self._stored:  # the same id may come again in this batch
            self._stored[head["id"]] = saved
        return saved

    def _log_conflicts(self, state, conflicts):
        # One entry per record, field and losing clock: a resend logs nothing new.
        for c in conflicts:
            self.db.execute(
                "INSERT OR IGNORE INTO conflicts (record_id, form, area, field, current, "
                "losing, losing_hlc, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)",
                [state["id"], state["form"], state["area"], c.field,
                 _dumps(_register_out(c.winner)), _dumps(_register_out(c.loser)),
                 c.loser["hlc"], self.now])


class Prechecked(NamedTuple):
    """A change's form validation done before the write lock, and what it assumed."""

    form: object        # the CompiledForm it used (compiled forms are shared objects)
    creating: bool      # validate_create (no stored record) or validate_change
    today: object       # the date its bounds used
    result: object      # the forms.Result, its errors capped (rejections.cap_errors)
    omitted: int = 0    # error messages left out of it


def precheck(db, changes, *, tz_name):
    """Validate each change's data against its form before the write lock.

    Form validation is the largest cost of a push and a pure function of the
    form, the data, create-or-edit and today; done here, concurrent pushes
    validate in parallel and hold the lock only to merge and save. Whether a
    change creates its record is guessed from a read now; `Writer.apply`
    re-checks form, create-or-edit and today under the lock and validates
    again when any guess no longer holds (e.g. the same id twice in a batch,
    or created meanwhile by another device).

    :param changes: wire changes, or results (dicts with `status`) to skip.
    :returns: one `Prechecked` or None per change, in order.
    """
    catalog = Catalog(db)
    day = today(tz_name)
    ids = [c["id"] for c in changes if "status" not in c]
    stored = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        stored.update(row[0] for row in db.execute(
            "SELECT id FROM records WHERE id IN (" + ", ".join("?" * len(chunk)) + ")", chunk))
    out = []
    for change in changes:
        form = None if "status" in change else catalog.get(change["form"], change["form_version"])
        if form is None:
            out.append(None)
            continue
        creating = change["id"] not in stored and not change.get("deleted")
        result = (form.validate_create(change["data"], today=day) if creating
                  else form.validate_change(change["data"], today=day))
        omitted = 0
        if result.errors:  # capped now: a batch's results are all held until COMMIT
            errors, omitted = cap_errors(result.errors)
            result = result._replace(errors=errors)
        out.append(Prechecked(form, creating, day, result, omitted))
    return out


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
    hlc = writer.hlc()
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

# A scope with more stored areas than this is pulled by one walk along seq
# (it is then a large share of the database); a smaller one by a walk per
# area along (area, seq), so its cost follows its own records, not the
# database's (measured: a village's first pull among 1M rows, 1.4 s before).
MAX_AREA_WALKS = 64


def _pull_text(wire, state, seq, clocks):
    """One record's pull JSON, as UTF-8 bytes, from its stored columns (`wire`
    read as bytes), in `clocks` mode."""
    if wire is None:  # written by another path (the trigger records_wire_stale)
        wire = wire_text(decode_state(state)).encode()
    # A text without `common_hlc` is already sparse. (The test may also hit a
    # value holding those characters: then the text is decoded for nothing.)
    if clocks == "all" or (clocks == "sparse" and b'"common_hlc"' in wire):
        wire = orjson.dumps(merging.relist_clocks(orjson.loads(wire), clocks))
    # `seq` last: splice it in before the closing brace.
    return wire[:-1] + b',"seq":%d}' % seq


# `wire` as bytes: a page is sent as the stored UTF-8, never decoded to str
# and encoded back (measured in-process: 18.0 -> 14.5 ms a 5,000-record page).
_COLUMNS = "seq, id, form, CAST(wire AS BLOB), CASE WHEN wire IS NULL THEN state END"


def _form_filter(hidden_forms):
    if not hidden_forms:
        return "", []
    return " AND form NOT IN (" + ", ".join("?" * len(hidden_forms)) + ")", list(hidden_forms)


def pull_query(user, hidden_forms):
    """The seq-walk pull SELECT and its parameters after the area/form filter
    (seq first, limit last): one walk along the seq index, filtered."""
    # `+area`: the (area, seq) index must not be used here, or SQLite would
    # gather every in-scope row and sort it for each page.
    where, params = area_sql(user, column="+area")
    forms_sql, forms = _form_filter(hidden_forms)
    sql = f"SELECT {_COLUMNS} FROM records WHERE seq > ? AND {where}{forms_sql}"
    return sql + " ORDER BY seq LIMIT ?", params + forms


def area_query(areas, after, hidden_forms):
    """The pull SELECT for a few exact areas and its parameters (limit last).

    One walk along (area, seq) per area; SQLite merges the arms in seq order
    (a compound ORDER BY merges arms that are already ordered: no sort).
    """
    forms_sql, forms = _form_filter(hidden_forms)
    arm = f"SELECT {_COLUMNS} FROM records WHERE area = ? AND seq > ?{forms_sql}"
    params = [p for area in areas for p in [area, after] + forms]
    return " UNION ALL ".join([arm] * len(areas)) + " ORDER BY 1 LIMIT ?", params


def scope_areas(db, user, most=MAX_AREA_WALKS):
    """The distinct stored areas in a non-admin user's scope, sorted; None if
    there are more than `most`. Each step is one seek on (area, seq)."""
    found = set()
    for scope in user["areas"]:
        if db.execute("SELECT 1 FROM records WHERE area = ? LIMIT 1", [scope]).fetchone():
            found.add(scope)
        low, op = scope + ".", ">="
        while True:
            row = db.execute(f"SELECT area FROM records WHERE area {op} ? AND area < ? "
                             "ORDER BY area LIMIT 1", [low, scope + "/"]).fetchone()
            if row is None:
                break
            found.add(row[0])
            if len(found) > most:
                return None
            low, op = row[0], ">"
    return sorted(found)


def _page_rows(db, user, after, limit, hidden):
    """Up to `limit` rows (seq, id, form, wire, state-if-no-wire) after `after`."""
    areas = None if user["role"] == "admin" else scope_areas(db, user)
    if areas is None:
        sql, params = pull_query(user, hidden)
        return db.execute(sql, [after] + params + [limit]).fetchall()
    if not areas:
        return []
    sql, params = area_query(areas, after, hidden)
    return db.execute(sql, params + [limit]).fetchall()


def pull_page(db, user, after, limit, catalog=None, *, clocks="all"):
    """Records changed after `after` in the user's scope, in commit order,
    each as its pull JSON (UTF-8 bytes; DESIGN.md "Pull"), ready to join into a page.

    :param clocks: how each record lists its clocks (`merge.to_wire`).
    :returns: ([(id, form, json bytes)], next cursor seq, more)
    """
    catalog = catalog or Catalog(db)
    rows = _page_rows(db, user, after, limit + 1, catalog.unreadable_forms(user))
    top = max_seq(db)
    more = len(rows) > limit
    rows = rows[:limit]
    records = [(rid, form, _pull_text(wire, state, seq, clocks))
               for seq, rid, form, wire, state in rows]
    # Past the last page, the cursor jumps to the newest seq of this snapshot:
    # everything up to it is committed and either returned or out of scope.
    cursor = rows[-1][0] if more else max(after, top)
    return records, cursor, more


def pull(db, user, after, limit, catalog=None, *, clocks="all"):
    """`pull_page` with each record decoded.

    :returns: (records in wire form, next cursor seq, more)
    """
    records, cursor, more = pull_page(db, user, after, limit, catalog, clocks=clocks)
    return [orjson.loads(text) for _, _, text in records], cursor, more


def max_seq(db):
    """The newest committed seq (0 when nothing is stored)."""
    return int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])


__all__ = ["Writer", "precheck", "apply_server_change", "get_record", "pull", "pull_page"]

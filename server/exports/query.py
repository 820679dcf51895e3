"""What an export reads: the request's parameters checked (`parse_moment`,
`parse_bool`), the user's areas narrowed to the ones asked for
(`narrowed_areas`, `area_clause`, also used by the review API), the `Filters`,
and the `Snapshot`: one read transaction over the database for a whole
export, read in chunks of `CHUNK` records along the seq index."""
import json
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from schemas.wire import area_covers

from ..scope import area_sql

#: Records read from the database per query.
CHUNK = 2000


@dataclass
class Filters:
    """What to export, besides the form: all conditions combine with AND.

    `since` is inclusive and `until` exclusive, both on `updated_at` (server
    commit time), so consecutive windows never overlap or leave a gap.
    `after` is exclusive on `seq`, the commit-order number a record gets each
    time it changes: the records changed after the export that handed out
    that token (`Snapshot.next_after`), each once, in its current state.
    """
    area_sql: str = "1"
    area_params: list = field(default_factory=list)
    since: str | None = None
    until: str | None = None
    after: int | None = None
    version: int | None = None
    include_deleted: bool = False


def _where(form, filters, form_column="form"):
    clauses, params = [], []
    if isinstance(form, str):
        clauses.append(f"{form_column} = ?")
        params.append(form)
    elif form is not None:                       # a list of form ids
        forms = list(form)
        clauses.append(f"{form_column} IN (%s)" % ", ".join("?" * len(forms))
                       if forms else "0")
        params += forms
    clauses.append(filters.area_sql)
    params += list(filters.area_params)
    if filters.since:
        clauses.append("updated_at >= ?")
        params.append(filters.since)
    if filters.until:
        clauses.append("updated_at < ?")
        params.append(filters.until)
    if filters.after is not None:
        clauses.append("seq > ?")
        params.append(filters.after)
    if filters.version is not None:
        clauses.append("form_version = ?")
        params.append(filters.version)
    if not filters.include_deleted:
        clauses.append("deleted = 0")
    return " AND ".join(clauses), params


_COLUMNS = ("id, form, form_version, area, data, computed, deleted, created_at, "
            "updated_at, created_by, device, flags, warnings, seq")


def _row_dict(row):
    (rid, form, version, area, data, computed, deleted, created_at, updated_at,
     created_by, device, flags, warnings, seq) = row
    return {"id": rid, "form": form, "form_version": version, "area": area,
            "data": json.loads(data) if data else {},
            "computed": json.loads(computed) if computed else {},
            "deleted": bool(deleted), "created_at": created_at,
            "updated_at": updated_at, "created_by": created_by, "device": device,
            "flags": json.loads(flags) if flags else [],
            "warnings": json.loads(warnings) if warnings else None, "seq": seq}


class Snapshot:
    """One read transaction over the database for a whole export.

    SQLite in WAL mode gives a reader the database as of its first SELECT
    until the transaction ends, while pushes keep committing: an export
    therefore never mixes half of a concurrent batch with the rest, however
    long it streams. The connection is private to the export (not the
    request's), so the snapshot outlives the view function.
    """

    def __init__(self, path, busy_timeout_ms=5000):
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True,
                                    isolation_level=None, check_same_thread=False,
                                    timeout=busy_timeout_ms / 1000)
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.conn.execute("BEGIN")
        # The snapshot starts with the first read, here, not at BEGIN.
        row = self.conn.execute(
            "SELECT updated_at, seq FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        # The newest change in the snapshot: a write transaction numbers its
        # changes under the write lock and a change moves its record to the
        # new seq (records are never removed), so this snapshot holds every
        # change numbered up to `last_seq` and none after it.
        self.last_updated_at, self.last_seq = row if row else (None, 0)

    def next_after(self, filters):
        """The token to pass as `after` to continue this export exactly.

        Every change numbered up to it that matches the filters is in this
        export (in its current state); every later change is not. Without
        `until` that is the snapshot's newest seq. With `until`, it is just
        before the first change committed at or after `until`, so the next
        export starts where this one's time window stopped (commit time
        grows with seq: server/clock.py `commit_time`)."""
        if not filters.until:
            return self.last_seq
        row = self.conn.execute(
            "SELECT seq FROM records WHERE seq > ? AND updated_at >= ? ORDER BY seq LIMIT 1",
            [filters.after or 0, filters.until]).fetchone()
        return self.last_seq if row is None else row[0] - 1

    def count(self, form, filters):
        """How many records the export of `form` (a list: those; None: all) holds."""
        where, params = _where(form, filters)
        return self.conn.execute(f"SELECT count(*) FROM records WHERE {where}",
                                 params).fetchone()[0]

    def records(self, form, filters, chunk=CHUNK):
        """The records of `form` (None: all) matching `filters`, in seq order,
        read `chunk` at a time by keyset on seq, so the whole export is one
        walk along an index in seq order, never a sort per chunk."""
        # Without an index on (form, seq), SQLite would pick (form, area) and
        # sort every matching row for each chunk: quadratic (measured: 100k
        # records 5 s, 1M records over 4 min). `+form` keeps it on the seq index.
        form_column = "form" if self._form_seq_index() else "+form"
        where, params = _where(form, filters, form_column)
        sql = f"SELECT {_COLUMNS} FROM records WHERE {where} AND seq > ? ORDER BY seq LIMIT ?"
        after = 0
        while True:
            rows = self.conn.execute(sql, params + [after, chunk]).fetchall()
            for row in rows:
                yield _row_dict(row)
            if len(rows) < chunk:
                return
            after = rows[-1][-1]

    def _form_seq_index(self):
        """True if an index starts with (form, seq): then `form = ?` is best."""
        for _, name, *_ in self.conn.execute("PRAGMA index_list(records)").fetchall():
            columns = [row[2] for row in self.conn.execute(f'PRAGMA index_info("{name}")')]
            if columns[:2] == ["form", "seq"]:
                return True
        return False

    def close(self):
        """End the read transaction; safe to call more than once."""
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            if conn.in_transaction:
                conn.rollback()
        finally:
            conn.close()


# ------------------------------------------------------------- parameters

class ExportError(ValueError):
    """A bad export request; `field` names the parameter."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


#: What `parse_moment` gives for a moment before year 1 or after year 9999 in
#: UTC: text that sorts before / after every stored `updated_at` (24:00 is
#: ISO 8601's end of a day), so `since=0001-01-01` means "from the start".
EARLIEST, LATEST = "0001-01-01T00:00:00.000Z", "9999-12-31T24:00:00.000Z"


def parse_moment(text, tz, field_name):
    """An ISO 8601 date or datetime as the stored `updated_at` form (UTC, ms, Z).

    A value without an offset is read in the deployment time zone `tz`, the
    way a supervisor means "since 1 March".
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00")
                                        .replace("z", "+00:00"))
    except ValueError:
        raise ExportError(field_name, f"{field_name} must be an ISO 8601 date or date-time "
                          f"(e.g. 2025-03-01 or 2025-03-01T08:00:00+07:00), not {text[:40]!r}.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz) if isinstance(tz, str) else tz)
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:
        # Within a day of datetime's range (0001-01-01 in UTC+7, 9999-12-31
        # in UTC-12): the UTC moment is before year 1 or after year 9999,
        # outside every stored time, so the bound is "the beginning" or
        # "the end" and the answer is still exact.
        return EARLIEST if moment.year == 1 else LATEST
    # Not strftime("%Y"): glibc writes year 1 as "1", which sorts after "2025".
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


#: The largest `after` accepted: SQLite's largest integer.
SEQ_MAX = 2 ** 63 - 1


def parse_after(text, field_name="after"):
    """An `after` token: a whole number 0..SEQ_MAX (ASCII digits only)."""
    value = text.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 19) \
            or int(value) > SEQ_MAX:
        raise ExportError(field_name, f"{field_name} must be the number an earlier export "
                          "gave in X-Fieldsync-Next-After (a whole number from 0 to "
                          f"{SEQ_MAX}), not {text[:40]!r}.")
    return int(value)


def parse_bool(text, field_name):
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ExportError(field_name, f"{field_name} must be 1 or 0 (true/false), not {text[:20]!r}.")


def narrowed_areas(user_areas, area, is_admin):
    """The area scopes an export covers: the user's areas cut down to `area`.

    :returns: a list of scopes, or None for every area (an admin with no
        `area`); an empty list when `area` lies outside the user's areas.
    """
    if area is None:
        return None if is_admin else list(user_areas)
    if is_admin or area_covers(user_areas, area):
        return [area]
    return [s for s in user_areas if area_covers([area], s)]   # `area` is above theirs


def area_clause(scopes, column="area"):
    """A WHERE fragment limiting `column` to `scopes` (None: no limit), on dots."""
    if scopes is None:
        return "1", []
    return area_sql({"role": "supervisor", "areas": scopes}, column)

"""Supervisor exports: the current merged state of a form, streamed as CSV,
XLSX, JSONL, or every form at once as `all.xlsx` / `all.zip`.

Everything here works on an iterator of record dicts shaped like a `records`
row (`id`, `area`, `form`, `form_version`, `data`, `computed`, `created_by`,
`created_at`, `updated_at`, `device`, `flags`, `deleted`) so that memory stays
flat however many records there are: rows are written as they are read, the
database is read in chunks of `CHUNK` records, and XLSX (which cannot be
streamed: it is a zip whose directory comes last) is built by xlsxwriter in
`constant_memory` mode in a temporary file that is then streamed and deleted.

Layout of one export (README "Export"):

- one header row: `id`, `area`, the form's fields in definition order (the
  newest version's order; fields only older versions had come after), the
  computed fields, then `created_by`, `created_at`, `updated_at`, `device`,
  `flags`, `warnings` (the stored validation warnings, "field: message"
  joined by " | "), and `deleted` only when deleted records were asked for;
- multi_choice values joined with `MULTI_SEPARATOR` (";"), flags too;
- a geopoint as "lat lon" or "lat lon accuracy_m" (ODK's order);
- a repeat's column holds its number of entries; the entries themselves go to
  a child sheet (XLSX) or file (zip; `repeat=` for a single CSV) named
  `<form>.<repeat>`, keyed by `parent_id` and `index` (1 = first entry);
- booleans `true`/`false` in CSV, real booleans in XLSX;
- XLSX cells are typed: dates, times and datetimes as Excel dates (datetimes
  converted to the deployment time zone), numbers as numbers;
- formula injection: a CSV text cell starting with `=`, `+`, `-`, `@`, tab,
  carriage return or `'` gets a leading `'` (so stripping one leading `'`
  always gives the stored value back); an XLSX text cell is written as a
  string with Excel's quote prefix, so the value is exact and never a
  formula. Numbers are never touched: -3.5 stays a number. JSONL is for
  programs and carries the values exactly.
"""
import codecs
import csv
import functools
import io
import json
import os
import sqlite3
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import xlsxwriter

from schemas.forms import describe_errors
from schemas.wire import area_covers

from .scope import area_sql

#: Joins the values of a multi_choice field (and the flags) in CSV and XLSX.
#: Choice values are identifiers, which never contain it.
MULTI_SEPARATOR = ";"

#: A text cell starting with one of these could run as a formula in a
#: spreadsheet (OWASP "CSV injection"); `'` is included so that the escape
#: can always be undone by stripping one leading `'`.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")

#: Records read from the database per query.
CHUNK = 2000

FORMATS = ("csv", "xlsx", "jsonl")
ALL_FORMATS = ("xlsx", "zip")

LEADING = ("id", "area")
TRAILING = ("created_by", "created_at", "updated_at", "device", "flags", "warnings")

# Excel's sheet names: at most 31 characters, none of these.
_SHEET_FORBIDDEN = set("[]:*?/\\")
_XLSX_MAX_TEXT = 32767
_EXCEL_MAX_INT = 2 ** 53


@dataclass(frozen=True)
class Column:
    """One exported column: where its value comes from and its type."""
    name: str
    type: str                 # a form field type, or "datetime"/"string"/"flags"/...
    source: str               # "record" (envelope), "data" or "computed"


@dataclass(frozen=True)
class RepeatLayout:
    """The child table of one repeat field."""
    field: str
    name: str                 # "<form>.<repeat>"
    columns: tuple            # of Column; parent_id and index come first


@dataclass(frozen=True)
class Layout:
    """The columns of one form's export, across the versions it includes."""
    form: str
    columns: tuple
    repeats: tuple = ()
    include_deleted: bool = False


def _definition(form):
    """A definition dict from a CompiledForm or a definition dict."""
    return getattr(form, "definition", form)


def layout(forms, include_deleted=False):
    """The export layout of one form from its definitions (any order).

    :param forms: the form's versions to export (CompiledForm or definition
        dicts); the newest gives the column order, older-only fields follow.
    :param include_deleted: add a trailing `deleted` column.
    """
    definitions = sorted((_definition(f) for f in forms), key=lambda d: d["version"])
    if not definitions:
        raise ValueError("layout needs at least one form definition")
    form_id = definitions[-1]["id"]
    inputs, computed, repeats = {}, {}, {}
    for definition in reversed(definitions):          # newest first wins the order
        for spec in definition["fields"]:
            target = computed if spec["type"] == "computed" else inputs
            target.setdefault(spec["name"], spec)
            if spec["type"] == "repeat":
                repeats.setdefault(spec["name"], []).append(spec)
    columns = [Column(name, "string", "record") for name in LEADING]
    columns += [Column(name, spec["type"], "data") for name, spec in inputs.items()]
    columns += [Column(name, _computed_type(spec), "computed")
                for name, spec in computed.items()]
    columns += [Column(name, _ENVELOPE_TYPES[name], "record") for name in TRAILING]
    if include_deleted:
        columns.append(Column("deleted", "boolean", "record"))
    return Layout(form_id, tuple(columns),
                  tuple(_repeat_layout(form_id, name, specs)
                        for name, specs in repeats.items()),
                  include_deleted)


_ENVELOPE_TYPES = {"created_by": "string", "created_at": "datetime",
                   "updated_at": "datetime", "device": "string", "flags": "flags",
                   "warnings": "string"}


def _computed_type(spec):
    # A computed field may name the type of its result; otherwise the value's
    # own Python type decides the cell (see `_typed`).
    return spec.get("result_type") or spec.get("value_type") or "computed"


def _repeat_layout(form_id, name, specs):
    inputs, computed = {}, {}
    for spec in specs:                                 # newest version first
        for child in spec.get("fields", []):
            target = computed if child["type"] == "computed" else inputs
            target.setdefault(child["name"], child)
    columns = [Column("parent_id", "string", "record"), Column("index", "integer", "record")]
    columns += [Column(n, s["type"], "data") for n, s in inputs.items()]
    columns += [Column(n, _computed_type(s), "computed") for n, s in computed.items()]
    return RepeatLayout(name, f"{form_id}.{name}", tuple(columns))


# --------------------------------------------------------------------- cells

def neutralise(text):
    """`text` made safe to open in a spreadsheet (CSV): see FORMULA_TRIGGERS."""
    if text and text[0] in FORMULA_TRIGGERS:
        return "'" + text
    return text


def _geopoint_text(value):
    parts = [value.get("lat"), value.get("lon")]
    if value.get("accuracy_m") is not None:
        parts.append(value["accuracy_m"])
    return " ".join(_number_text(p) for p in parts if p is not None)


def _number_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # 52.0 is how JSON gives back a decimal typed "52"; keep it a number
        # a spreadsheet reads as 52.
        return repr(value)
    return str(value) if isinstance(value, int) else repr(value)


def _plain(value, column):
    """The value as a Python scalar (str, int, float, bool or None)."""
    if value is None:
        return None
    if column.type == "repeat" and isinstance(value, list):
        return len(value)
    if isinstance(value, (list, tuple)):
        # An empty list (no choice ticked, no flag) is a blank cell, as null is.
        if not value:
            return None
        if any(isinstance(v, (dict, list)) for v in value):
            # A repeat nested in a repeat entry: kept whole, as JSON text.
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        return MULTI_SEPARATOR.join(str(v) for v in value)
    if isinstance(value, dict):
        if "lat" in value and "lon" in value:
            return _geopoint_text(value)
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def csv_cell(value, column):
    """One CSV cell: text neutralised, numbers and booleans as written."""
    value = _plain(value, column)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_text(value)
    return neutralise(str(value))


def _parse_date(text):
    return date.fromisoformat(text)


def _parse_time(text):
    return time.fromisoformat(text)


def _parse_datetime(text, tz):
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment                      # already a wall time; keep it
    return moment.astimezone(tz).replace(tzinfo=None)


class TextTooLong(ValueError):
    """A text value longer than an XLSX cell can hold."""


class XlsxCells:
    """Writes typed cells into xlsxwriter worksheets with shared formats."""

    def __init__(self, workbook, tz):
        self.tz = tz
        self.date = workbook.add_format({"num_format": "yyyy-mm-dd"})
        self.time = workbook.add_format({"num_format": "hh:mm:ss"})
        self.datetime = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.quoted = workbook.add_format({"quote_prefix": True})
        self.header = workbook.add_format({"bold": True})

    def write(self, sheet, row, col, value, column):
        """Write one cell; an unparsable date or time is kept as text."""
        value = _plain(value, column)
        if value is None:
            return
        if isinstance(value, bool):
            sheet.write_boolean(row, col, value)
        elif isinstance(value, int) and abs(value) < _EXCEL_MAX_INT:
            sheet.write_number(row, col, value)
        elif isinstance(value, float):
            sheet.write_number(row, col, value)
        elif isinstance(value, str) and column.type in ("date", "time", "datetime"):
            try:
                self._write_moment(sheet, row, col, value, column.type)
            except ValueError:
                self._write_text(sheet, row, col, value)
        else:
            self._write_text(sheet, row, col, str(value))

    def _write_moment(self, sheet, row, col, text, kind):
        if kind == "date":
            sheet.write_datetime(row, col, _parse_date(text), self.date)
        elif kind == "time":
            sheet.write_datetime(row, col, _parse_time(text), self.time)
        else:
            sheet.write_datetime(row, col, _parse_datetime(text, self.tz), self.datetime)

    def _write_text(self, sheet, row, col, text):
        if len(text) > _XLSX_MAX_TEXT:
            raise TextTooLong(f"A text value is longer than an XLSX cell holds "
                              f"({_XLSX_MAX_TEXT} characters)")
        if text and text[0] in FORMULA_TRIGGERS:
            sheet.write_string(row, col, text, self.quoted)
        else:
            sheet.write_string(row, col, text)


# ---------------------------------------------------------------------- rows

def _value(record, column):
    if column.source == "data":
        return (record.get("data") or {}).get(column.name)
    if column.source == "computed":
        return (record.get("computed") or {}).get(column.name)
    if column.name == "deleted":
        return bool(record.get("deleted"))
    if column.name == "warnings":
        # The stored validation warnings, one "field: message" each (JSONL
        # keeps them as stored, {field: [message]}).
        warnings = record.get("warnings")
        return " | ".join(describe_errors(warnings)) if warnings else None
    return record.get(column.name)


def row_values(record, lay):
    """The raw values of one record's main row, in column order."""
    return [_value(record, c) for c in lay.columns]


def repeat_rows(record, repeat):
    """The raw values of each entry of one repeat of a record, in order.

    A computed field of an entry is read from the entry, or from the record's
    `computed[<repeat>][i]` when the compiler keeps it there.
    """
    entries = (record.get("data") or {}).get(repeat.field) or []
    derived = (record.get("computed") or {}).get(repeat.field)
    derived = derived if isinstance(derived, list) else []
    for index, entry in enumerate(entries, start=1):
        entry = entry if isinstance(entry, dict) else {}
        extra = derived[index - 1] if index <= len(derived) and \
            isinstance(derived[index - 1], dict) else {}
        yield [record["id"], index] + [
            entry.get(c.name, extra.get(c.name)) if c.source == "computed" else entry.get(c.name)
            for c in repeat.columns[2:]]


@dataclass
class Tally:
    """Rows written so far, per sheet or file (for the audit log)."""
    rows: dict = field(default_factory=dict)

    def add(self, name, n=1):
        self.rows[name] = self.rows.get(name, 0) + n

    @property
    def total(self):
        return sum(n for name, n in self.rows.items() if "." not in name)


# ------------------------------------------------------------------- writers

class _Buffer:
    """A file-like sink whose contents are taken out between rows."""

    def __init__(self):
        self.parts = []
        self.size = 0

    def write(self, data):
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def flush(self):
        pass

    def take(self):
        data = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in self.parts)
        self.parts.clear()
        self.size = 0
        return data


def csv_chunks(records, lay, *, bom=False, repeat=None, tally=None, chunk_bytes=64 * 1024):
    """Stream one form (or one of its repeats) as UTF-8 CSV, in byte chunks.

    :param records: an iterator of record dicts (deleted ones already filtered).
    :param lay: the form's `Layout`.
    :param bom: start with a UTF-8 byte order mark (Excel on Windows needs it
        to read Vietnamese text as UTF-8).
    :param repeat: a `RepeatLayout` of `lay` to write its entries instead.
    :param tally: a `Tally` counting the rows written.
    """
    tally = tally if tally is not None else Tally()
    sink = _Buffer()
    writer = csv.writer(sink, lineterminator="\r\n")   # RFC 4180
    if bom:
        sink.write(codecs.BOM_UTF8)
    columns = repeat.columns if repeat else lay.columns
    writer.writerow([c.name for c in columns])
    name = repeat.name if repeat else lay.form
    tally.rows.setdefault(name, 0)
    for record in records:
        rows = repeat_rows(record, repeat) if repeat else [row_values(record, lay)]
        for values in rows:
            writer.writerow([csv_cell(v, c) for v, c in zip(values, columns)])
            tally.add(name)
        if sink.size >= chunk_bytes:
            yield sink.take()
    tail = sink.take()
    if tail:
        yield tail


def jsonl_record(record):
    """One record as a JSONL object: the stored values exactly."""
    out = {"id": record["id"], "form": record["form"],
           "form_version": record["form_version"], "area": record["area"],
           "data": record.get("data") or {}, "computed": record.get("computed") or {}}
    for name in TRAILING:
        out[name] = record.get(name)
    out["deleted"] = bool(record.get("deleted"))
    return out


def jsonl_chunks(records, lay=None, *, tally=None, chunk_bytes=64 * 1024):
    """Stream records as JSON Lines (UTF-8, one object per line)."""
    tally = tally if tally is not None else Tally()
    name = lay.form if lay else "records"
    tally.rows.setdefault(name, 0)
    parts, size = [], 0
    for record in records:
        line = json.dumps(jsonl_record(record), ensure_ascii=False,
                          separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        parts.append(data)
        size += len(data)
        tally.add(name)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def sheet_name(name, taken):
    """A valid, unique Excel sheet name for `name` (31 characters at most)."""
    clean = "".join("_" if ch in _SHEET_FORBIDDEN else ch for ch in name)[:31] or "sheet"
    candidate, n = clean, 2
    while candidate.lower() in taken:
        suffix = f"~{n}"
        candidate = clean[:31 - len(suffix)] + suffix
        n += 1
    taken.add(candidate.lower())
    return candidate


class XlsxWriter:
    """A workbook built in constant memory into `path`, one sheet per form
    and one per repeat; sheets can be filled in any interleaving as long as
    each one's rows come in order (constant_memory keeps one row per sheet).

    A sheet that reaches Excel's row limit continues on a new sheet named
    "<name> (2)", "<name> (3)", … with the same header: xlsxwriter would
    otherwise drop the extra rows silently.
    """

    #: Excel's rows per sheet, the header row included.
    MAX_ROWS = 1_048_576

    def __init__(self, path, tz="Asia/Ho_Chi_Minh", tmpdir=None, max_rows=MAX_ROWS):
        self.workbook = xlsxwriter.Workbook(path, {
            "constant_memory": True, "tmpdir": tmpdir or os.path.dirname(path),
            "strings_to_numbers": False, "strings_to_formulas": False,
            "strings_to_urls": False})
        self.cells = XlsxCells(self.workbook, ZoneInfo(tz) if isinstance(tz, str) else tz)
        self.max_rows = max_rows
        self.sheets = {}              # name -> [worksheet, next row, columns, parts]
        self.taken = set()

    def _new_sheet(self, title, columns):
        sheet = self.workbook.add_worksheet(sheet_name(title, self.taken))
        for col, column in enumerate(columns):
            sheet.write_string(0, col, column.name, self.cells.header)
        sheet.freeze_panes(1, 0)
        return sheet

    def add_sheet(self, name, columns):
        self.sheets[name] = [self._new_sheet(name, columns), 1, columns, 1]

    def add_layout(self, lay):
        self.add_sheet(lay.form, lay.columns)
        for repeat in lay.repeats:
            self.add_sheet(repeat.name, repeat.columns)

    def write_row(self, name, values):
        entry = self.sheets[name]
        if entry[1] >= self.max_rows:
            entry[3] += 1
            entry[0], entry[1] = self._new_sheet(f"{name} ({entry[3]})", entry[2]), 1
        sheet, row, columns, _ = entry
        for col, (value, column) in enumerate(zip(values, columns)):
            self.cells.write(sheet, row, col, value, column)
        entry[1] = row + 1

    def write_record(self, record, lay, tally):
        self.write_row(lay.form, row_values(record, lay))
        tally.add(lay.form)
        for repeat in lay.repeats:
            for values in repeat_rows(record, repeat):
                self.write_row(repeat.name, values)
                tally.add(repeat.name)

    def close(self):
        self.workbook.close()


def write_xlsx(path, parts, *, tz="Asia/Ho_Chi_Minh", tally=None,
               max_rows=XlsxWriter.MAX_ROWS):
    """Build an XLSX file at `path`.

    :param parts: a list of (Layout, records) pairs: one sheet (plus repeat
        sheets) per layout, every sheet created before any row is written so
        the sheet order is the list's order even for empty forms.
    """
    tally = tally if tally is not None else Tally()
    book = XlsxWriter(path, tz, max_rows=max_rows)
    try:
        for lay, _ in parts:
            book.add_layout(lay)
            tally.rows.setdefault(lay.form, 0)
        for lay, records in parts:
            for record in records:
                book.write_record(record, lay, tally)
    finally:
        book.close()
    return tally


def write_xlsx_interleaved(path, layouts, records, *, tz="Asia/Ho_Chi_Minh", tally=None):
    """Build an XLSX of several forms from ONE pass over records of any form,
    each going to its form's sheet (records of other forms are skipped)."""
    tally = tally if tally is not None else Tally()
    by_form = {lay.form: lay for lay in layouts}
    book = XlsxWriter(path, tz)
    try:
        for lay in layouts:
            book.add_layout(lay)
            tally.rows.setdefault(lay.form, 0)
        for record in records:
            lay = by_form.get(record["form"])
            if lay is not None:
                book.write_record(record, lay, tally)
    finally:
        book.close()
    return tally


def file_chunks(path, chunk_bytes=256 * 1024, remove=True):
    """Stream a file's bytes, then delete it (also when the client goes away)."""
    try:
        with open(path, "rb") as handle:
            while True:
                data = handle.read(chunk_bytes)
                if not data:
                    break
                yield data
    finally:
        if remove:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class _ZipSink(io.RawIOBase):
    """A write-only, unseekable sink: zipfile then writes data descriptors,
    which is what lets a zip be streamed without knowing sizes upfront."""

    def __init__(self):
        self.buffer = _Buffer()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(bytes(data))


def zip_chunks(parts, *, bom=False, tally=None):
    """Stream a zip holding one CSV per form and one per repeat.

    :param parts: (Layout, records_factory) pairs; `records_factory()` gives a
        fresh iterator of the form's records and is called once for the form
        file and once per repeat (inside one read snapshot, so they agree).
    """
    tally = tally if tally is not None else Tally()
    sink = _ZipSink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)
    for lay, records_factory in parts:
        targets = [(f"{lay.form}.csv", None)]
        targets += [(f"{r.name}.csv", r) for r in lay.repeats]
        for filename, repeat in targets:
            with archive.open(filename, "w", force_zip64=True) as member:
                for data in csv_chunks(records_factory(), lay, bom=bom, repeat=repeat,
                                       tally=tally):
                    member.write(data)
                    out = sink.buffer.take()
                    if out:
                        yield out
            out = sink.buffer.take()
            if out:
                yield out
    archive.close()
    out = sink.buffer.take()
    if out:
        yield out


# ------------------------------------------------------------------- reading

@dataclass
class Filters:
    """What to export, besides the form: all conditions combine with AND.

    `since` is inclusive and `until` exclusive, both on `updated_at` (server
    commit time), so consecutive windows never overlap or leave a gap.
    """
    area_sql: str = "1"
    area_params: list = field(default_factory=list)
    since: str | None = None
    until: str | None = None
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
        self.last_updated_at, self.last_seq = row if row else (None, 0)

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
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


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


# ----------------------------------------------------------------- one export

class ExportDenied(ExportError):
    """The user may not export this (403)."""


class ExportNotFound(ExportError):
    """No such form, version or repeat (404)."""


CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/zip",
}


@dataclass
class Export:
    """A prepared export: its snapshot is open, its body not yet produced.

    `chunks` yields the body; `close()` ends the snapshot and removes any
    temporary file (call it whether or not `chunks` was consumed).
    """
    filename: str
    content_type: str
    count: int                    # main rows (records) in the export
    next_since: str | None        # the newest commit time in the snapshot
    forms: list
    restricted: list              # restricted forms included (audited as reads)
    details: dict                 # what the audit log records
    chunks: object = None
    length: int | None = None
    tally: Tally = field(default_factory=Tally)
    _cleanup: list = field(default_factory=list)

    def close(self):
        while self._cleanup:
            self._cleanup.pop()()


def _readable_forms(catalog, user):
    """{form_id: [CompiledForm, ...]} of every form the user may read."""
    hidden = set(catalog.unreadable_forms(user))
    forms = {}
    for compiled in catalog.all():
        forms.setdefault(compiled.id, []).append(compiled)
    return {fid: versions for fid, versions in sorted(forms.items()) if fid not in hidden}


def open_export(path, catalog, user, target, fmt, *, area=None, since=None, until=None,
                version=None, include_deleted=False, bom=False, repeat=None,
                tz="Asia/Ho_Chi_Minh", tmpdir=None, chunk=CHUNK):
    """Check an export request and open its snapshot.

    :param path: the SQLite database file.
    :param catalog: the published forms (`server.catalog.Catalog`).
    :param user: {username, role, areas}; a health worker may not export.
    :param target: a form id, or "all".
    :param fmt: csv/xlsx/jsonl for a form; xlsx/zip for "all".
    :param since, until: ISO 8601 strings (inclusive / exclusive, commit time).
    :param repeat: CSV of one form only: export that repeat's entries.
    :param chunk: records read from the database per query.
    :raises ExportError, ExportDenied, ExportNotFound: with a clear message.
    """
    if user["role"] not in ("supervisor", "admin"):
        raise ExportDenied("role", "Only supervisors and admins may export records.")
    if area is not None:
        from schemas.wire import AREA_RE
        if not AREA_RE.match(area):
            raise ExportError("area", "area must be an area code like QN.LM.03, "
                              f"not {area[:40]!r}.")
    scopes = narrowed_areas(user.get("areas") or [], area, user["role"] == "admin")
    if scopes == []:
        raise ExportDenied("area", f"Area {area} is outside your areas.")
    readable = _readable_forms(catalog, user)
    if target == "all":
        if fmt not in ALL_FORMATS:
            raise ExportError("format", f"all.{fmt} is not offered; use all.xlsx or all.zip.")
        if version is not None or repeat is not None:
            raise ExportError("version" if version is not None else "repeat",
                              "version and repeat apply to a single form's export.")
        chosen = readable
    else:
        if fmt not in FORMATS:
            raise ExportError("format", f"A form exports as csv, xlsx or jsonl, not {fmt!r}.")
        versions = [f for f in catalog.all() if f.id == target]
        if not versions:
            raise ExportNotFound("form", f"No published form {target!r}.")
        if target not in readable:
            raise ExportDenied("form", f"Records of {target} are restricted to "
                               f"{_definition(versions[-1]).get('restricted_to')}.")
        if version is not None:
            versions = [f for f in versions if f.version == version]
            if not versions:
                raise ExportNotFound("version", f"{target} has no published version {version}.")
        chosen = {target: versions}
    layouts = [layout(v, include_deleted) for v in chosen.values()]
    repeat_layout = None
    if repeat is not None:
        if fmt != "csv":
            raise ExportError("repeat", "repeat= applies to CSV; XLSX has a sheet per repeat "
                              "and JSONL nests the entries.")
        repeat_layout = next((r for r in layouts[0].repeats if r.field == repeat), None)
        if repeat_layout is None:
            raise ExportNotFound("repeat", f"{target} has no repeat field {repeat!r}.")
    where, params = area_clause(scopes)
    filters = Filters(where, params,
                      since=parse_moment(since, tz, "since") if since else None,
                      until=parse_moment(until, tz, "until") if until else None,
                      version=version, include_deleted=include_deleted)
    restricted = [fid for fid, v in chosen.items() if _definition(v[-1]).get("restricted_to")]
    details = {"target": target, "format": fmt, "forms": list(chosen),
               "filters": {"area": area, "since": filters.since, "until": filters.until,
                           "version": version, "include_deleted": include_deleted,
                           "repeat": repeat}}
    snapshot, job = Snapshot(path), None
    try:
        count = snapshot.count(list(chosen), filters)
        details["rows"] = count
        name = target if repeat is None else f"{target}.{repeat}"
        job = Export(export_filename(name, fmt), CONTENT_TYPES[fmt], count,
                     snapshot.last_updated_at, list(chosen), restricted, details)
        job._cleanup.append(snapshot.close)
        read = functools.partial(snapshot.records, chunk=chunk)
        _attach_body(job, snapshot, read, layouts, filters, fmt, bom, repeat_layout, tz,
                     tmpdir)
    except BaseException:
        if job is not None:
            job.close()            # the snapshot, and a half-built XLSX file
        snapshot.close()
        raise
    return job


def export_filename(form, fmt):
    """The download name: `<form>.<fmt>` (`all.xlsx`, `all.zip`)."""
    return f"{form}.{fmt}"


def _closing(chunks, job):
    """Yield `chunks`, then close the job, also when the client goes away."""
    try:
        yield from chunks
    finally:
        job.close()


def _attach_body(job, snapshot, read, layouts, filters, fmt, bom, repeat_layout, tz, tmpdir):
    if fmt == "xlsx":
        # Built now, in constant memory, into a temporary file: XLSX is a zip
        # whose directory comes last, so it cannot be sent before it is whole.
        handle, path = tempfile.mkstemp(suffix=".xlsx", prefix="fieldsync-export-", dir=tmpdir)
        os.close(handle)
        job._cleanup.append(lambda: _unlink(path))
        try:
            if len(layouts) == 1:
                write_xlsx(path, [(layouts[0], read(layouts[0].form, filters))],
                           tz=tz, tally=job.tally)
            else:
                records = read([lay.form for lay in layouts], filters)
                write_xlsx_interleaved(path, layouts, records, tz=tz, tally=job.tally)
        except TextTooLong as exc:
            raise ExportError("format", f"{exc}; export this form as CSV or JSONL.") from None
        snapshot.close()
        job.length = os.path.getsize(path)
        job.chunks = _closing(file_chunks(path), job)
    elif fmt == "zip":
        parts = [(lay, (lambda form=lay.form: read(form, filters)))
                 for lay in layouts]
        job.chunks = _closing(zip_chunks(parts, bom=bom, tally=job.tally), job)
    elif fmt == "csv":
        lay = layouts[0]
        job.chunks = _closing(csv_chunks(read(lay.form, filters), lay, bom=bom,
                                         repeat=repeat_layout, tally=job.tally), job)
    else:
        lay = layouts[0]
        job.chunks = _closing(jsonl_chunks(read(lay.form, filters), lay,
                                           tally=job.tally), job)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def __getattr__(name):
    # `fieldsync-server export` lives in export_cli (click); server/cli.py
    # imports it from here, and this keeps exports itself free of click.
    if name == "export_command":
        from .export_cli import export_command
        return export_command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

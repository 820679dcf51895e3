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

Modules (this package re-exports what callers use: `from server import
exports; exports.open_export(...)`):

- `columns`: the `Layout` of a form's export, each record's row values, `Tally`;
- `cells`: a value as a CSV cell or a typed XLSX cell, the formula guard;
- `writers`: CSV, JSONL and zip, streamed in byte chunks;
- `xlsx`: the workbook built in a temporary file, then streamed;
- `query`: request parameters, area scopes, `Filters`, the read `Snapshot`;
- `job`: `open_export`, which checks a request and gives an `Export`.

`fieldsync-server export` is in server/cli.py, with the other commands; this
package knows nothing of click or Flask.
"""
from .cells import (FORMULA_TRIGGERS, MULTI_SEPARATOR, UTC_FORMAT, YES_NO, TextTooLong,
                    XlsxCells, csv_cell, neutralise)
from .columns import (LEADING, TRAILING, Column, Layout, RepeatLayout, Tally, layout,
                      repeat_rows, row_values)
from .job import (ALL_FORMATS, CONTENT_TYPES, FORMATS, Export, ExportDenied, ExportNotFound,
                  export_filename, open_export)
from .query import (CHUNK, ExportError, Filters, Snapshot, area_clause, narrowed_areas,
                    parse_after, parse_bool, parse_moment)
from .writers import csv_chunks, jsonl_chunks, jsonl_record, zip_chunks
from .xlsx import XlsxWriter, file_chunks, sheet_name, write_xlsx, write_xlsx_interleaved

__all__ = [
    # columns
    "Column", "Layout", "RepeatLayout", "LEADING", "TRAILING", "layout", "row_values",
    "repeat_rows", "Tally",
    # cells
    "MULTI_SEPARATOR", "FORMULA_TRIGGERS", "neutralise", "csv_cell", "XlsxCells", "TextTooLong",
    "YES_NO", "UTC_FORMAT",
    # writers and xlsx
    "csv_chunks", "jsonl_record", "jsonl_chunks", "zip_chunks", "sheet_name", "XlsxWriter",
    "write_xlsx", "write_xlsx_interleaved", "file_chunks",
    # query
    "CHUNK", "Filters", "Snapshot", "ExportError", "parse_moment", "parse_after", "parse_bool",
    "narrowed_areas", "area_clause",
    # job
    "FORMATS", "ALL_FORMATS", "CONTENT_TYPES", "Export", "ExportDenied", "ExportNotFound",
    "open_export", "export_filename",
]

"""The XLSX writer: a workbook built by xlsxwriter in `constant_memory` mode
into a temporary file (XLSX is a zip whose directory comes last, so it cannot
be streamed while it is built), then streamed by `file_chunks` and deleted."""
import os

import xlsxwriter

from .cells import XlsxCells
from .columns import Tally, repeat_rows, row_values

# Excel's sheet names: at most 31 characters, none of these.
_SHEET_FORBIDDEN = set("[]:*?/\\")


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

    def __init__(self, path, tmpdir=None, max_rows=MAX_ROWS):
        self.workbook = xlsxwriter.Workbook(path, {
            "constant_memory": True, "tmpdir": tmpdir or os.path.dirname(path),
            "strings_to_numbers": False, "strings_to_formulas": False,
            "strings_to_urls": False})
        self.cells = XlsxCells(self.workbook)
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


def write_xlsx(path, parts, *, tally=None, max_rows=XlsxWriter.MAX_ROWS):
    """Build an XLSX file at `path`.

    :param parts: a list of (Layout, records) pairs: one sheet (plus repeat
        sheets) per layout, every sheet created before any row is written so
        the sheet order is the list's order even for empty forms.
    """
    tally = tally if tally is not None else Tally()
    book = XlsxWriter(path, max_rows=max_rows)
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


def write_xlsx_interleaved(path, layouts, records, *, tally=None):
    """Build an XLSX of several forms from ONE pass over records of any form,
    each going to its form's sheet (records of other forms are skipped)."""
    tally = tally if tally is not None else Tally()
    by_form = {lay.form: lay for lay in layouts}
    book = XlsxWriter(path)
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

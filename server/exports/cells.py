"""One cell's value as CSV text or as a typed XLSX cell, with the
formula-injection guard (see FORMULA_TRIGGERS) applied to both."""
import json
from datetime import date, datetime, time

#: Joins the values of a multi_choice field (and the flags) in CSV and XLSX.
#: Choice values are identifiers, which never contain it.
MULTI_SEPARATOR = ";"

#: A text cell starting with one of these could run as a formula in a
#: spreadsheet (OWASP "CSV injection"); `'` is included so that the escape
#: can always be undone by stripping one leading `'`.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")

_XLSX_MAX_TEXT = 32767
_EXCEL_MAX_INT = 2 ** 53


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

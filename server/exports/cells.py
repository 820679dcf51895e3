"""One cell's value as CSV text or as a typed XLSX cell, with the
formula-injection guard (see FORMULA_TRIGGERS) applied to both.

One convention in both formats (issue 17): a yes/no value is the word
``yes`` or ``no`` (YES_NO), and a moment (a datetime field, ``created_at``,
``updated_at``) is in UTC and says so: ``2025-03-01T03:30:00Z`` in CSV, a
date cell shown as ``2025-03-01 03:30:00 UTC`` in XLSX. A datetime stored
without an offset cannot be put in UTC: both keep its text as stored."""
import json
from datetime import date, datetime, time, timezone

#: Joins the values of a multi_choice field (and the flags) in CSV and XLSX.
#: Choice values are identifiers, which never contain it.
MULTI_SEPARATOR = ";"

#: A text cell starting with one of these could run as a formula in a
#: spreadsheet (OWASP "CSV injection"); `'` is included so that the escape
#: can always be undone by stripping one leading `'`.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")

#: The words of a boolean, the same in CSV and XLSX (a boolean field's
#: answers are written as the choice fields' own "yes"/"no" values).
YES_NO = {True: "yes", False: "no"}

#: XLSX's display of a moment: UTC, labelled in every cell.
UTC_FORMAT = 'yyyy-mm-dd hh:mm:ss "UTC"'

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
        return YES_NO[value]
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
        return YES_NO[value]
    if isinstance(value, (int, float)):
        return _number_text(value)
    if isinstance(value, str) and column.type == "datetime" and not value.endswith("Z"):
        moment = utc_moment(value)            # "…Z" is already UTC, labelled: as stored
        if moment is not None:
            return utc_text(moment)
    return neutralise(str(value))


def utc_moment(text):
    """An ISO 8601 time with an offset (or ``Z``) as a naive UTC datetime;
    None when it has no offset or is not a time."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def utc_text(moment):
    """A naive UTC datetime as ISO 8601 with ``Z``: milliseconds when it has
    any (``created_at`` does), else seconds."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def _parse_date(text):
    return date.fromisoformat(text)


def _parse_time(text):
    return time.fromisoformat(text)


def _parse_datetime(text):
    moment = utc_moment(text)
    if moment is None:
        raise ValueError(f"not a time with an offset: {text!r}")  # kept as text
    return moment


class TextTooLong(ValueError):
    """A text value longer than an XLSX cell can hold."""


class XlsxCells:
    """Writes typed cells into xlsxwriter worksheets with shared formats."""

    def __init__(self, workbook):
        # Moments are written in UTC, labelled (issue 17): no zone is needed.
        self.date = workbook.add_format({"num_format": "yyyy-mm-dd"})
        self.time = workbook.add_format({"num_format": "hh:mm:ss"})
        self.datetime = workbook.add_format({"num_format": UTC_FORMAT})
        self.quoted = workbook.add_format({"quote_prefix": True})
        self.header = workbook.add_format({"bold": True})

    def write(self, sheet, row, col, value, column):
        """Write one cell; an unparsable date or time is kept as text."""
        value = _plain(value, column)
        if value is None:
            return
        if isinstance(value, bool):
            sheet.write_string(row, col, YES_NO[value])
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
            sheet.write_datetime(row, col, _parse_datetime(text), self.datetime)

    def _write_text(self, sheet, row, col, text):
        if len(text) > _XLSX_MAX_TEXT:
            raise TextTooLong(f"A text value is longer than an XLSX cell holds "
                              f"({_XLSX_MAX_TEXT} characters)")
        if text and text[0] in FORMULA_TRIGGERS:
            sheet.write_string(row, col, text, self.quoted)
        else:
            sheet.write_string(row, col, text)

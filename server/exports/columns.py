"""The columns of an export and each record's values in them.

A form's `Layout` is built from the versions being exported (the newest
gives the order; fields only older versions had come after); `row_values` and
`repeat_rows` read one record into those columns, raw (the writers format the
cells: see cells.py). `Tally` counts the rows written, per sheet or file.
"""
from dataclasses import dataclass, field

from schemas.forms import describe_errors

LEADING = ("id", "area")
TRAILING = ("created_by", "created_at", "updated_at", "device", "flags", "warnings")


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

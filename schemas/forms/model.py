"""What a compiled form is made of: its fields (``_Spec``), the groups they
sit in (the record, a repeat's entry), form-level checks, and the two types
callers see, ``Result`` and ``FormDefinitionError``."""
from __future__ import annotations

from typing import NamedTuple

UNKNOWN = "unknown field"
DERIVED = "computed; it is derived, never sent"


class FormDefinitionError(ValueError):
    """A form definition is malformed; the message names the file and the field."""


class Result(NamedTuple):
    """The outcome of a validation.

    ``data`` holds the normalised values; ``errors`` and ``warnings`` map a
    field to its messages, and a repeat to ``{"<index>": {field: [...]}}``.
    """

    data: dict
    errors: dict
    warnings: dict
    #: ``compute(data)``, when the validation already derived it (a complete
    #: record on the fast path); else None.
    computed: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


class _Spec:
    """One field of a compiled form (or of a repeat entry)."""

    __slots__ = ("name", "path", "type", "definition", "required", "warn", "relevant",
                 "rel_gate", "rel_text", "bounds", "static", "choice_order", "choice_message",
                 "choice_list", "group", "function", "inputs", "reads", "result_type", "limits")

    def __init__(self, definition, path):
        self.definition = definition
        self.name = definition.get("name")
        self.path = path
        self.type = definition.get("type")
        self.required = False
        self.warn = False
        self.relevant = None
        self.rel_gate = frozenset()
        self.rel_text = ""
        self.bounds = []         # bounds checked after the marshmallow pass
        self.static = []         # value -> message | None, no other value needed
        self.limits = (None, None)   # the literal (min, max) among static
        self.choice_order = {}
        self.group = None        # a repeat's entry group
        self.function = None
        self.inputs = ()         # computed: (parameter, level, field name)
        self.reads = None        # computed: expanded (level, spec) it depends on
        self.result_type = None


class _Group:
    """The fields of a form, or of one entry of a repeat (whose names resolve
    to the entry's fields first, then the parent record's)."""

    def __init__(self, parent):
        self.parent = parent
        self.specs: list[_Spec] = []
        self.by_name: dict[str, _Spec] = {}
        self.inputs: frozenset = frozenset()
        self.derived: frozenset = frozenset()
        self.computed: list[_Spec] = []
        self.derivers: tuple = ()         # fn(vals, parent) per computed field, in order
        self.rules: list[_Spec] = []      # required or relevant
        self.bounded: list[_Spec] = []    # dynamic bounds or warn-only static checks
        self.repeats: list[_Spec] = []
        self.checks: list[_Check] = []
        self.schema = None
        self.load = None                  # data -> clean dict, or None (see _loader)

    def resolve(self, name):
        """(level, spec) for a name: level 0 is this group, 1 the parent."""
        if name in self.by_name:
            return 0, self.by_name[name]
        if self.parent is not None and name in self.parent.by_name:
            return 1, self.parent.by_name[name]
        return None

    def extra_keys(self, data) -> dict:
        """Messages for keys that are no input field of this group."""
        if data.keys() <= self.inputs:
            return {}
        return {k: [DERIVED if k in self.derived else UNKNOWN] for k in data if k not in self.inputs}

    def gate(self, reads) -> frozenset:
        """The top-level field names a rule reading `reads` needs in a change."""
        level = 1 if self.parent is not None else 0
        return frozenset(s.name for lvl, s in _expand(reads) if lvl == level)


def _expand(reads):
    """Replace computed fields by the input fields they are derived from."""
    out = set()
    for level, spec in reads:
        if spec.type == "computed":
            out.update((max(level, lvl), s) for lvl, s in spec.reads)
        else:
            out.add((level, spec))
    return out


class _Check:
    """A form-level check: `assert` must hold (when `when` holds), else the
    message goes to `field`."""

    __slots__ = ("field", "test", "when", "message", "warn", "gate")

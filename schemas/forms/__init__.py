"""Form definitions: load them, check them, compile them once, validate records.

A form is data (DESIGN.md "Forms are data"): a JSON file naming fields, their
types and bounds, skip logic (``relevant``), computed fields and form-level
checks. Conditions are data too, never code. This package turns a definition
into a ``CompiledForm`` whose validators the server and every device share, so
a device validates offline exactly as the server will.

Validation has two layers. Per field, a marshmallow schema checks the type,
literal bounds, lengths, patterns and choices, and puts the value in canonical
form (so equal values compare equal in the merge: ``52.5 == 52.50``, NFC text,
multi_choice in definition order). Across fields, compiled closures check skip
logic, required fields, bounds on "today" or on another field, and the form's
checks. Three modes: ``validate_create`` (a complete new record),
``validate_change`` (only the fields present, and only the rules whose inputs
are all present) and ``validate_record`` (a merged record, every rule).

Decisions worth knowing:

- Canonical values: see schemas/forms/values.py.
- Required means a value: null, ``""`` and ``[]`` count as missing.
- "today" is the date in ``FIELDSYNC_TIMEZONE`` (default Asia/Ho_Chi_Minh);
  every today-relative bound widens by one day on its accepting side.
- One problem at a time: rules reading a field with a type error are skipped,
  and so is a check whose field already has an error ("is required").
- A repeat travels whole: in a change its entries are checked completely, but
  their rules that read the parent record wait until those fields are present.
- Message keys beyond field names: ``_record`` (data is not an object),
  ``_entry`` (a repeat entry is not an object), ``_`` (a repeat's own messages
  when its entries have messages too).

The modules, each importing only those above it in this list:

- ``messages``: languages (a definition's text in a language; the one table
  of the validator's messages in Vietnamese).
- ``today``: "today" in the deployment time zone, dates moved by an offset.
- ``values``: a parser per field type, ``FormField``, a group's schema.
- ``model``: ``_Spec``, ``_Group``, ``_Check``; ``Result``, ``FormDefinitionError``.
- ``bounds``: ``_Bound`` (literal, "today…" or another field's min/max).
- ``conditions``: the rule language's closures.
- ``evaluate``: the general path (derive computed fields, the cross-field
  rules); ``FAST``, the fast paths' switch.
- ``fast``: the fast paths (``_loader``, ``_complete``) and what they agree with.
- ``compiler``: ``_Compiler``, a definition checked and compiled to groups.
- ``compiled``: ``CompiledForm`` (validate, compute), ``describe_errors``.
- ``load``: definitions from files and package data, ``definition_sha256``,
  ``compile_form`` (cached) and ``FormRegistry``.

This file is the one public entry: import from ``schemas.forms``. The form
definitions themselves are data beside the modules, ``<form_id>/v<n>.json``.
"""
from __future__ import annotations

import sys
import types

from . import evaluate
from .compiled import CompiledForm, describe_errors
from .compiler import OPERATORS, TYPES
from .load import FormRegistry, bundled_definitions, compile_form, definition_sha256, load_definition
from .messages import best_language, text_in
from .model import FormDefinitionError, Result
from .today import DEFAULT_TIMEZONE, local_today
from .values import FormField

__all__ = [
    "CompiledForm", "DEFAULT_TIMEZONE", "FAST", "FormDefinitionError", "FormField", "FormRegistry",
    "OPERATORS", "Result", "TYPES", "best_language", "bundled_definitions", "compile_form",
    "definition_sha256", "text_in",
    "describe_errors", "load_definition", "local_today",
]


class _Package(types.ModuleType):
    """``schemas.forms.FAST`` is the switch the code reads (``evaluate.FAST``):
    setting it here (as tests do, to compare the two paths) sets that one."""

    @property
    def FAST(self) -> bool:
        return evaluate.FAST

    @FAST.setter
    def FAST(self, value: bool) -> None:
        evaluate.FAST = value


sys.modules[__name__].__class__ = _Package

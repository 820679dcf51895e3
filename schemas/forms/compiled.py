"""``CompiledForm``: one version of one form, compiled; it validates (the
fast path first, else the schema and the general rule loop), computes and
describes its errors."""
from __future__ import annotations

import json

from marshmallow import ValidationError

from . import evaluate
from .compiler import _Compiler
from .evaluate import _derive, _evaluate
from .fast import _complete
from .messages import DEFAULT, english, localize, text_in
from .model import Result
from .today import local_today

class CompiledForm:
    """One version of one form, compiled: its marshmallow schema and rules."""

    def __init__(self, definition, sha256, source):
        self.definition = json.loads(json.dumps(definition))  # a private copy
        compiler = _Compiler(source)
        self._top = compiler.form(self.definition)
        self._complete = _complete(self._top)
        self._uses_today = compiler.uses_today
        d = self.definition
        self.id, self.version, self.title = d["id"], d["version"], english(d["title"])
        self.restricted_to = d.get("restricted_to")
        self.sha256 = sha256
        self.source = source
        self.schema = self._top.schema
        self.field_names = [s.name for s in self._top.specs if s.type != "computed"]
        self.computed_names = [s.name for s in self._top.specs if s.type == "computed"]
        self.fields = {s.name: s.definition for s in self._top.specs}
        self._texts = compiler.texts   # {English message: {lang: text}}

    def __repr__(self):
        return f"<CompiledForm {self.id} v{self.version}>"

    def validate_create(self, data, today=None) -> Result:
        """A new record: every field it holds, all rules (required, skip logic,
        bounds, checks)."""
        return self._validate(data, True, today)

    def validate_record(self, data, today=None) -> Result:
        """A merged record's values: every rule, as for a create."""
        return self._validate(data, True, today)

    def validate_change(self, data, today=None) -> Result:
        """An edit: only the fields present; a cross-field rule only when every
        field it reads is in the change (the merged record is checked after)."""
        return self._validate(data, False, today)

    def compute(self, data) -> dict:
        """The computed fields of a record's (normalised) values; a repeat with
        computed fields gives a list with one dict per entry."""
        top = self._top
        vals = dict(data)
        _derive(top, vals, None)
        out = {s.name: vals[s.name] for s in top.computed}
        for rep in top.repeats:
            if rep.group.computed:
                entries = data.get(rep.name)
                if isinstance(entries, list):
                    out[rep.name] = []
                    for entry in entries:
                        ev = dict(entry) if isinstance(entry, dict) else {}
                        _derive(rep.group, ev, vals)
                        out[rep.name].append({s.name: ev[s.name] for s in rep.group.computed})
        return {k: out[k] for k in self.computed_names + [r.name for r in top.repeats] if k in out}

    def relevance(self, data) -> dict:
        """Which fields are asked, given a draft's (normalised) values: the
        same skip-logic closures validation runs, so a page hides exactly what
        the validator would call "not asked" (the device app's live form).

        :returns: ``{name: bool}`` for every field, and ``{"baby.0.sex": bool}``
            for each field of each entry of a repeat.
        """
        top = self._top
        vals = dict(data)
        _derive(top, vals, None)
        out = {}
        for spec in top.specs:
            out[spec.name] = spec.relevant is None or bool(spec.relevant(vals, None))
        for rep in top.repeats:
            entries = vals.get(rep.name)
            for index, entry in enumerate(entries if isinstance(entries, list) else ()):
                ev = dict(entry) if isinstance(entry, dict) else {}
                _derive(rep.group, ev, vals)
                for spec in rep.group.specs:
                    out[f"{rep.name}.{index}.{spec.name}"] = (
                        spec.relevant is None or bool(spec.relevant(ev, vals)))
        return out

    # -- languages (DESIGN.md "Languages in form definitions") --------------------

    def title_in(self, lang=DEFAULT) -> str:
        """The form's title in `lang` (English when it has none in `lang`)."""
        return text_in(self.definition["title"], lang)

    def describe_fields(self, lang=DEFAULT) -> list[dict]:
        """What a page needs to render this form in `lang`, in form order: one
        dict per field (see docs/internals.md "Rendering a form")."""
        return [_describe(spec, lang) for spec in self._top.specs]

    def describe_form(self, lang=DEFAULT) -> dict:
        """``{"id", "version", "title", "fields": describe_fields(lang)}``."""
        return {"id": self.id, "version": self.version, "title": self.title_in(lang),
                "fields": self.describe_fields(lang)}

    def localize(self, messages, lang=DEFAULT):
        """A ``{field: [message]}`` tree (errors or warnings, from this form's
        validation, here or on the server) with each message in `lang`; a
        message with no translation stays English. English: unchanged."""
        return localize(messages, lang, self._texts)

    def describe_errors(self, errors, lang=DEFAULT) -> list[str]:
        """``describe_errors`` in `lang` ("baby[0].sex: phải là một trong: male, female")."""
        return describe_errors(self.localize(errors, lang))

    def _validate(self, data, complete, today):
        if not isinstance(data, dict):
            return Result({}, {"_record": ["must be an object of field values"]}, {})
        if today is None and self._uses_today:
            today = local_today()
        if evaluate.FAST and complete:
            result = self._complete(data, today)
            if result is not None:
                return result
        top = self._top
        errors = top.extra_keys(data)
        clean = top.load(data) if evaluate.FAST else None
        if clean is None:
            try:
                clean = top.schema.load(data, partial=True)
            except ValidationError as e:
                clean = e.valid_data or {}
                errors.update(e.messages)
        warnings = {}
        present = None if complete else data.keys()
        bad = frozenset(errors) if errors else ()
        _evaluate(top, clean, data, None, complete, present, today, errors, warnings, bad)
        return Result(clean, errors, warnings)


_PASSED = ("min", "max", "min_length", "max_length", "pattern", "min_count", "max_count", "ref")


def _describe(spec, lang):
    d = spec.definition
    out = {"name": spec.name, "type": spec.type, "label": text_in(d.get("label"), lang) or spec.name,
           "hint": text_in(d.get("hint"), lang), "required": spec.required, "warn": spec.warn,
           "relevant": json.loads(json.dumps(d["relevant"])) if "relevant" in d else None}
    if "unit" in d:
        out["unit"] = text_in(d["unit"], lang)
    for key in _PASSED:
        if key in d:
            out[key] = json.loads(json.dumps(d[key]))
    if "choices" in d:
        out["choices"] = [{"value": c["value"], "label": text_in(c.get("label"), lang) or c["value"]}
                          for c in d["choices"]]
    if spec.type == "computed":
        out["compute"] = d["compute"]["function"]
    if spec.type == "repeat":
        out["fields"] = [_describe(s, lang) for s in spec.group.specs]
    return out


def describe_errors(errors: dict, prefix="") -> list[str]:
    """Flatten ``{field: [...]} / {repeat: {"0": {...}}}`` into lines such as
    ``baby[0].sex: must be one of: male, female`` (for the CLI and logs)."""
    lines = []
    for name, messages in errors.items():
        if isinstance(messages, dict):
            for index, inner in messages.items():
                if isinstance(inner, dict):
                    lines += describe_errors(inner, f"{prefix}{name}[{index}].")
                else:
                    lines += [f"{prefix}{name}: {m}" for m in inner]
        else:
            lines += [f"{prefix}{name}: {m}" for m in messages]
    return lines

"""Forms and records in words, for the command line (``fieldsync forms FORM``,
``show``, ``conflicts``): labels, choices by name, skip logic as a sentence.

Everything is read from the compiled form's ``describe_fields(lang)``
(docs/internals.md "Rendering a form"), the same definition the validator
uses: nothing is described twice.
"""

from __future__ import annotations

import json

_OPS = {  # operator: English, Vietnamese
    "eq": ("is {v}", "là {v}"),
    "ne": ("is not {v}", "không phải {v}"),
    "in": ("is one of {v}", "là một trong {v}"),
    "gt": ("is more than {v}", "lớn hơn {v}"),
    "ge": ("is at least {v}", "ít nhất {v}"),
    "lt": ("is less than {v}", "nhỏ hơn {v}"),
    "le": ("is at most {v}", "nhiều nhất {v}"),
    "contains": ("includes {v}", "có {v}"),
}
_WORDS = {"en": {"and": " and ", "or": " or ", "not": "not ({})", "blank": "blank",
                 "always": "always", "asked": "asked when", "yes": "yes", "no": "no"},
          "vi": {"and": " và ", "or": " hoặc ", "not": "không ({})", "blank": "trống",
                 "always": "luôn hỏi", "asked": "hỏi khi", "yes": "có", "no": "không"}}


def _lang(lang):
    return "vi" if lang == "vi" else "en"


def field_index(fields):
    """``{name: field description}`` over ``describe_fields`` (repeats' entries too)."""
    out = {}
    for field in fields:
        out[field["name"]] = field
        for inner in field.get("fields") or []:
            out.setdefault(inner["name"], inner)
    return out


def value_words(field, value, lang="en"):
    """A value as a person reads it: a choice by its label (and code), yes/no."""
    words = _WORDS[_lang(lang)]
    if value is None:
        return ""
    if isinstance(value, bool):
        return words["yes"] if value else words["no"]
    labels = {c["value"]: c["label"] for c in (field or {}).get("choices") or []}
    if labels and isinstance(value, list):
        return ", ".join(f"{labels.get(v, v)} ({v})" if v in labels else str(v) for v in value)
    if labels and isinstance(value, str) and value in labels:
        return f"{labels[value]} ({value})"
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def condition_words(condition, fields, lang="en"):
    """Skip logic in words: ``{"field": "contact_type", "eq": "anc_checkup"}`` →
    "Type of contact is Antenatal check-up (anc_checkup)"."""
    words = _WORDS[_lang(lang)]
    if not isinstance(condition, dict):
        return str(condition)
    for key, joiner in (("all", words["and"]), ("any", words["or"])):
        if key in condition:
            parts = [condition_words(c, fields, lang) for c in condition[key]]
            return joiner.join(f"({p})" if (" and " in p or " or " in p or " và " in p
                                             or " hoặc " in p) else p for p in parts)
    if "not" in condition:
        return words["not"].format(condition_words(condition["not"], fields, lang))
    name = condition.get("field")
    field = fields.get(name) or {}
    label = field.get("label") or name
    if condition.get("part"):
        label = f"{label} ({condition['part']})"
    for op, (en, vi) in _OPS.items():
        if op in condition:
            value = condition[op]
            if isinstance(value, dict) and "field" in value:
                shown = (fields.get(value["field"]) or {}).get("label") or value["field"]
            elif value is None:
                shown = words["blank"]
            elif isinstance(value, list):
                shown = ", ".join(value_words(field, v, lang) for v in value)
            else:
                shown = value_words(field, value, lang)
            return f"{label} " + (vi if _lang(lang) == "vi" else en).format(v=shown)
    return json.dumps(condition, ensure_ascii=False)


def form_lines(form, lang="en"):
    """The lines of ``fieldsync forms FORM``: each field with its label, type,
    hint, bounds, choices by name and when it is asked."""
    fields = form.describe_fields(lang)
    index = field_index(fields)
    words = _WORDS[_lang(lang)]
    lines = [f"{form.id} v{form.version}: {form.title_in(lang)}"]

    def one(field, indent):
        kind = field["type"] + (f" → {field['ref']}" if field.get("ref") else "")
        tags = [kind]
        if field.get("required"):
            tags.append("required" if _lang(lang) == "en" else "bắt buộc")
        if field.get("unit"):
            tags.append(str(field["unit"]))
        for key in ("min", "max", "min_length", "max_length", "pattern", "min_count", "max_count"):
            if field.get(key) is not None:
                bound = field[key]
                if isinstance(bound, dict):
                    bound = str(bound.get("field")) \
                        + (f" {bound['offset']}" if bound.get("offset") else "")
                tags.append(f"{key} {bound}")
        if field.get("compute"):
            tags.append(f"computed: {field['compute']}")
        out = [f"{indent}{field['name']}: {field['label']} [{'; '.join(tags)}]"]
        if field.get("hint"):
            out.append(f"{indent}    {field['hint']}")
        if field.get("relevant") is not None:
            out.append(f"{indent}    {words['asked']}: "
                       f"{condition_words(field['relevant'], index, lang)}")
        for choice in field.get("choices") or []:
            out.append(f"{indent}    {choice['value']} = {choice['label']}")
        for inner in field.get("fields") or []:
            out += one(inner, indent + "    ")
        return out

    for field in fields:
        lines += one(field, "  ")
    return lines

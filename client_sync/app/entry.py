"""A form on a page: the posted inputs as record values, and a draft checked
by the form's own compiled validation (the same `CompiledForm` the device and
the server validate with), answered by field path.

Field paths are the input names: ``head_name``, and ``baby.0.sex`` for a
field of a repeat's first entry. A value the page cannot read as its type
("12a" for a number) is passed on as typed, so the validator refuses it in
its own words.
"""

from __future__ import annotations

import re

TRUE = {"true": True, "yes": True, "false": False, "no": False}


def _one(field, raw):
    kind = field["type"]
    if raw is None:
        return None
    if isinstance(raw, list):
        items = [r for r in raw if r != ""]
        return items or None
    raw = raw.strip() if kind != "string" else raw
    if raw == "":
        return None
    try:
        if kind == "boolean":
            return TRUE.get(raw.lower(), raw)
        if kind == "integer":
            return int(raw)
        if kind == "decimal":
            return float(raw.replace(",", "."))
        if kind == "geopoint":
            parts = [float(p) for p in re.split(r"[,;\s]+", raw) if p]
            if len(parts) in (2, 3):
                return dict(zip(("lat", "lon", "accuracy_m"), parts))
    except ValueError:
        pass
    return raw


def _read(fields, get, prefix=""):
    data = {}
    for field in fields:
        name, kind = field["name"], field["type"]
        path = prefix + name
        if kind == "computed":
            continue
        if kind == "repeat":
            count = entry_count(get, path)
            entries = [_read(field["fields"], get, f"{path}.{i}.") for i in range(count)]
            if entries:
                data[name] = entries
            continue
        raw = get(path, multi=kind == "multi_choice")
        value = _one(field, raw)
        if value is not None:
            data[name] = value
    return data


def entry_count(get, path):
    try:
        return max(0, min(50, int(get(f"{path}._count") or 0)))
    except ValueError:
        return 0


def read_form(fields, form_data):
    """The record values of a posted page (``request.form``), typed by the
    form's fields (`describe_fields`); empty inputs are absent."""
    def get(path, multi=False):
        return form_data.getlist(path) if multi else form_data.get(path)
    return _read(fields, get)


def ask_only_relevant(form, data):
    """`data` without the values of fields the form does not ask, given the
    rest (a value typed, then hidden by a later answer, is not sent): the
    skip logic the validator applies. Returns (data, relevance by path)."""
    for _ in range(3):   # a removed value can hide another field; settles fast
        relevant = form.relevance(data)
        drop = [n for n in data if relevant.get(n) is False]
        entries_changed = False
        for name, value in data.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                for i, entry in enumerate(value):
                    for key in [k for k in entry if relevant.get(f"{name}.{i}.{k}") is False]:
                        del entry[key]
                        entries_changed = True
        if not drop and not entries_changed:
            return data, relevant
        data = {k: v for k, v in data.items() if k not in drop}
    return data, form.relevance(data)


def flatten(tree, prefix=""):
    """A validator's ``{field: [msg]}`` tree (``{"baby": {"0": {...}}}`` in a
    repeat) as ``{"baby.0.sex": [msg]}``."""
    out = {}
    for key, value in (tree or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        elif isinstance(value, (list, tuple)):
            for message in value:
                if isinstance(message, dict):
                    out.update(flatten(message, path + "."))
                else:
                    out.setdefault(path, []).append(str(message))
        else:
            out.setdefault(path, []).append(str(value))
    return out


#: The soft checks that are danger signs (a referral today), by form and by
#: the check's message id: its English message, the key the form's
#: translations are looked up by. Kept here, not as a marker in the form
#: definitions: a published version is immutable (server/catalog.py compares
#: the SHA-256 of its canonical JSON) and servers in the field have published
#: v2, so a marker added to v2 would make their `init` refuse. Exact ids, not
#: words in the text: "refer" or "danger" appear in warnings that are not
#: danger signs, and a reworded message must be classified again.
#: tests/test_app_danger.py checks that every warning check of every bundled
#: form version is classified here or in NOT_DANGER_SIGNS.
DANGER_SIGNS = {
    "anc_visit": {
        "Blood pressure 140/90 or higher: high blood pressure, a danger sign; check again "
        "and refer.",
        "A positive HIV, syphilis or hepatitis B test: refer her for care to prevent "
        "transmission to the baby."},
    "pnc_visit": {
        "Blood pressure 140/90 or higher: high blood pressure, a danger sign; check again "
        "and refer.",
        "Mother's temperature 38.0 °C or higher: fever, a danger sign.",
        "The mother has a danger sign: refer her."},
    "nutrition_counselling": {
        "Not breastfed and nothing else yesterday: the child had nothing to eat or drink. "
        "Check the answers; a child who is not feeding is a danger sign: refer."},
}

#: Warning checks that are not danger signs (data to check, a risk to note,
#: a follow-up), by form and by the start of their message id: the test's
#: proof that each one was looked at.
NOT_DANGER_SIGNS = {
    "anc_visit": {"Height under 145 cm: a risk factor for delivery."},
    "cp_report": {"Early marriage, but neither party", "A party is under the legal age",
                  "Second cousins are beyond three generations"},
    "growth": {"Children 2 years and older are usually measured standing",
               "Children under 2 years are usually measured lying", "MUAC 115–124 mm",
               "Weight-for-height between −3 and −2 SD", "A child with acute malnutrition"},
    "household": {"The location is outside Quảng Ninh province"},
    "nutrition_counselling": {"Breastfed yesterday, but breast milk",
                              "Not breastfed yesterday, but breast milk"},
    "pnc_visit": {"TT 30/2024: "},
    "pregnancy": {"She is under 18: consider", "She is under 18 at registration",
                  "'Age under 18' is ticked", "She is over 35 at registration",
                  "'Age over 35' is ticked", "A consanguineous union",
                  "With the LMP as its source"},
    "pregnancy_outcome": {"A live birth or stillbirth is usually at 22 weeks",
                          "Low birth weight (under 2500 g)"},
}


def is_danger(form_id, message_en):
    """A warning of `form_id` that is a danger sign (DANGER_SIGNS): shown
    first, in red, with what to do (refer)."""
    return str(message_en) in DANGER_SIGNS.get(form_id, ())


def check(form, data, lang):
    """A draft checked as it would be saved (the page holds every field of the
    record, so an edit is checked whole too).

    :returns: ``{"data", "relevant", "errors", "warnings", "danger", "computed"}``,
        messages in `lang` by path; ``danger``: paths whose warning asks for a
        referral.
    """
    data, relevant = ask_only_relevant(form, data)
    result = form.validate_create(data)
    try:
        computed = form.compute(result.data) if not result.errors else form.compute(
            {**data, **result.data})
    except Exception:  # a computed value is a help on the page, never a reason to fail
        computed = {}
    english = flatten(result.warnings)
    return {"data": data, "relevant": relevant,
            "errors": flatten(form.localize(result.errors, lang)),
            "warnings": flatten(form.localize(result.warnings, lang)),
            "danger": sorted(p for p, ms in english.items()
                             if any(is_danger(form.id, m) for m in ms)),
            "computed": {k: v for k, v in computed.items() if not isinstance(v, (list, dict))}}


def changes(form, stored, data):
    """An edit's values: what differs from the stored record; a field the page
    left empty that had a value is cleared (None)."""
    out = {}
    for name in form.field_names:
        new, old = data.get(name), stored.get(name)
        if new != old:
            out[name] = new
    return out

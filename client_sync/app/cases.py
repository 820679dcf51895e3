"""The case tree on the device: households → members → a woman's pregnancies
→ visits, and a child's growth, read from the local records.

Links are the forms' own `ref` fields (a person's `household_id`, a
pregnancy's `woman_id`, a visit's `pregnancy_id`, growth's `child_id`): a
record's children are the records whose ref field names it. Linked values
are copied from the parent when a child record is started (`prefill`), so a
health worker never types an id or a date the device already knows.
"""

from __future__ import annotations

import unicodedata
from datetime import date

#: The form a record's page offers to start under it, by the parent's form,
#: with a test of the parent's values (a pregnancy for a woman of 10-55, growth
#: for a child under 5): the rest of the offer comes from the ref fields.
OFFER_IF = {
    "pregnancy": lambda parent: parent.get("sex") == "female"
    and (_age_years(parent.get("dob")) is None or 10 <= _age_years(parent.get("dob")) <= 55),
    "growth": lambda parent: _age_years(parent.get("dob")) is None
    or _age_years(parent.get("dob")) < 5,
}

#: The field that names a record in lists, by form; else its date.
NAME_FIELDS = {"household": "head_name", "person": "full_name"}
DATE_FIELDS = ("visit_date", "measured_on", "outcome_date", "registration_date",
               "registered_on", "recorded_on", "session_date", "report_date")


def fold(text):
    """`text` for diacritic-blind search: "Lý A Sáng", "ly a sang" and
    "LY A SANG" fold alike; đ is a letter of its own in Unicode and is mapped
    to d by hand."""
    if not isinstance(text, str):
        return ""
    text = text.replace("đ", "d").replace("Đ", "D")
    bare = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def _age_years(dob, on=None):
    try:
        born = date.fromisoformat(dob)
    except (TypeError, ValueError):
        return None
    on = on or date.today()
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def record_date(record):
    data = record["data"]
    return next((data[f] for f in DATE_FIELDS if data.get(f)), None)


class Cases:
    """Every live record of the device, indexed by id and by the ids its ref
    fields name. Built once per page: a village's records fit in memory."""

    def __init__(self, client):
        self.client = client
        self.records = {r["id"]: r for r in client.list()}
        self.refs = {}        # form -> [ref field names]
        self.children = {}    # parent id -> [records]
        for record in self.records.values():
            for name in self.ref_fields(record["form"], record["form_version"]):
                parent = record["data"].get(name)
                if parent:
                    self.children.setdefault(parent, []).append(record)
        for kids in self.children.values():
            kids.sort(key=lambda r: (record_date(r) or "", r["id"]), reverse=True)

    def ref_fields(self, form_id, version=None):
        key = (form_id, version)
        if key not in self.refs:
            form = self.client.registry().get(form_id, version) if version else \
                self.client.registry().latest(form_id)
            self.refs[key] = [] if form is None else [
                name for name, d in form.fields.items() if d.get("type") == "ref"]
        return self.refs[key]

    def get(self, record_id):
        return self.records.get(record_id)

    def parent(self, record):
        """The record this one hangs under (its first ref field's record)."""
        for name in self.ref_fields(record["form"], record["form_version"]):
            found = self.records.get(record["data"].get(name) or "")
            if found:
                return found
        return None

    def trail(self, record):
        """The record's ancestors, oldest first (the page's breadcrumb)."""
        out, seen = [], {record["id"]}
        parent = self.parent(record)
        while parent and parent["id"] not in seen:
            out.insert(0, parent)
            seen.add(parent["id"])
            parent = self.parent(parent)
        return out

    def kids(self, record_id, form_id=None):
        return [r for r in self.children.get(record_id, ())
                if form_id is None or r["form"] == form_id]

    def households(self):
        return sorted((r for r in self.records.values() if r["form"] == "household"),
                      key=lambda r: fold(r["data"].get("head_name")))

    def search(self, text):
        """Households and people whose name holds `text`, accents ignored."""
        needle = fold(text)
        if not needle:
            return []
        found = [r for r in self.records.values()
                 if r["form"] in NAME_FIELDS and needle in fold(r["data"].get(NAME_FIELDS[r["form"]]))]
        return sorted(found, key=lambda r: (r["form"], fold(self.name(r))))

    def name(self, record, lang="vi"):
        field = NAME_FIELDS.get(record["form"])
        if field and record["data"].get(field):
            return record["data"][field]
        if record["form"] == "pregnancy":
            woman = self.records.get(record["data"].get("woman_id") or "")
            who = woman["data"].get("full_name") if woman else ""
            return " · ".join(x for x in (who, record["data"].get("registration_date")) if x)
        return record_date(record) or record["id"][:8]

    def offers(self, record):
        """The forms that can be started under `record`: [(form, ref field)]."""
        out = []
        for form in self.client.forms():
            for name, d in form.fields.items():
                if d.get("type") == "ref" and d.get("ref") == record["form"]:
                    test = OFFER_IF.get(form.id)
                    if test is None or test(record["data"]):
                        out.append((form, name))
        return out

    def latest_growth(self, child_id):
        return next(iter(self.kids(child_id, "growth")), None)

    def prefill(self, form, ref_field, parent):
        """A new record's values taken from its parent: the ref itself, then
        every field named as the parent's (``lmp_date``) or as the parent's
        with the ref's prefix (``woman_dob`` ← a woman's ``dob``, ``child_sex``
        ← a child's ``sex``); a postnatal visit also takes the pregnancy's
        outcome date and whether it was a live birth in a facility."""
        values = {ref_field: parent["id"]}
        prefix = ref_field[:-len("_id")] + "_" if ref_field.endswith("_id") else ""
        sources = [parent["data"]]
        outcome = next(iter(self.kids(parent["id"], "pregnancy_outcome")), None)
        if outcome:
            data = outcome["data"]
            sources.append({"outcome_date": data.get("outcome_date"),
                            "live_birth": data.get("outcome_type") == "live_birth",
                            "facility_birth": data.get("place") not in (None, "home", "en_route")})
        for name, d in form.fields.items():
            if name == ref_field or d.get("type") in ("computed", "ref", "repeat"):
                continue
            keys = [name[len(prefix):]] if prefix and name.startswith(prefix) else []
            for index, source in enumerate(sources):
                # The same name is the same thing only for dates (a pregnancy's
                # lmp_date) and the outcome's facts; a "status" or a "place" of
                # the parent is not the child record's.
                same = name.endswith("_date") or index > 0
                key = next((k for k in keys + ([name] if same else [])
                            if source.get(k) is not None), None)
                if key is not None:
                    values[name] = source[key]
                    break
        return values

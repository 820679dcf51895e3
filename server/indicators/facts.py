"""The `facts` table: what the indicators and work lists need from each record,
derived when the record is written (push, server change, conflict
resolution) and read per request instead of the records themselves.

One row per live record of a form the indicators use, keyed by record id
(a deleted record has none):

    facts(id, form, area, subject, day, f)

- `subject`: the record it is about (a pregnancy's woman, a visit's or an
  outcome's pregnancy, a measurement's or a counselling session's child, a
  session's club), or NULL;
- `day`: its event date (ISO): registration, visit, outcome, measurement,
  session, union; a person's date of birth;
- `f`: a small JSON object of the values used (see `extract`), with z-scores
  and the nutrition class as the form computed them.

`record_written` is the one call storage makes, inside the write
transaction; `backfill` fills the table for records written before it
existed (its migration). No names or other free text are copied here: work
lists read a person's name from the record itself, for their few rows.
"""
import orjson

#: ANC contacts that count (DOMAIN §2 indicator 1).
FORMS = ("person", "pregnancy", "anc_visit", "pregnancy_outcome", "pnc_visit", "growth",
         "nutrition_counselling", "cp_report", "group_session", "club")

#: Newborn danger signs of F6 (DOMAIN §1.6), besides temperature and breathing.
_NEWBORN_DANGER = {"convulsions", "chest_indrawing", "not_feeding", "no_movement",
                   "jaundice_palms_soles", "cord_pus_redness"}


def _signs(values):
    """A multi-choice of signs, without "none": True when any sign is given."""
    return bool([v for v in (values or ()) if v != "none"])


def _newborn_danger(baby):
    temp, resp = baby.get("temp_c"), baby.get("resp_rate")
    return bool(set(baby.get("danger_signs") or ()) & _NEWBORN_DANGER
                or (temp is not None and (temp < 35.5 or temp >= 37.5))
                or (resp is not None and resp >= 60))


def _person(v, c):
    return None, v.get("dob"), {
        "sex": v.get("sex"), "dobp": v.get("dob_precision"), "eth": v.get("ethnicity_code"),
        "vs": v.get("vital_status"), "dod": v.get("date_of_death"),
        "dpr": v.get("death_pregnancy_related"), "hi": v.get("hi_has_card"),
        "hif": v.get("hi_valid_from"), "hit": v.get("hi_valid_to"),
        "hio": v.get("hi_object_code"), "reg": v.get("recorded_on")}


def _pregnancy(v, c):
    return v.get("woman_id"), v.get("registration_date"), {
        "wdob": v.get("woman_dob"), "lmp": v.get("lmp_date"), "edd": v.get("edd"),
        "prior": v.get("prior_anc_contacts_unrecorded") or 0, "st": v.get("status")}


def _anc(v, c):
    return v.get("pregnancy_id"), v.get("visit_date"), {
        "ct": v.get("contact_type"), "ga": c.get("ga_weeks"), "lmp": v.get("lmp_date"),
        "next": v.get("next_visit_date"), "danger": _signs(v.get("danger_signs")),
        "ref": v.get("referred_to"),
        "bf": "breastfeeding" in (v.get("counselling_topics") or ())}


def _outcome(v, c):
    babies = [[b.get("child_id"), b.get("sex"), b.get("status")] for b in v.get("baby") or ()]
    return v.get("pregnancy_id"), v.get("outcome_date"), {
        "type": v.get("outcome_type"), "time": v.get("outcome_time"),
        "place": v.get("place"), "att": v.get("attendant"),
        "cbd": v.get("checked_before_discharge"), "mo": v.get("mother_outcome"),
        "mdd": v.get("mother_death_date"), "babies": babies}


def _pnc(v, c):
    babies = []
    for b, bc in zip(v.get("baby") or (), (c.get("baby") or []) + [{}] * 10):
        babies.append([b.get("child_id"), b.get("status"), _newborn_danger(b),
                       (bc or {}).get("exclusive_bf")])
    return v.get("pregnancy_id"), v.get("visit_date"), {
        "dp": c.get("day_postpartum"), "od": v.get("outcome_date"), "time": v.get("visit_time"),
        "dis": v.get("discharge_date"), "role": v.get("visitor_role"),
        "ms": v.get("mother_status"), "mdd": v.get("mother_death_date"),
        "mdanger": _signs(v.get("mother_danger_signs")), "ref": v.get("referred_to"),
        "babies": babies}


def _growth(v, c):
    f = {"dob": v.get("child_dob"), "age": c.get("age_days"), "muac": v.get("muac_mm"),
         "oed": v.get("oedema_bilateral") is True, "ref": v.get("referred_to"),
         "cou": v.get("counselled")}
    if "nutrition_class" in c:  # v2: computed with the record
        f.update(sex=v.get("child_sex"), z=[c.get("waz"), c.get("haz"), c.get("whz"),
                                            c.get("baz")],
                 flags=c.get("flags") or [], nc=c.get("nutrition_class"))
    else:  # v1: no sex on the record; the indicators find it from the person
        f.update(w=v.get("weight_kg"), l=v.get("lenhei_cm"), pos=v.get("position"))
    return v.get("child_id"), v.get("measured_on"), f


def _counselling(v, c):
    recall = v.get("recall_liquids_foods")
    ebf = None
    if recall is not None and v.get("breastfed_yesterday") in ("yes", "no"):
        ebf = (v.get("breastfed_yesterday") == "yes"
               and set(recall) <= {"ORS_drops_syrups", "none"})
    return v.get("child_id"), v.get("session_date"), {
        "age": c.get("age_days"), "dob": v.get("child_dob"), "ebf": ebf}


def _party(v, side):
    return [v.get(f"party_{side}_person_id"), v.get(f"party_{side}_sex"),
            v.get(f"party_{side}_dob"), v.get(f"party_{side}_ethnicity_code")]


def _cp(v, c):
    return None, v.get("union_date"), {"types": v.get("case_type") or [],
                                        "a": _party(v, "a"), "b": _party(v, "b")}


def _session(v, c):
    return v.get("group_id"), v.get("session_date"), {
        "type": v.get("group_type"), "n": v.get("attendees_total") or 0,
        "cg": v.get("attendees_caregivers_u2") or 0}


def _club(v, c):
    return None, v.get("established_on"), {"type": v.get("club_type"), "st": v.get("status")}


_EXTRACT = {"person": _person, "pregnancy": _pregnancy, "anc_visit": _anc,
            "pregnancy_outcome": _outcome, "pnc_visit": _pnc, "growth": _growth,
            "nutrition_counselling": _counselling, "cp_report": _cp,
            "group_session": _session, "club": _club}


def extract(form, values, computed):
    """`(subject, day, f)` of one record's values and computed fields, or None
    for a form the indicators do not use."""
    fn = _EXTRACT.get(form)
    return None if fn is None else fn(values or {}, computed or {})


def create_table(db):
    db.execute("""CREATE TABLE IF NOT EXISTS facts (
        id TEXT PRIMARY KEY, form TEXT NOT NULL, area TEXT NOT NULL, subject TEXT,
        day TEXT, f TEXT NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS idx_facts_form_area ON facts (form, area)")


def record_written(db, head, values, computed, deleted):
    """Keep the record's fact row current; called inside the write transaction."""
    form = head["form"]
    if form not in _EXTRACT:
        return
    if deleted:
        db.execute("DELETE FROM facts WHERE id = ?", [head["id"]])
        return
    subject, day, f = extract(form, values, computed)
    # An upsert, not INSERT OR REPLACE: an edit updates its row in place
    # (REPLACE deletes it and inserts it again under a new rowid, touching
    # every index). A record's form and area never change (storage rejects
    # an identity mismatch), so an edit leaves them, and their index, alone.
    db.execute("INSERT INTO facts (id, form, area, subject, day, f) VALUES (?, ?, ?, ?, ?, ?) "
               "ON CONFLICT (id) DO UPDATE SET subject = excluded.subject, "
               "day = excluded.day, f = excluded.f",
               [head["id"], form, head["area"], subject, day, orjson.dumps(f).decode()])


def backfill(db):
    """Facts of every stored live record (the migration that adds the table)."""
    marks = ", ".join("?" * len(FORMS))
    last = ""
    while True:
        rows = db.execute(f"SELECT id, form, area, data, computed FROM records WHERE id > ? "
                          f"AND deleted = 0 AND form IN ({marks}) ORDER BY id LIMIT 2000",
                          [last, *FORMS]).fetchall()
        if not rows:
            break
        out = []
        for rid, form, area, data, computed in rows:
            try:
                subject, day, f = extract(form, orjson.loads(data), orjson.loads(computed or "{}"))
            except (ValueError, TypeError, AttributeError):
                continue  # an unreadable row has no facts; it is not counted
            out.append((rid, form, area, subject, day, orjson.dumps(f).decode()))
        db.conn.executemany("INSERT OR REPLACE INTO facts (id, form, area, subject, day, f) "
                            "VALUES (?, ?, ?, ?, ?, ?)", out)
        last = rows[-1][0]

"""Work lists for supervisors (issue 15), from the `facts` table.

`worklist(db, user, name, area, on)` answers `{"name", "area", "on", "rows"}`;
each row names the person (record id and name), the area, the fact that puts
them on the list, its date, and `days_overdue` on the reference date `on`
(today by default), most overdue first. Scope rules as for the indicators.

The lists (DOMAIN.md §1–2, TT 30/2024):
- `sam_mam`: children whose latest measurement classes them SAM or MAM, with
  the referral and counselling given; a follow-up is due 14 days after;
- `danger_signs_not_referred`: PNC visits with a mother or newborn danger
  sign and ANC contacts with a danger sign, `referred_to` none; due that day;
- `no_home_visit_day7`: births of the last 42 days with no home visit by
  day 7 (7 days after discharge when known); the row names the mother, or
  her live-born babies when she died after delivery;
- `no_home_visit_day42`: births of the last year with no home visit at all
  by day 42;
- `anc_overdue`: ongoing pregnancies whose last `next_visit_date` has passed,
  or with no check-up since the current trimester began;
- `past_edd_no_outcome`: ongoing pregnancies more than 14 days past the EDD;
- `deaths`: pregnancy-related and newborn deaths of the last year (days since);
- `hi_expiring_30d`: cards ending within 30 days (days_overdue ≤ 0: days left);
- `growth_overdue`: under-2s not weighed in 60 days, 2–5-year-olds in 180.
"""
from datetime import timedelta

from schemas.forms import local_today

from .db import read_snapshot
from .indicators.compute import FACILITY
from .indicators.tally import Facts, day
from .indicators import query

NAMES = ("sam_mam", "danger_signs_not_referred", "no_home_visit_day7", "no_home_visit_day42",
         "anc_overdue", "past_edd_no_outcome", "deaths", "hi_expiring_30d", "growth_overdue")

def _row(person, area, fact, when, overdue, **details):
    return {"person": {"id": person}, "area": area, "fact": fact,
            "date": when.isoformat() if hasattr(when, "isoformat") else when,
            "days_overdue": overdue, **({"details": details} if details else {})}

def _alive(facts, person):
    f = (facts.persons().get(person) or ({}, None))[0]
    return f.get("vs") not in ("died", "moved_out")

def sam_mam(facts, on):
    out = []
    for child, visits in facts.by_subject("growth").items():
        past = [v for v in visits if v[0] and v[0] <= on.isoformat()]
        if not past or not _alive(facts, child):
            continue
        d, rid, area, f = past[-1]
        nc = f.get("nc")
        if nc not in ("sam", "mam"):
            continue
        overdue = (on - day(d)).days - 14
        out.append(_row(child, area, nc, d, max(overdue, 0), referred_to=f.get("ref"),
                        counselled=f.get("cou"), whz=(f.get("z") or [None] * 4)[2],
                        muac_mm=f.get("muac"), oedema=f.get("oed"), measurement=rid))
    return out

def danger_signs_not_referred(facts, on):
    out = []
    for pid, visits in facts.by_subject("pnc_visit").items():
        for d, rid, area, f in visits:
            if f.get("ref") != "none" or not d or d > on.isoformat():
                continue
            woman = facts.mother(pid, None)[0]
            if f.get("mdanger"):
                out.append(_row(woman or pid, area, "mother_danger_sign", d,
                                (on - day(d)).days, visit=rid))
            for child, status, danger, _ in f.get("babies") or ():
                if danger:
                    out.append(_row(child, area, "newborn_danger_sign", d,
                                    (on - day(d)).days, visit=rid))
    for pid, visits in facts.by_subject("anc_visit").items():
        for d, rid, area, f in visits:
            if f.get("danger") and f.get("ref") == "none" and d and d <= on.isoformat():
                woman = facts.mother(pid, None)[0]
                out.append(_row(woman or pid, area, "pregnancy_danger_sign", d,
                                (on - day(d)).days, visit=rid))
    return out

def _births_since(facts, on, days):
    for pid, (rid, area, d, f) in facts.outcomes().items():
        od = day(d)
        if (od and on - timedelta(days=days) <= od <= on
                and f.get("type") in ("live_birth", "stillbirth")):
            yield pid, rid, area, od, f

def _visited(facts, pid, f):
    """Who a birth's home visits are for: the mother, or when she died after
    delivery her live-born babies (they still need their visits)."""
    if f.get("mo") != "died":
        return [facts.mother(pid, None)[0] or pid]
    return [c for c, _, status in f.get("babies") or () if c and status == "alive"]

def _visits(facts, pid, od):
    return [(day(d), f) for d, _, _, f in facts.by_subject("pnc_visit").get(pid, ())
            if day(d) and day(d) >= od]

def no_home_visit_day7(facts, on):
    out = []
    for pid, rid, area, od, f in _births_since(facts, on, 42):
        visits = _visits(facts, pid, od)
        discharge = next((day(v["dis"]) for _, v in visits if v.get("dis")), None)
        base = discharge if f.get("place") in FACILITY and discharge else od
        due = base + timedelta(days=7)
        if due < on and not any(vd <= due for vd, _ in visits):
            out.extend(_row(who, area, "no_home_visit_by_day7", od, (on - due).days,
                            outcome=rid) for who in _visited(facts, pid, f))
    return out

def no_home_visit_day42(facts, on):
    out = []
    for pid, rid, area, od, f in _births_since(facts, on, 365):
        due = od + timedelta(days=42)
        if due < on and not any(vd <= due for vd, _ in _visits(facts, pid, od)):
            out.extend(_row(who, area, "no_home_visit_by_day42", od, (on - due).days,
                            outcome=rid) for who in _visited(facts, pid, f))
    return out

def _ongoing(facts, on):
    outcomes = facts.outcomes()
    for rid, area, woman, d, f in facts.rows("pregnancy"):
        if f.get("st") == "ongoing" and rid not in outcomes and _alive(facts, woman):
            yield rid, area, woman, d, f

def anc_overdue(facts, on):
    out = []
    for pid, area, woman, d, f in _ongoing(facts, on):
        edd = day(f.get("edd"))
        lmp = day(f.get("lmp")) or (edd - timedelta(days=280) if edd else None)
        if lmp is None or (edd and on > edd + timedelta(days=14)):
            continue   # past the EDD: the other list
        checkups = [(d_, v) for d_, _, _, v in facts.by_subject("anc_visit").get(pid, ())
                    if v.get("ct") == "anc_checkup" and d_ and d_ <= on.isoformat()]
        reasons = []
        nexts = [day(v.get("next")) for _, _, _, v in facts.by_subject("anc_visit").get(pid, ())
                 if day(v.get("next"))]
        if nexts and max(nexts) < on:
            reasons.append(("next_visit_date_passed", (on - max(nexts)).days))
        weeks = (on - lmp).days // 7
        start = lmp + timedelta(weeks=0 if weeks <= 13 else 14 if weeks <= 27 else 28)
        start = max(start, day(d) or start)
        if not any(day(d_) >= start for d_, _ in checkups) and start < on:
            reasons.append(("no_contact_this_trimester", (on - start).days))
        if reasons:
            fact, overdue = max(reasons, key=lambda r: r[1])
            out.append(_row(woman or pid, area, fact, d, overdue, pregnancy=pid))
    return out

def past_edd_no_outcome(facts, on):
    out = []
    for pid, area, woman, d, f in _ongoing(facts, on):
        edd = day(f.get("edd"))
        if edd and on > edd + timedelta(days=14):
            out.append(_row(woman or pid, area, "past_edd_no_outcome", edd,
                            (on - edd).days - 14, pregnancy=pid))
    return out

def deaths(facts, on):
    since = on - timedelta(days=365)
    out, seen = [], set()

    def add(person, area, fact, when, **details):
        when = day(when)
        if when and since <= when <= on and (person, fact) not in seen:
            seen.add((person, fact))
            out.append(_row(person, area, fact, when, (on - when).days, **details))

    for pid, (rid, area, d, f) in facts.outcomes().items():
        woman = facts.mother(pid, None)[0] or pid
        if f.get("mo") == "died":
            add(woman, area, "pregnancy_related_death", f.get("mdd") or d, source=rid)
        for child, _, status in f.get("babies") or ():
            if status == "died_after_birth":
                add(child or rid, area, "newborn_death", d, source=rid)
    for pid, visits in facts.by_subject("pnc_visit").items():
        for d, rid, area, f in visits:
            if f.get("ms") == "died":
                add(facts.mother(pid, None)[0] or pid, area, "pregnancy_related_death",
                    f.get("mdd") or d, source=rid)
            for child, status, _, _ in f.get("babies") or ():
                if status == "died":
                    add(child, area, "newborn_death", d, source=rid)
    for rid, (f, area) in facts.persons().items():
        if f.get("vs") != "died":
            continue
        if f.get("dpr") == "pregnant_or_within_42d":
            add(rid, area, "pregnancy_related_death", f.get("dod"))
        dob, dod = day(f.get("dob")), day(f.get("dod"))
        if dob and dod and (dod - dob).days <= 28:   # neonatal: within 28 days of birth
            add(rid, area, "newborn_death", f.get("dod"))   # add() reads the ISO text
    return out

def hi_expiring_30d(facts, on):
    out = []
    for rid, (f, area) in facts.persons().items():
        end = day(f.get("hit"))
        if f.get("hi") == "yes" and end and on <= end <= on + timedelta(days=30) and \
                _alive(facts, rid):
            out.append(_row(rid, area, "hi_card_expiring", end, (on - end).days,
                            hi_object_code=f.get("hio")))
    return out

def growth_overdue(facts, on):
    out = []
    measured = facts.by_subject("growth")
    for rid, (f, area) in facts.persons().items():
        dob = day(f.get("dob"))
        if dob is None or dob > on or (on - dob).days > 1826 or not _alive(facts, rid):
            continue
        interval = 60 if (on - dob).days <= 730 else 180
        last = max((day(d) for d, *_ in measured.get(rid, ()) if day(d) and day(d) <= on),
                   default=None)
        due = (last or dob) + timedelta(days=interval)
        if due < on:
            out.append(_row(rid, area, "not_weighed_in_%d_days" % interval, last or dob,
                            (on - due).days, last_measured=last.isoformat() if last else None))
    return out

def worklist(db, user, name, area, on=None, tz_name="Asia/Ho_Chi_Minh"):
    """The rows of work list `name` (KeyError: no such list)."""
    fn = {n: globals()[n] for n in NAMES}[name]
    on = on or local_today(tz_name)
    clause, params, scopes = query.scope(user, area)
    with read_snapshot(db):
        facts = Facts(db, clause, params, scopes)
        rows = fn(facts, on)
        _names(db, rows)
    rows.sort(key=lambda r: (-r["days_overdue"], r["area"], r["person"]["id"] or ""))
    return {"name": name, "area": area, "on": on.isoformat(), "rows": rows}

def _names(db, rows):
    """Each row's person name, read from the person record (never stored in facts)."""
    ids = sorted({r["person"]["id"] for r in rows if r["person"]["id"]})
    names = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        names.update(db.execute(
            "SELECT id, json_extract(data, '$.full_name') FROM records WHERE form = 'person' "
            "AND id IN (%s)" % ", ".join("?" * len(chunk)), chunk).fetchall())
    for r in rows:
        r["person"]["name"] = names.get(r["person"]["id"])

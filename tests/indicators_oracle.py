"""Test-only: the indicator computation as it was before it moved to SQL
(server/indicators/compute.py at 13d1161, loading a scope's facts into
Python), kept as the oracle of tests/test_indicators_sql.py. Do not change
it to follow compute.py: a difference between them is what that test finds.

Its own docstring (DOMAIN.md §2 indicators over the `facts` table):
`indicators(db, scopes, start, end, cp_allowed=True)` answers the list of
`{"id", "numerator", "denominator", "value", "by": {breakdown: {group:
{"numerator", "denominator", "value"}}}}`: `value` is a percentage (one
decimal) or, for a count-only indicator (denominator null), the count.

Rules (DOMAIN §2 and its notes):
- event indicators (anc4 … pnc_42d) take the births whose outcome_date is in
  [start, end]; status indicators (exclusive_bf … hi_coverage) take `end` as
  the reference date (nutrition: each child's latest measurement in the
  period);
- a record counts once: facts are keyed by record id; then one outcome per
  pregnancy (the smallest record id when two devices recorded one), one ANC
  contact per pregnancy and date, one measurement per child (the latest),
  one cp_report case per couple;
- breakdowns: `ethnicity` (ethnic_minority: code ≠ "01"; kinh; unknown) of
  the mother for births and of the child for child indicators,
  `mother_age` (<18, 18-19, 20-34, >=35 completed years at the outcome),
  `sex` of the child where DOMAIN says, `area` one level below the scope.
"""
from collections import defaultdict
from datetime import date, datetime, time, timedelta

import orjson

from schemas.compute import growth_outputs

FACILITY = {"provincial_hosp", "district_hosp_or_regional_centre", "CHS", "private_facility"}
SKILLED = {"doctor", "assistant_doctor", "midwife", "nurse"}
LIVE = {"alive", "died_after_birth"}
ORDER = ("anc4", "anc4_vn", "facility_delivery", "skilled_attendance",
         "pregnancy_related_deaths", "pnc_48h", "home_visit_tt30", "pnc_42d", "exclusive_bf",
         "underweight", "stunting", "wasting", "overweight", "sam", "mam", "counselling_u2",
         "hi_coverage", "early_marriage", "consanguineous_marriage", "group_sessions")
#: Indicators counted from cp_report (restricted form): withheld from other roles.
CP_INDICATORS = ("early_marriage", "consanguineous_marriage")


def day(text):
    try:
        return date.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None


def years(dob, on):
    """Completed years from `dob` to `on` (dates), or None."""
    if dob is None or on is None:
        return None
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def ethnicity(code):
    return "unknown" if not code else "kinh" if code == "01" else "ethnic_minority"


def age_group(age):
    if age is None:
        return "unknown"
    return "<18" if age < 18 else "18-19" if age < 20 else "20-34" if age < 35 else ">=35"


def sex_group(sex):
    return sex if sex in ("male", "female") else "unknown"


class Facts:
    """The facts of one scope, loaded form by form as needed."""

    def __init__(self, db, clause, params, scopes):
        self.db, self.clause, self.params = db, clause, params
        self.depth = None if not scopes else min(len(s.split(".")) for s in scopes) + 1
        self._cache = {}

    def rows(self, form):
        """[(id, area, subject, day, f)] of `form` in scope, by record id."""
        if form not in self._cache:
            self._cache[form] = [
                (rid, area, subject, d, orjson.loads(f)) for rid, area, subject, d, f in
                self.db.execute(f"SELECT id, area, subject, day, f FROM facts WHERE form = ? "
                                f"AND {self.clause} ORDER BY id", [form, *self.params])]
        return self._cache[form]

    def sub_area(self, area):
        parts = area.split(".")
        return ".".join(parts[:self.depth or 1])

    def persons(self):
        if "_persons" not in self._cache:
            self._cache["_persons"] = {rid: (f, area) for rid, area, _, d, f in self.rows("person")
                                       if f.setdefault("dob", d) or True}
        return self._cache["_persons"]

    def pregnancies(self):
        if "_preg" not in self._cache:
            self._cache["_preg"] = {rid: (subject, f) for rid, _, subject, _, f in
                                    self.rows("pregnancy")}
        return self._cache["_preg"]

    def outcomes(self):
        """{pregnancy id: (record id, area, outcome date, f)}: one per pregnancy."""
        if "_out" not in self._cache:
            out = {}
            for rid, area, subject, d, f in self.rows("pregnancy_outcome"):
                out.setdefault(subject or rid, (rid, area, d, f))   # rows come by id
            self._cache["_out"] = out
        return self._cache["_out"]

    def by_subject(self, form):
        key = "_sub_" + form
        if key not in self._cache:
            out = defaultdict(list)
            for rid, area, subject, d, f in self.rows(form):
                out[subject].append((d, rid, area, f))
            for visits in out.values():
                visits.sort(key=lambda v: (v[0] or "", v[1]))
            self._cache[key] = out
        return self._cache[key]

    def mother(self, pregnancy_id, on):
        """(woman id, ethnicity group, age group) of a pregnancy's woman at `on`."""
        woman, pf = self.pregnancies().get(pregnancy_id, (None, {}))
        person = self.persons().get(woman)
        pf_ = person[0] if person else {}
        dob = day(pf_.get("dob")) or day(pf.get("wdob"))
        return woman, ethnicity(pf_.get("eth")), years(dob, on)


class Tally:
    """Numerator and denominator, overall and per breakdown group."""

    def __init__(self, count_only=False):
        self.count_only = count_only
        self.num = self.den = 0
        self.by = defaultdict(lambda: defaultdict(lambda: [0, 0]))

    def add(self, hit, groups, counted=True):
        """One unit: in the numerator if `hit`; in the headline if `counted`
        (else only in its groups: e.g. all-ages breakdowns of a 15–49 figure)."""
        if counted:
            self.num += bool(hit)
            self.den += 1
        for name, group in groups.items():
            if group is None:
                continue
            cell = self.by[name][group]
            cell[0] += bool(hit)
            cell[1] += 1

    def out(self, ident):
        def cell(n, d):
            if self.count_only:
                return {"numerator": n, "denominator": None, "value": n}
            return {"numerator": n, "denominator": d,
                    "value": round(100.0 * n / d, 1) if d else None}
        return {"id": ident, **cell(self.num, self.den),
                "by": {name: {g: cell(*c) for g, c in sorted(groups.items())}
                       for name, groups in sorted(self.by.items())}}


def _births(facts, start, end, types=("live_birth",)):
    """[(pregnancy id, area, outcome date, f)] of outcomes of `types` in the period."""
    s, e = start.isoformat(), end.isoformat()
    return [(pid, area, day(d), f) for pid, (rid, area, d, f) in facts.outcomes().items()
            if d and s <= d <= e and f.get("type") in types]


def _mother_groups(facts, pid, area, on):
    woman, eth, age = facts.mother(pid, on)
    return woman, age, {"ethnicity": eth, "mother_age": age_group(age),
                        "area": facts.sub_area(area)}


def _ga_weeks(visit_f, visit_day, preg_f):
    if visit_f.get("ga") is not None:
        return visit_f["ga"]
    lmp = day(visit_f.get("lmp")) or day(preg_f.get("lmp"))
    if lmp is None and day(preg_f.get("edd")):
        lmp = day(preg_f["edd"]) - timedelta(days=280)
    return None if lmp is None or visit_day is None else (visit_day - lmp).days // 7


def _anc_contacts(facts, pid):
    """(number of ANC check-ups incl. unrecorded prior ones, trimesters covered)."""
    preg_f = facts.pregnancies().get(pid, (None, {}))[1]
    dates, trimesters = set(), set()
    for d, _, _, f in facts.by_subject("anc_visit").get(pid, ()):
        if f.get("ct") != "anc_checkup" or d in dates:
            continue
        dates.add(d)
        ga = _ga_weeks(f, day(d), preg_f)
        if ga is not None:
            trimesters.add(1 if ga <= 13 else 2 if ga <= 27 else 3)
    return len(dates) + int(preg_f.get("prior") or 0), trimesters


def anc(facts, start, end):
    who, vn = Tally(), Tally()
    per_woman = {}
    for pid, area, on, f in _births(facts, start, end, ("live_birth",)):
        woman, age, groups = _mother_groups(facts, pid, area, on)
        per_woman[woman or pid] = (pid, age, groups)   # one per woman: her last in rows
    for pid, age, groups in per_woman.values():
        n, _ = _anc_contacts(facts, pid)
        band = age is not None and 15 <= age <= 49
        who.add(n >= 4, {k: v for k, v in groups.items() if k != "mother_age"} if band else {},
                counted=band)
        who.add(n >= 4, {"mother_age": groups["mother_age"], "age_band": "all_ages"},
                counted=False)
        if band:
            who.add(n >= 4, {"age_band": "15-49"}, counted=False)
    for pid, area, on, f in _births(facts, start, end, ("live_birth", "stillbirth")):
        _, _, groups = _mother_groups(facts, pid, area, on)
        n, trimesters = _anc_contacts(facts, pid)
        vn.add(n >= 4 and trimesters == {1, 2, 3}, groups)
    return {"anc4": who, "anc4_vn": vn}


def births(facts, start, end):
    fac, sba, deaths = Tally(), Tally(), Tally(count_only=True)
    for pid, area, on, f in _births(facts, start, end):
        _, _, groups = _mother_groups(facts, pid, area, on)
        for child, sex, status in f.get("babies") or ():
            if status not in LIVE:
                continue   # stillbirths are not live births
            g = {**groups, "sex": sex_group(sex)}
            fac.add(f.get("place") in FACILITY, g)
            sba.add(f.get("att") in SKILLED, g)
            sba.add(f.get("att") == "village_midwife", {"attendant": "village_midwife"},
                    counted=False)
    # Pregnancy-related deaths: one per woman, from the three sources.
    dead = {}
    for pid, (rid, area, d, f) in facts.outcomes().items():
        if f.get("mo") == "died":
            dead.setdefault(facts.mother(pid, None)[0] or pid, (pid, area, f.get("mdd") or d))
    for pid, visits in facts.by_subject("pnc_visit").items():
        for d, rid, area, f in visits:
            if f.get("ms") == "died":
                dead.setdefault(facts.mother(pid, None)[0] or pid, (pid, area, f.get("mdd") or d))
    for rid, (f, area) in facts.persons().items():
        if f.get("vs") == "died" and f.get("dpr") == "pregnant_or_within_42d":
            dead.setdefault(rid, (None, area, f.get("dod")))
    persons = facts.persons()
    for woman, (pid, area, d) in dead.items():
        on = day(d)
        if on is None or not start <= on <= end:
            continue
        pf = (persons.get(woman) or ({}, None))[0]
        dob = day(pf.get("dob")) or day(facts.pregnancies().get(pid, (None, {}))[1].get("wdob"))
        deaths.add(True, {"ethnicity": ethnicity(pf.get("eth")),
                          "mother_age": age_group(years(dob, on)), "area": facts.sub_area(area)})
    return {"facility_delivery": fac, "skilled_attendance": sba,
            "pregnancy_related_deaths": deaths}


def _clock(text):
    try:
        return time.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None


def _within_48h(on, birth_time, visit_day, visit_time):
    """A visit within 2 days (≤ 48 h) of the birth: by the hours when both
    times are known, else by the day (day 0, 1 or 2 after the birth)."""
    b, v = _clock(birth_time), _clock(visit_time)
    if b is not None and v is not None:
        hours = datetime.combine(visit_day, v) - datetime.combine(on, b)
        return timedelta(0) <= hours <= timedelta(hours=48)
    return 0 <= (visit_day - on).days <= 2


def postnatal(facts, start, end):
    h48, tt30, d42 = Tally(), Tally(), Tally()
    visits_of = facts.by_subject("pnc_visit")
    for pid, area, on, f in _births(facts, start, end, ("live_birth", "stillbirth")):
        _, _, groups = _mother_groups(facts, pid, area, on)
        facility = f.get("place") in FACILITY
        checked = facility and f.get("cbd") == "yes"
        visits = []
        for d, _, _, v in visits_of.get(pid, ()):
            vd = day(d)
            if vd is not None:
                visits.append(((vd - on).days, vd, v))
        early = [v for _, vd, v in visits if _within_48h(on, f.get("time"), vd, v.get("time"))]
        h48.add(checked or bool(early), {**groups, "subject": "mother"})
        # The newborn version (DOMAIN §2.5a): each live-born baby, checked
        # before discharge or seen at a visit within 48 h that records it.
        seen = {b[0] for v in early for b in v.get("babies") or ()}
        for child, _, status in f.get("babies") or ():
            if f.get("type") == "live_birth" and status in LIVE:
                h48.add(checked or (child in seen if child else bool(seen)),
                        {"subject": "newborn"}, counted=False)
        d42.add(checked or any(0 <= dp <= 42 and v.get("role") == "CHS_staff"
                               for dp, _, v in visits), groups)
        # Denominator: births of P, mother alive at delivery. A live birth or a
        # stillbirth was delivered, so the mother was alive then even when she
        # died after it (died_undelivered is its own outcome type): her newborn
        # still needs its visits, so the birth stays in.
        if facility:
            discharge = next((day(v["dis"]) for _, _, v in visits if v.get("dis")), None)
            ok = any((vd - discharge).days <= 7 if discharge else dp <= 7
                     for dp, vd, _ in visits if dp >= 0)
        else:
            firsts = sorted({vd for dp, vd, _ in visits if dp >= 0})   # one visit per date
            ok = (len(firsts) >= 2 and (firsts[0] - on).days <= 1
                  and (firsts[1] - firsts[0]).days <= 7)
        tt30.add(ok, groups)
    return {"pnc_48h": h48, "home_visit_tt30": tt30, "pnc_42d": d42}


def _child_groups(facts, child, area, sex=None):
    pf = (facts.persons().get(child) or ({}, None))[0]
    return {"ethnicity": ethnicity(pf.get("eth")), "sex": sex_group(sex or pf.get("sex")),
            "area": facts.sub_area(area)}


def breastfeeding(facts, start, end):
    """Latest 24-h recall in the period per infant 0–182 days (PNC or counselling)."""
    latest = {}
    outcomes_dob = {}
    for pid, (rid, area, d, f) in facts.outcomes().items():
        for child, _, _ in f.get("babies") or ():
            outcomes_dob[child] = d
    persons = facts.persons()
    s, e = start.isoformat(), end.isoformat()
    for d, rid, area, f in (v for vs in facts.by_subject("pnc_visit").values() for v in vs):
        if not d or not s <= d <= e:
            continue
        for child, status, _, ebf in f.get("babies") or ():
            if ebf is None or child is None:
                continue
            dob = day((persons.get(child) or ({}, None))[0].get("dob")) or day(
                f.get("od") or outcomes_dob.get(child))
            age = (day(d) - dob).days if dob else f.get("dp")
            if age is not None and 0 <= age <= 182:
                latest[child] = max(latest.get(child, ("",)), (d, rid, area, ebf))
    for child, visits in facts.by_subject("nutrition_counselling").items():
        for d, rid, area, f in visits:
            if f.get("ebf") is None or not d or not s <= d <= e:
                continue
            if f.get("age") is not None and 0 <= f["age"] <= 182:
                latest[child] = max(latest.get(child, ("",)), (d, rid, area, f["ebf"]))
    t = Tally()
    for child, (d, rid, area, ebf) in latest.items():
        t.add(ebf, _child_groups(facts, child, area))
    return {"exclusive_bf": t}


def _growth_values(facts, f):
    """(waz, haz, whz, baz, flags, nutrition class) of a measurement fact, or None
    when not computable (a v1 record whose child's sex is unknown)."""
    if "nc" in f or "z" in f:
        return (*f["z"], set(f.get("flags") or ()), f.get("nc"))
    return None


def nutrition(facts, start, end):
    s, e = start.isoformat(), end.isoformat()
    latest = {}
    for child, visits in facts.by_subject("growth").items():
        for d, rid, area, f in visits:   # sorted by date, id: the last one wins
            if d and s <= d <= e and f.get("age") is not None and 0 <= f["age"] <= 1826:
                latest[child] = (d, rid, area, f)
    persons = facts.persons()
    tallies = {k: Tally() for k in ("underweight", "stunting", "wasting", "overweight",
                                    "sam", "mam")}
    for child, (d, rid, area, f) in latest.items():
        pf = (persons.get(child) or ({}, None))[0]
        sex = f.get("sex") or pf.get("sex")
        if "z" not in f:   # v1: computed here from the record's values and the person's sex
            if sex not in ("male", "female"):
                continue   # not computable
            out = growth_outputs(sex, pf.get("dobp") or "exact", f.get("age"), f.get("w"),
                                 f.get("l"), f.get("pos"), f.get("oed"), f.get("muac"))
            f = {**f, "z": [out["waz"], out["haz"], out["whz"], out["baz"]],
                 "flags": list(out["flags"]), "nc": out["nutrition_class"]}
        waz, haz, whz, baz = f["z"]
        flags = set(f.get("flags") or ())
        groups = _child_groups(facts, child, area, sex)
        oed = f.get("oed")

        def index(t, z, name, hit, severe, oedema_counts):
            if oed and oedema_counts:   # counts as < -3: in numerator (if low) and denominator
                t.add(hit(-9.0), groups)
                t.add(severe(-9.0), {"severity": "severe"}, counted=False)
            elif z is not None and name not in flags:
                t.add(hit(z), groups)
                t.add(severe(z), {"severity": "severe"}, counted=False)

        index(tallies["underweight"], waz, "waz", lambda z: z < -2, lambda z: z < -3, True)
        index(tallies["stunting"], haz, "haz", lambda z: z < -2, lambda z: z < -3, False)
        index(tallies["wasting"], whz, "whz", lambda z: z < -2, lambda z: z < -3, True)
        index(tallies["overweight"], whz, "whz", lambda z: z > 2, lambda z: z > 3, True)
        if f.get("nc") is not None and 183 <= f["age"] <= 1826:
            tallies["sam"].add(f["nc"] == "sam", groups)
            tallies["mam"].add(f["nc"] == "mam", groups)
    return tallies


def status(facts, start, end):
    """Counselling of under-2s and insurance coverage on the reference date `end`."""
    ref = end
    since = ref - timedelta(days=365)
    s, e = since.isoformat(), ref.isoformat()
    counselled = {child for child, visits in facts.by_subject("nutrition_counselling").items()
                  if any(d and s < d <= e for d, *_ in visits)}
    # ANC counselling on breastfeeding reaches the children of that pregnancy.
    anc_bf = {pid for pid, visits in facts.by_subject("anc_visit").items()
              if any(f.get("bf") and d and s < d <= e for d, _, _, f in visits)}
    for pid, (rid, area, d, f) in facts.outcomes().items():
        if pid in anc_bf:
            counselled.update(c for c, _, _ in f.get("babies") or () if c)
    cu2, hi = Tally(), Tally()
    for pid, (f, area) in facts.persons().items():
        dob = day(f.get("dob"))
        if dob is None or dob > ref or f.get("vs") == "moved_out":
            continue
        reg = day(f.get("reg"))
        if reg is not None and reg > ref:
            continue   # registered after the reference date: not yet in the population
        dod = day(f.get("dod"))
        if f.get("vs") == "died" and (dod is None or dod <= ref):
            continue
        groups = {"ethnicity": ethnicity(f.get("eth")), "area": facts.sub_area(area)}
        if (ref - dob).days <= 730:
            cu2.add(pid in counselled, {**groups, "sex": sex_group(f.get("sex"))})
        valid = (f.get("hi") == "yes" and day(f.get("hif")) and day(f.get("hit"))
                 and day(f["hif"]) <= ref <= day(f["hit"]))
        hi.add(valid, {**groups, "hi_object_code": f.get("hio") if valid else None})
    return {"counselling_u2": cu2, "hi_coverage": hi}


def _party_key(p):
    return p[0] or f"{p[1]}|{p[2]}|{p[3]}"


def protection(facts, start, end):
    out = {"early_marriage": Tally(count_only=True),
           "consanguineous_marriage": Tally(count_only=True)}
    seen = {k: set() for k in out}
    for rid, area, _, d, f in facts.rows("cp_report"):
        on = day(d)
        if on is None or not start <= on <= end:
            continue
        couple = tuple(sorted((_party_key(f["a"]), _party_key(f["b"]))))
        female = next((p for p in (f["a"], f["b"]) if p[1] == "female"), f["a"])
        em = any(p[3] and p[3] != "01" for p in (f["a"], f["b"]))
        groups = {"ethnicity": "ethnic_minority" if em else "kinh",
                  "mother_age": age_group(years(day(female[2]), on)),
                  "area": facts.sub_area(area)}
        for kind in out:
            if kind in f["types"] and couple not in seen[kind]:
                seen[kind].add(couple)
                out[kind].add(True, groups)
    return out


def sessions(facts, start, end):
    t = Tally(count_only=True)
    attendees = caregivers = 0
    s, e = start.isoformat(), end.isoformat()
    held = set()
    for rid, area, club, d, f in facts.rows("group_session"):
        # One session per club and date: two devices may each have recorded it
        # (rows come by record id, so the smallest id's figures are kept).
        if d and s <= d <= e and (club or rid, d) not in held:
            held.add((club or rid, d))
            t.add(True, {"group_type": f.get("type") or "unknown", "area": facts.sub_area(area)})
            attendees += f.get("n") or 0
            caregivers += f.get("cg") or 0
    clubs = sum(1 for _, _, _, d, f in facts.rows("club")
                if f.get("st") == "active" and d and d <= e)
    out = t.out("group_sessions")
    out["extra"] = {"attendees": attendees, "attendees_caregivers_u2": caregivers,
                    "clubs_registered": clubs}
    return out


def indicators(db, clause, params, scopes, start, end, cp_allowed=True):
    """Every indicator of `ORDER` for the facts matching `clause`, in that order."""
    facts = Facts(db, clause, params, scopes)
    tallies = {}
    for part in (anc, births, postnatal, breastfeeding, nutrition, status):
        tallies.update(part(facts, start, end))
    if cp_allowed:
        tallies.update(protection(facts, start, end))
    out = []
    for ident in ORDER:
        if ident == "group_sessions":
            out.append(sessions(facts, start, end))
        elif ident in tallies:
            out.append(tallies[ident].out(ident))
        else:   # withheld: the role may not read cp_report
            out.append({"id": ident, "numerator": None, "denominator": None, "value": None,
                        "by": {}, "withheld": True})
    return out

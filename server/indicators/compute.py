"""DOMAIN.md §2 indicators over the `facts` table (facts.py).

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
from collections import Counter
from datetime import datetime, time, timedelta

import orjson

from schemas.compute import growth_outputs

from .tally import Facts, Tally, age_group, day, ethnicity, sex_group, years

FACILITY = {"provincial_hosp", "district_hosp_or_regional_centre", "CHS", "private_facility"}
SKILLED = {"doctor", "assistant_doctor", "midwife", "nurse"}
LIVE = {"alive", "died_after_birth"}
ORDER = ("anc4", "anc4_vn", "facility_delivery", "skilled_attendance",
         "pregnancy_related_deaths", "pnc_48h", "home_visit_tt30", "pnc_42d", "exclusive_bf",
         "underweight", "stunting", "wasting", "overweight", "sam", "mam", "counselling_u2",
         "hi_coverage", "early_marriage", "consanguineous_marriage", "group_sessions")
#: Indicators counted from cp_report (restricted form): withheld from other roles.
CP_INDICATORS = ("early_marriage", "consanguineous_marriage")


# The computation runs in SQL over the scope's facts: each query below reads
# them once and answers a row per birth or per child, or counts per group, so
# no form is held whole in Python (issue 15: a province of 1M records). The
# rules are those of the docstring; tests/test_indicators_sql.py checks every
# answer against the Python computation they replaced (tests/indicators_oracle.py).

#: One outcome per pregnancy (the smallest record id), as `Facts.outcomes`.
_OUTCOMES = """SELECT coalesce(nullif(subject, ''), id) AS pid, min(id) AS rid, area, day, f
    FROM facts WHERE form = 'pregnancy_outcome' AND {c} GROUP BY 1"""


def _person(facts, alias, on):
    """A LEFT JOIN of the person record `on` names, in scope (by primary key)."""
    return (f"LEFT JOIN facts AS {alias} ON {alias}.id = {on} AND {alias}.form = 'person' "
            f"AND {facts.on(alias)}")


def _pregnancy(facts, alias, on):
    return (f"LEFT JOIN facts AS {alias} ON {alias}.id = {on} AND {alias}.form = 'pregnancy' "
            f"AND {facts.on(alias)}")


def _anc_contacts(facts):
    """{pregnancy id: (ANC check-up dates, trimester 1, 2, 3 covered)}: one
    check-up per date (the first recorded), its trimester from its
    gestational age, else from the LMP of the visit or the pregnancy, else
    from the EDD."""
    c = facts.on()
    # Every pregnancy of the scope: one pass over its ANC contacts costs less
    # than finding those of the period's births one by one.
    sql = f"""WITH a AS (SELECT subject AS pid, day, min(id), f ->> 'ga' AS ga, f ->> 'lmp' AS lmp
          FROM facts WHERE form = 'anc_visit' AND {c} AND f ->> 'ct' = 'anc_checkup'
          GROUP BY subject, day),
    t AS (SELECT pid, count(*) AS n, max(ga <= 13) AS t1, max(ga > 13 AND ga <= 27) AS t2,
                 max(ga > 27) AS t3
          FROM (SELECT a.pid, coalesce(a.ga, floor((julianday(a.day) - julianday(coalesce(
                    a.lmp, (SELECT coalesce(p.f ->> 'lmp', date(p.f ->> 'edd', '-280 days'))
                            FROM facts AS p WHERE p.id = a.pid AND p.form = 'pregnancy'
                            AND {facts.on("p")})))) / 7.0)) AS ga
                FROM a)
          GROUP BY pid)
    SELECT * FROM t"""
    return {pid: (n, t1, t2, t3) for pid, n, t1, t2, t3 in facts.sql(sql)}


def _births(facts, start, end):
    """Births of the period (live births and stillbirths), by outcome record id:
    (pid, outcome date, f, woman, mother's age, groups, ANC check-ups incl.
    unrecorded prior ones, trimesters covered, PNC visits [[day, id, f]])."""
    c = facts.on()
    sql = f"""WITH o AS ({_OUTCOMES.format(c=c)}),
    b AS MATERIALIZED (SELECT * FROM o WHERE day BETWEEN :start AND :end
                       AND f ->> 'type' IN ('live_birth', 'stillbirth'))
    SELECT b.pid, b.area, b.day, b.f, p.subject, coalesce(w.day, p.f ->> 'wdob'),
           w.f ->> 'eth', coalesce(p.f ->> 'prior', 0),
           (SELECT json_group_array(json_array(v.day, v.id, json(v.f))) FROM facts AS v
            WHERE v.form = 'pnc_visit' AND v.subject = b.pid AND {facts.on("v")})
    FROM b {_pregnancy(facts, "p", "b.pid")} {_person(facts, "w", "p.subject")}
    ORDER BY b.rid"""
    anc = _anc_contacts(facts)
    rows = facts.sql(sql, start=start.isoformat(), end=end.isoformat())
    for pid, area, d, f, woman, mdob, eth, prior, visits in rows:
        n, t1, t2, t3 = anc.get(pid, (0, None, None, None))
        n += prior
        on = day(d)
        age = years(day(mdob), on)
        groups = {"ethnicity": ethnicity(eth), "mother_age": age_group(age),
                  "area": facts.sub_area(area)}
        yield (pid, on, orjson.loads(f), woman, age, groups, int(n),
               {i for i, hit in ((1, t1), (2, t2), (3, t3)) if hit},
               orjson.loads(visits) if visits else [])


def birth_indicators(facts, start, end):
    """anc4, anc4_vn, facility_delivery, skilled_attendance, pnc_48h,
    home_visit_tt30, pnc_42d: one pass over the period's births."""
    per_woman = {}
    # Many births share one result (their groups, each rule's answer, their
    # babies'): count the births per result, then tally each result once.
    results = Counter()
    for pid, on, f, woman, age, groups, n, trimesters, visits in _births(facts, start, end):
        babies = ()
        if f.get("type") == "live_birth":
            per_woman[woman or pid] = (age, groups, n)   # one per woman: her last by id
            att = f.get("att")
            # Stillbirths are not live births.
            babies = tuple((sex_group(sex), f.get("place") in FACILITY, att in SKILLED,
                            att == "village_midwife")
                           for _, sex, status in f.get("babies") or () if status in LIVE)
        visits.sort(key=lambda v: (v[0] or "", v[1]))
        results[tuple(groups.items()), babies, n >= 4 and trimesters == {1, 2, 3},
                _postnatal(on, f, visits)] += 1
    who, vn = Tally(), Tally()
    fac, sba = Tally(), Tally()
    h48, tt30, d42 = Tally(), Tally(), Tally()
    for (items, babies, vn_hit, (mother, newborns, d42_hit, tt30_hit)), k in results.items():
        groups = dict(items)
        for sex, facility, skilled, village_midwife in babies:
            g = {**groups, "sex": sex}
            fac.add(facility, g, n=k)
            sba.add(skilled, g, n=k)
            sba.add(village_midwife, {"attendant": "village_midwife"}, counted=False, n=k)
        vn.add(vn_hit, groups, n=k)
        h48.add(mother, {**groups, "subject": "mother"}, n=k)
        for hit in newborns:
            h48.add(hit, {"subject": "newborn"}, counted=False, n=k)
        d42.add(d42_hit, groups, n=k)
        tt30.add(tt30_hit, groups, n=k)
    for age, groups, n in per_woman.values():
        band = age is not None and 15 <= age <= 49
        who.add(n >= 4, {k: v for k, v in groups.items() if k != "mother_age"} if band else {},
                counted=band)
        who.add(n >= 4, {"mother_age": groups["mother_age"], "age_band": "all_ages"},
                counted=False)
        if band:
            who.add(n >= 4, {"age_band": "15-49"}, counted=False)
    return {"anc4": who, "anc4_vn": vn, "facility_delivery": fac, "skilled_attendance": sba,
            "pnc_48h": h48, "home_visit_tt30": tt30, "pnc_42d": d42}


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


def _postnatal(on, f, pnc):
    """One birth's `(pnc_48h of the mother, (pnc_48h of each live-born
    baby), pnc_42d, home_visit_tt30)`, from its PNC visits [[day, id, f]]
    sorted by day and id."""
    facility = f.get("place") in FACILITY
    checked = facility and f.get("cbd") == "yes"
    visits = []
    for d, _, v in pnc:
        vd = day(d)
        if vd is not None:
            visits.append(((vd - on).days, vd, v))
    early = [v for _, vd, v in visits if _within_48h(on, f.get("time"), vd, v.get("time"))]
    mother = checked or bool(early)
    # The newborn version (DOMAIN §2.5a): each live-born baby, checked
    # before discharge or seen at a visit within 48 h that records it.
    seen = {b[0] for v in early for b in v.get("babies") or ()}
    newborns = tuple(checked or (child in seen if child else bool(seen))
                     for child, _, status in f.get("babies") or ()
                     if f.get("type") == "live_birth" and status in LIVE)
    d42 = checked or any(0 <= dp <= 42 and v.get("role") == "CHS_staff" for dp, _, v in visits)
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
    return bool(mother), newborns, bool(d42), bool(ok)


def deaths(facts, start, end):
    """Pregnancy-related deaths: one per woman, from the three sources in
    this order (the first one found is kept): outcomes by record id, PNC
    visits by pregnancy (first recorded first) then day, persons."""
    c = facts.on()
    dead = {}
    sql = f"""WITH o AS ({_OUTCOMES.format(c=c)})
        SELECT o.pid, p.subject, o.area, coalesce(nullif(o.f ->> 'mdd', ''), o.day)
        FROM o {_pregnancy(facts, "p", "o.pid")} WHERE o.f ->> 'mo' = 'died' ORDER BY o.rid"""
    for pid, woman, area, d in facts.sql(sql):
        dead.setdefault(woman or pid, (pid, area, d))
    # The few deaths' first visit of their pregnancy through the PNC subject
    # index: a window over every visit sorted them all.
    sql = f"""WITH v AS (SELECT id, subject, area, day, f ->> 'mdd' AS mdd
                         FROM facts WHERE form = 'pnc_visit' AND {c} AND f ->> 'ms' = 'died')
        SELECT v.subject, p.subject, v.area, coalesce(nullif(v.mdd, ''), v.day)
        FROM v {_pregnancy(facts, "p", "v.subject")}
        ORDER BY (SELECT min(id) FROM facts AS f1 WHERE f1.form = 'pnc_visit'
                  AND f1.subject IS v.subject AND {facts.on("f1")}),
                 coalesce(v.day, ''), v.id"""
    for pid, woman, area, d in facts.sql(sql):
        dead.setdefault(woman or pid, (pid, area, d))
    sql = f"""SELECT id, area, f ->> 'dod' FROM facts WHERE form = 'person' AND {c}
        AND f ->> 'vs' = 'died' AND f ->> 'dpr' = 'pregnant_or_within_42d' ORDER BY id"""
    for rid, area, d in facts.sql(sql):
        dead.setdefault(rid, (None, area, d))
    dead = {w: v for w, v in dead.items() if (on := day(v[2])) and start <= on <= end}
    # The woman's date of birth and ethnicity (her person record, else the
    # pregnancy's woman_dob), for the few deaths of the period.
    sql = f"""SELECT k.key, coalesce(w.day, p.f ->> 'wdob'), w.f ->> 'eth'
        FROM json_each(:keys) AS k {_person(facts, "w", "k.key")}
        {_pregnancy(facts, "p", "k.value")}"""
    keys = orjson.dumps({w: pid for w, (pid, _, _) in dead.items() if w is not None}).decode()
    mothers = {w: (dob, eth) for w, dob, eth in facts.sql(sql, keys=keys)}
    t = Tally(count_only=True)
    for woman, (pid, area, d) in dead.items():
        on = day(d)
        dob, eth = mothers.get(woman, (None, None))
        t.add(True, {"ethnicity": ethnicity(eth), "mother_age": age_group(years(day(dob), on)),
                     "area": facts.sub_area(area)})
    return {"pregnancy_related_deaths": t}


def breastfeeding(facts, start, end):
    """Latest 24-h recall in the period per infant 0–182 days (PNC or counselling).
    A PNC baby's age is from the person's date of birth, else the visit's
    outcome date, else the date of the last outcome (by id) naming the baby,
    else the visit's day postpartum."""
    c = facts.on()
    # `ob` (every outcome's babies) is built at its first use, for a baby with
    # no person record in scope and no outcome date on the visit: most have one.
    sql = f"""WITH o AS ({_OUTCOMES.format(c=c)}),
    ob AS MATERIALIZED (SELECT json_extract(b.value, '$[0]') AS child, max(o.rid), o.day AS od
           FROM o, json_each(o.f, '$.babies') AS b GROUP BY 1),
    v AS (SELECT id, area, day, f FROM facts WHERE form = 'pnc_visit' AND {c}
          AND day BETWEEN :start AND :end),
    pv AS (SELECT v.id, v.area, v.day, json_extract(b.value, '$[0]') AS child,
                  json_extract(b.value, '$[3]') AS ebf, v.f ->> 'od' AS od, v.f ->> 'dp' AS dp
           FROM v, json_each(v.f, '$.babies') AS b),
    cand AS (
        SELECT pv.child, pv.day, pv.id, pv.area, pv.ebf FROM pv {_person(facts, "w", "pv.child")}
        WHERE pv.ebf IS NOT NULL AND pv.child IS NOT NULL
        AND coalesce(julianday(pv.day) - julianday(coalesce(
            w.day, pv.od, (SELECT ob.od FROM ob WHERE ob.child = pv.child))), pv.dp)
            BETWEEN 0 AND 182
        UNION ALL
        SELECT subject, day, id, area, f ->> 'ebf' FROM facts
        WHERE form = 'nutrition_counselling' AND {c} AND day BETWEEN :start AND :end
        AND f ->> 'ebf' IS NOT NULL AND f ->> 'age' BETWEEN 0 AND 182),
    latest AS (SELECT child, area, ebf, row_number() OVER (
                   PARTITION BY child ORDER BY day DESC, id DESC, area DESC, ebf DESC) AS k
               FROM cand)
    SELECT w.f ->> 'eth', w.f ->> 'sex', latest.area, latest.ebf, count(*)
    FROM latest {_person(facts, "w", "latest.child")} WHERE k = 1 GROUP BY 1, 2, 3, 4"""
    t = Tally()
    for eth, sex, area, ebf, n in facts.sql(sql, start=start.isoformat(), end=end.isoformat()):
        t.add(ebf, {"ethnicity": ethnicity(eth), "sex": sex_group(sex),
                    "area": facts.sub_area(area)}, n=n)
    return {"exclusive_bf": t}


def nutrition(facts, start, end):
    """Each child's latest measurement of the period (0–1826 days)."""
    sql = f"""WITH m AS (SELECT subject, area, f, row_number() OVER (
                             PARTITION BY subject ORDER BY day DESC, id DESC) AS k
                         FROM facts WHERE form = 'growth' AND {facts.on()}
                         AND day BETWEEN :start AND :end AND f ->> 'age' BETWEEN 0 AND 1826)
        SELECT m.area, m.f, w.f ->> 'sex', w.f ->> 'dobp', w.f ->> 'eth'
        FROM m {_person(facts, "w", "m.subject")} WHERE m.k = 1"""
    # Many children share one result (groups and which indices are low):
    # count the children per result, then tally each result once.
    results = Counter()
    for area, f, psex, dobp, eth in facts.sql(sql, start=start.isoformat(), end=end.isoformat()):
        key = _measurement(facts.sub_area(area), orjson.loads(f), psex, dobp, eth)
        if key is not None:
            results[key] += 1
    tallies = {k: Tally() for k in ("underweight", "stunting", "wasting", "overweight",
                                    "sam", "mam")}
    severe = {"severity": "severe"}
    for (area, eth, sex, *indices, nc), n in results.items():
        groups = {"ethnicity": eth, "sex": sex, "area": area}
        for name, index in zip(("underweight", "stunting", "wasting", "overweight"), indices):
            if index is not None:
                tallies[name].add(index[0], groups, n=n)
                tallies[name].add(index[1], severe, counted=False, n=n)
        if nc is not None:
            tallies["sam"].add(nc == "sam", groups, n=n)
            tallies["mam"].add(nc == "mam", groups, n=n)
    return tallies


def _measurement(area, f, psex, dobp, eth):
    """`(area, ethnicity, sex, underweight, stunting, wasting, overweight,
    class)` of one measurement: each index None (not counted) or (low,
    severely low) (high for overweight); the class None when sam and mam do
    not count it. None when the z-scores cannot be computed."""
    sex = f.get("sex") or psex
    if "z" not in f:   # v1: computed here from the record's values and the person's sex
        if sex not in ("male", "female"):
            return None   # not computable
        out = growth_outputs(sex, dobp or "exact", f.get("age"), f.get("w"),
                             f.get("l"), f.get("pos"), f.get("oed"), f.get("muac"))
        f = {**f, "z": [out["waz"], out["haz"], out["whz"], out["baz"]],
             "flags": list(out["flags"]), "nc": out["nutrition_class"]}
    waz, haz, whz, baz = f["z"]
    flags = f.get("flags") or ()
    oed = f.get("oed")

    def index(z, name, oedema_counts, high=False):
        if oed and oedema_counts:   # counts as < -3: in numerator (if low) and denominator
            z = -9.0
        elif z is None or name in flags:
            return None
        return (z > 2, z > 3) if high else (z < -2, z < -3)

    nc = f.get("nc")
    return (area, ethnicity(eth), sex_group(sex), index(waz, "waz", True),
            index(haz, "haz", False), index(whz, "whz", True), index(whz, "whz", True, True),
            nc if nc is not None and 183 <= f["age"] <= 1826 else None)


def status(facts, start, end):
    """Counselling of under-2s and insurance coverage on the reference date `end`."""
    c = facts.on()
    ref = end.isoformat()
    since = (end - timedelta(days=365)).isoformat()
    # Counselled in the 12 months: a counselling session, or ANC counselling on
    # breastfeeding for the pregnancy the child was born of (its one outcome).
    sql = f"""WITH bf AS (SELECT subject FROM facts WHERE form = 'anc_visit' AND {c}
                          AND f ->> 'bf' AND day > :since AND day <= :ref),
    o AS (SELECT coalesce(nullif(subject, ''), id) AS pid, min(id), f FROM facts
          WHERE form = 'pregnancy_outcome' AND {c}
          AND coalesce(nullif(subject, ''), id) IN (SELECT subject FROM bf) GROUP BY 1),
    cs AS (SELECT subject AS child FROM facts WHERE form = 'nutrition_counselling' AND {c}
           AND day > :since AND day <= :ref
           UNION SELECT json_extract(b.value, '$[0]') FROM o, json_each(o.f, '$.babies') AS b
           WHERE json_extract(b.value, '$[0]') <> '')
    SELECT f ->> 'eth', area, f ->> 'sex', julianday(:ref) - julianday(day) <= 730,
           id IN (SELECT child FROM cs),
           f ->> 'hi' = 'yes' AND f ->> 'hif' <= :ref AND :ref <= f ->> 'hit', f ->> 'hio',
           count(*)
    FROM facts WHERE form = 'person' AND {c} AND day <= :ref
    AND coalesce(f ->> 'vs', '') <> 'moved_out' AND coalesce(f ->> 'reg', '') <= :ref
    AND NOT (coalesce(f ->> 'vs', '') = 'died' AND coalesce(f ->> 'dod', '') <= :ref)
    GROUP BY 1, 2, 3, 4, 5, 6, 7"""
    cu2, hi = Tally(), Tally()
    for eth, area, sex, u2, counselled, valid, hio, n in facts.sql(sql, since=since, ref=ref):
        groups = {"ethnicity": ethnicity(eth), "area": facts.sub_area(area)}
        if u2:
            cu2.add(counselled, {**groups, "sex": sex_group(sex)}, n=n)
        hi.add(valid, {**groups, "hi_object_code": hio if valid else None}, n=n)
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
    # Read through SQLite's page cache, not the memory map: a province's
    # scan would otherwise map (and count in the process's RSS) most of the
    # file. Set back for the connection's next user.
    mmap = db.conn.execute("PRAGMA mmap_size").fetchone()[0]
    db.conn.execute("PRAGMA mmap_size = 0")
    try:
        for part in (birth_indicators, deaths, breastfeeding, nutrition, status):
            tallies.update(part(facts, start, end))
        if cp_allowed:
            tallies.update(protection(facts, start, end))
    finally:
        db.conn.execute(f"PRAGMA mmap_size = {int(mmap)}")
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

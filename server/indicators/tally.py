"""How the indicators read the facts of a scope and count them: the
breakdown groups (ethnicity, mother's age, sex), `Facts` (one scope's facts,
loaded form by form) and `Tally` (numerator and denominator, overall and per
group). compute.py holds the indicators' rules; worklists.py reads facts
through the same `Facts`.
"""
import re
from collections import Counter, defaultdict
from datetime import date

import orjson


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
        # The scope as named parameters (:s0, :s1, ...), for queries that use
        # it several times, and per table alias (`on`).
        self.named = {f"s{i}": v for i, v in enumerate(params)}
        marks = iter(self.named)
        self._named_clause = re.sub(r"\?", lambda _: ":" + next(marks), clause)
        self._areas = {}

    def on(self, alias=None):
        """The scope clause with named parameters, on `alias.area`."""
        if alias is None:
            return self._named_clause
        return re.sub(r"\barea\b", f"{alias}.area", self._named_clause)

    def sql(self, sql, **params):
        return self.db.conn.execute(sql, {**self.named, **params})

    def rows(self, form):
        """[(id, area, subject, day, f)] of `form` in scope, by record id."""
        if form not in self._cache:
            self._cache[form] = [
                (rid, area, subject, d, orjson.loads(f)) for rid, area, subject, d, f in
                self.db.execute(f"SELECT id, area, subject, day, f FROM facts WHERE form = ? "
                                f"AND {self.clause} ORDER BY id", [form, *self.params])]
        return self._cache[form]

    def sub_area(self, area):
        if area not in self._areas:
            self._areas[area] = ".".join(area.split(".")[:self.depth or 1])
        return self._areas[area]

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
        # (hit, groups, counted) -> units: many units share few keys, so
        # counting them here and folding once in `out` is cheap.
        self.calls = Counter()

    def add(self, hit, groups, counted=True, n=1):
        """`n` units: in the numerator if `hit`; in the headline if `counted`
        (else only in its groups: e.g. all-ages breakdowns of a 15–49 figure)."""
        self.calls[bool(hit), tuple(groups.items()), counted] += n

    def _fold(self):
        num = den = 0
        by = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for (hit, groups, counted), n in self.calls.items():
            if counted:
                num += hit * n
                den += n
            for name, group in groups:
                if group is None:
                    continue
                cell = by[name][group]
                cell[0] += hit * n
                cell[1] += n
        return num, den, by

    def out(self, ident):
        def cell(n, d):
            if self.count_only:
                return {"numerator": n, "denominator": None, "value": n}
            return {"numerator": n, "denominator": d,
                    "value": round(100.0 * n / d, 1) if d else None}
        num, den, by = self._fold()
        return {"id": ident, **cell(num, den),
                "by": {name: {g: cell(*c) for g, c in sorted(groups.items())}
                       for name, groups in sorted(by.items())}}

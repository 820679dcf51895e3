"""WHO Child Growth Standards (2006) z-scores, computed as WHO's ``anthro`` does.

    >>> rounded(zscores(sex="M", age_days=400, weight_kg=9.1, lenhei_cm=74.5, measure="lying"))
    {'waz': -0.77, 'haz': -1.06, 'whz': -0.39, 'baz': -0.2}

Pure functions, no I/O per call; WHO's tables (package data in
``schemas/growth_tables/``, see its README) are read once, on first use.
The method is DOMAIN.md §4, WHO anthro's R code and the WHO MGRS 2006 report:

- ages 0–1826 days (age in months = days / 30.4375 must be < 60);
- standing before 731 days adds 0.7 cm, lying from 731 days takes 0.7 cm
  off; standing before 9 months (age_days / 30.4375 < 9) is implausible, so
  the position is treated as unknown (no adjustment);
- length/height-for-age uses the plain LMS z; weight-for-age,
  weight-for-length/height and BMI-for-age the restricted z beyond ±3 SD;
- weight-for-length below 731 days (45–110 cm), weight-for-height from 731
  days (65–120 cm), always with the adjusted length, interpolated between the
  0.1 cm rows, null outside the table (never the other table);
- oedema: no WAZ, WHZ or BAZ (HAZ is still computed).

Values are not rounded here. WHO anthro rounds every z-score to 2 decimals
before flagging and before prevalence; ``flags`` and ``classify`` do the
same, so their answers match WHO's on the stored 2-decimal values.
"""
from __future__ import annotations

import csv
import math
from importlib import resources

DAYS_PER_MONTH = 30.4375
MAX_AGE_DAYS = 1826          # the last day with age_days / 30.4375 < 60
WFL_DAYS = 731               # weight-for-length below this age, weight-for-height from it
STANDING_FROM_DAYS = 274     # standing is implausible while age_days / 30.4375 < 9
ADJUST_CM = 0.7
WFL_RANGE = (450, 1100)      # in millimetres (tenths of a cm), as the table rows
WFH_RANGE = (650, 1200)
SEXES = ("M", "F")
MEASURES = ("lying", "standing")
INDICES = ("waz", "haz", "whz", "baz")
# WHO's implausible values (anthro's flag thresholds): (low, high) on the 2-decimal z.
FLAG_LIMITS = {"waz": (-6.0, 5.0), "haz": (-6.0, 6.0), "whz": (-5.0, 5.0), "baz": (-5.0, 5.0)}

_tables: dict | None = None


def _load() -> dict:
    """{name: {sex: [(l, m, s), ...]}}: age tables indexed by day, length tables
    by millimetres above their first row."""
    global _tables
    if _tables is None:
        folder = resources.files("schemas") / "growth_tables"
        tables = {}
        for name in ("wfa", "lhfa", "bmi", "wfl", "wfh"):
            rows = {"M": [], "F": []}
            with (folder / f"{name}.csv").open(newline="") as f:
                reader = csv.reader(line for line in f if not line.startswith("#"))
                next(reader)  # the column names
                for sex, _x, l, m, s in reader:
                    rows[sex].append((float(l), float(m), float(s)))
            tables[name] = rows
        _tables = tables
    return _tables


def _z(y: float, lms: tuple) -> float:
    """The plain LMS z-score."""
    l, m, s = lms
    if l == 0:
        return math.log(y / m) / s
    return ((y / m) ** l - 1) / (s * l)


def _z_restricted(y: float, lms: tuple) -> float:
    """WHO's restricted LMS: beyond ±3 SD, the distance in units of the 2–3 SD gap."""
    z = _z(y, lms)
    if -3 <= z <= 3:
        return z
    l, m, s = lms

    def sd(k):
        return m * (1 + l * s * k) ** (1 / l)

    if z > 3:
        sd3 = sd(3)
        return 3 + (y - sd3) / (sd3 - sd(2))
    sd3 = sd(-3)
    return -3 + (y - sd3) / (sd(-2) - sd3)


def _positive(value, name):
    """A measurement as a float, or None when absent; WHO gives no z-score for
    a value <= 0 (or not a number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, not {value!r}")
    value = float(value)
    if not value > 0 or math.isinf(value):
        return None
    return value


def adjusted_length(age_days: int, lenhei_cm: float, measure: str | None) -> float:
    """The length/height WHO's tables expect: +0.7 cm for standing before 731
    days, −0.7 cm for lying from 731 days; unknown (or implausible) position: as measured."""
    if measure == "standing" and STANDING_FROM_DAYS <= age_days < WFL_DAYS:
        return lenhei_cm + ADJUST_CM
    if measure == "lying" and age_days >= WFL_DAYS:
        return lenhei_cm - ADJUST_CM
    return lenhei_cm


def position_implausible(age_days: int, measure: str | None) -> bool:
    """WHO's flag for a height measured standing before 9 months (it then
    ignores the position)."""
    return measure == "standing" and age_days < STANDING_FROM_DAYS


def _weight_for_length(sex: str, age_days: int, weight: float, length: float) -> float | None:
    table, (low, high) = (("wfl", WFL_RANGE) if age_days < WFL_DAYS else ("wfh", WFH_RANGE))
    # Integer tenths of a cm, rounded first: 102.4 (103.1 lying − 0.7) is
    # 1023.9999… tenths in binary and must land on the 102.4 row.
    tenths = round(length * 10, 9)
    if not low <= tenths <= high:
        return None
    rows = _load()[table][sex]
    below = math.floor(tenths)
    frac = tenths - below
    l0, m0, s0 = rows[below - low]
    if frac:
        l1, m1, s1 = rows[below - low + 1]
        lms = (l0 + frac * (l1 - l0), m0 + frac * (m1 - m0), s0 + frac * (s1 - s0))
    else:
        lms = (l0, m0, s0)
    return _z_restricted(weight, lms)


def zscores(sex: str, age_days: int, weight_kg: float | None = None, lenhei_cm: float | None = None,
            measure: str | None = None, oedema: bool = False) -> dict:
    """WAZ, HAZ, WHZ and BAZ as WHO anthro computes them, unrounded.

    Each is a float, or None where WHO gives none: the age is outside 0–1826
    days, `sex` is None, the measurement it needs is None, <= 0 or outside the
    weight-for-length (45–110 cm) / weight-for-height (65–120 cm) table, or
    (WAZ, WHZ, BAZ) there is oedema. All four are None when `sex` or
    `age_days` is None.

    :param sex: "M" or "F" (or None: nothing computed).
    :param age_days: whole days from birth to the measurement (or None).
    :param weight_kg: weight in kg, or None.
    :param lenhei_cm: length or height in cm as measured (not yet adjusted), or None.
    :param measure: "lying", "standing" or None (position unknown: no adjustment).
    :param oedema: bilateral pitting oedema (None counts as no, as in WHO anthro).
    :raises ValueError: `sex` or `measure` is not one of the values above.
    :raises TypeError: `age_days` is not an int, or a measurement not a number.
    """
    out = dict.fromkeys(INDICES)
    if sex is not None and sex not in SEXES:
        raise ValueError(f"sex must be 'M' or 'F', not {sex!r}")
    if measure is not None and measure not in MEASURES:
        raise ValueError(f"measure must be 'lying', 'standing' or None, not {measure!r}")
    if age_days is not None and (isinstance(age_days, bool) or not isinstance(age_days, int)):
        raise TypeError(f"age_days must be an int or None, not {age_days!r}")
    weight = _positive(weight_kg, "weight_kg")
    length = _positive(lenhei_cm, "lenhei_cm")
    if sex is None or age_days is None or not 0 <= age_days <= MAX_AGE_DAYS:
        return out
    tables = _load()
    if length is not None:
        length = adjusted_length(age_days, length, measure)
        out["haz"] = _z(length, tables["lhfa"][sex][age_days])
    if oedema or weight is None:
        return out
    out["waz"] = _z_restricted(weight, tables["wfa"][sex][age_days])
    if length is not None:
        out["whz"] = _weight_for_length(sex, age_days, weight, length)
        out["baz"] = _z_restricted(weight / (length / 100) ** 2, tables["bmi"][sex][age_days])
    return out


def rounded(z: dict) -> dict:
    """The z-scores rounded to 2 decimals, as WHO anthro reports and stores them."""
    return {k: (None if v is None else round(v, 2)) for k, v in z.items()}


def flags(z: dict) -> list[str]:
    """The indices whose value WHO calls implausible: HAZ |z| > 6, WAZ < −6 or
    > 5, WHZ and BAZ |z| > 5, judged on the 2-decimal value as WHO does.
    Flagged values are excluded from prevalence. A None is never flagged.

    :param z: a dict such as `zscores` returns (missing keys count as None).
    :returns: the flagged index names, in the order waz, haz, whz, baz.
    """
    out = []
    for name in INDICES:
        value = z.get(name)
        if value is None:
            continue
        value = round(value, 2)
        low, high = FLAG_LIMITS[name]
        if value < low or value > high:
            out.append(name)
    return out


STATUS = ("stunted", "severely_stunted", "underweight", "severely_underweight",
          "wasted", "severely_wasted", "overweight")


def classify(age_days: int | None, z: dict, muac_mm: int | float | None = None,
             oedema: bool = False) -> dict:
    """The nutrition class and the DOMAIN §2 row 7 statuses of one measurement.

    Every z-score is taken at 2 decimals (as WHO anthro), and a flagged
    (implausible) one counts as missing.

    - ``nutrition_class`` (6–59 months, 183–1826 days; None at other ages):
      "SAM" if bilateral oedema, WHZ < −3 or MUAC < 115 mm; else "MAM" if
      −3 <= WHZ < −2 or 115 <= MUAC < 125 mm; else "normal" if a WHZ or a MUAC
      was available; None when neither is (nothing to classify on).
    - ``stunted`` / ``severely_stunted``: HAZ < −2 / < −3.
    - ``underweight`` / ``severely_underweight``: WAZ < −2 / < −3.
    - ``wasted`` / ``severely_wasted``: WHZ < −2 / < −3.
    - ``overweight``: WHZ > +2.
    Each status is None when its z-score is missing or flagged, except that
    with oedema the child counts as severely underweight and severely wasted
    (and not overweight), as WHO's prevalence does. All are None outside 0–1826 days.

    :param age_days: whole days of age at the measurement (None: everything None).
    :param z: the z-scores (`zscores`'s dict; rounded or not).
    :param muac_mm: mid-upper arm circumference in whole mm, or None.
    :param oedema: bilateral pitting oedema.
    """
    out = {"nutrition_class": None, **dict.fromkeys(STATUS)}
    if age_days is None or not 0 <= age_days <= MAX_AGE_DAYS:
        return out
    bad = flags(z)
    val = {k: (None if z.get(k) is None or k in bad else round(z[k], 2)) for k in INDICES}
    haz, waz, whz = val["haz"], val["waz"], val["whz"]
    if haz is not None:
        out["stunted"], out["severely_stunted"] = haz < -2, haz < -3
    if oedema:
        out.update(underweight=True, severely_underweight=True, wasted=True,
                   severely_wasted=True, overweight=False)
    else:
        if waz is not None:
            out["underweight"], out["severely_underweight"] = waz < -2, waz < -3
        if whz is not None:
            out["wasted"], out["severely_wasted"], out["overweight"] = whz < -2, whz < -3, whz > 2
    if age_days >= 183:
        out["nutrition_class"] = _nutrition_class(whz, muac_mm, oedema)
    return out


def _nutrition_class(whz, muac, oedema):
    # The most severe criterion wins (WHO/UNICEF 2009, DOMAIN §2 row 7b).
    if oedema or (whz is not None and whz < -3) or (muac is not None and muac < 115):
        return "SAM"
    if (whz is not None and whz < -2) or (muac is not None and muac < 125):
        return "MAM"
    if whz is None and muac is None:
        return None
    return "normal"

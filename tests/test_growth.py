"""WHO growth z-scores (schemas/growth.py) against WHO's own numbers.

Expected values come from WHO, never from the code under test: WHO's igrowup
survey outputs (tests/data/who_igrowup_survey.csv), WHO's LMS rows copied
from its anthro tables into the hand-worked cases below, and DOMAIN.md's
anchors for the shipped tables.
"""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from schemas import growth
from schemas.growth import classify, flags, position_implausible, zscores

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "schemas" / "growth_tables"
SURVEY = Path(__file__).parent / "data" / "who_igrowup_survey.csv"


def lms_z(y, l, m, s):
    """WHO MGRS 2006 ch. 7: the LMS z-score."""
    return ((y / m) ** l - 1) / (s * l)


def restricted_z(y, l, m, s):
    """WHO MGRS 2006 ch. 7: beyond ±3 SD, distance in units of the SD2–SD3 gap."""
    z = lms_z(y, l, m, s)
    sd = lambda k: m * (1 + l * s * k) ** (1 / l)  # noqa: E731
    if z > 3:
        return 3 + (y - sd(3)) / (sd(3) - sd(2))
    if z < -3:
        return -3 + (y - sd(-3)) / (sd(-2) - sd(-3))
    return z


def read_table(name):
    with (TABLES / f"{name}.csv").open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


# -- the shipped tables

@pytest.mark.parametrize("name, rows", [("wfa", 3654), ("lhfa", 3654), ("bmi", 3654),
                                        ("wfl", 1302), ("wfh", 1102)])
def test_each_table_has_whos_row_count_for_both_sexes(name, rows):
    table = read_table(name)
    assert len(table) == rows
    assert sum(r["sex"] == "M" for r in table) == rows // 2
    # The loaded table is the file, every row, and rows are consecutive days / 0.1 cm.
    loaded = growth._load()[name]
    assert len(loaded["M"]) == len(loaded["F"]) == rows // 2
    for sex in "MF":
        key, step = ("age_days", 1) if name in ("wfa", "lhfa", "bmi") else ("cm", 0.1)
        xs = [float(r[key]) for r in table if r["sex"] == sex]
        assert all(abs(b - a - step) < 1e-9 for a, b in zip(xs, xs[1:]))


@pytest.mark.parametrize("name, sex, x, lms", [
    ("wfa", "M", "0", ("0.3487", "3.3464", "0.14602")),          # DOMAIN §4 anchor
    ("wfh", "M", "92.6", ("-0.3521", "13.4937", "0.08028")),     # DOMAIN §4 anchor
    ("lhfa", "F", "1826", ("1", "109.4189", "0.04346")),
    ("wfl", "F", "80.7", ("-0.3833", "10.2332", "0.08932")),
])
def test_anchor_rows_hold_whos_values(name, sex, x, lms):
    key = "age_days" if name in ("wfa", "lhfa", "bmi") else "cm"
    row = next(r for r in read_table(name) if r["sex"] == sex and r[key] == x)
    assert (row["l"], row["m"], row["s"]) == lms


# -- WHO's igrowup survey

def survey_rows():
    with SURVEY.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _num(text):
    return float(text) if text != "" else None


def survey_call(r):
    return zscores(sex={"1": "M", "2": "F"}[r["GENDER"]], age_days=int(r["_agedays"]),
                   weight_kg=_num(r["WEIGHT"]), lenhei_cm=_num(r["HEIGHT"]),
                   measure={"l": "lying", "h": "standing", "": None}[r["measure"]],
                   oedema=r["oedema"] == "y")


COLUMNS = {"waz": "_ZWEI", "haz": "_ZLEN", "whz": "_ZWFL", "baz": "_ZBMI"}
FLAG_COLUMNS = {"waz": "_FWEI", "haz": "_FLEN", "whz": "_FWFL", "baz": "_FBMI"}


def test_every_survey_child_matches_who_to_two_decimals():
    rows = survey_rows()
    assert len(rows) == 498
    checked = 0
    for r in rows:
        age = int(r["_agedays"])
        # igrowup's age in days is the months rounded half up: the same convention.
        assert math.floor(float(r["agemons"]) * 30.4375 + 0.5) == age
        z = survey_call(r)
        if age > 1826:
            # igrowup still scored 1832–1852 days; WHO now stops below 60 months.
            assert z == dict.fromkeys(COLUMNS), r["id"]
            continue
        for name, column in COLUMNS.items():
            want = _num(r[column])
            got = None if z[name] is None else round(z[name], 2)
            assert got == want, (r["id"], name, z[name], want)
            checked += want is not None
    assert checked > 1800   # nearly 4 scores for ~490 children


def test_survey_exclusions_are_exactly_the_four_children_over_1826_days():
    over = sorted(int(r["_agedays"]) for r in survey_rows() if int(r["_agedays"]) > 1826)
    assert over == [1832, 1842, 1851, 1852]


def test_flags_agree_with_whos_flag_columns():
    # WHO flagged no child of this survey: no score of ours may be flagged either.
    compared = 0
    for r in survey_rows():
        if int(r["_agedays"]) > 1826:
            continue
        got = set(flags(survey_call(r)))
        for name, column in FLAG_COLUMNS.items():
            if r[column] != "":
                assert (name in got) == (r[column] == "1"), (r["id"], name)
                compared += 1
    assert compared > 1800


# -- hand-worked cases (LMS rows copied from WHO's anthro tables)

def test_birth_day_weight_at_the_median_is_zero_and_a_small_baby_is_restricted():
    assert zscores("M", 0, weight_kg=3.3464)["waz"] == pytest.approx(0, abs=1e-12)
    low = zscores("M", 0, weight_kg=2.0)["waz"]
    assert lms_z(2.0, 0.3487, 3.3464, 0.14602) < -3           # so the restriction applies
    assert low == pytest.approx(restricted_z(2.0, 0.3487, 3.3464, 0.14602), abs=1e-12)
    assert low != pytest.approx(lms_z(2.0, 0.3487, 3.3464, 0.14602), abs=1e-3)
    assert zscores("F", 0, lenhei_cm=49.1477, measure="lying")["haz"] == pytest.approx(0, abs=1e-12)


def test_length_for_age_is_the_plain_z_even_beyond_three():
    # boys day 400: L 1, M 77.0812, S 0.03157
    tall = 77.0812 * (1 + 4 * 0.03157)
    assert zscores("M", 400, lenhei_cm=tall, measure="lying")["haz"] == pytest.approx(4, abs=1e-9)


def test_day_730_uses_weight_for_length_and_day_731_weight_for_height_with_adjusted_length():
    # boys WFL 85.0: M 11.5007; WFH 85.0: M 11.6707, L -0.3521, S 0.08156
    assert zscores("M", 730, 11.5007, 85.0, "lying")["whz"] == pytest.approx(0, abs=1e-12)
    # From 731 days lying loses 0.7 cm: 85.7 lying is WFH's 85.0 row.
    assert zscores("M", 731, 11.6707, 85.7, "lying")["whz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 731, 11.5007, 85.7, "lying")["whz"] == pytest.approx(
        lms_z(11.5007, -0.3521, 11.6707, 0.08156), abs=1e-12)
    # HAZ too: boys day 730 (lying table) M 87.8018; day 731 (height table) M 87.1303.
    assert zscores("M", 730, lenhei_cm=87.8018, measure="lying")["haz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 731, lenhei_cm=87.8303, measure="lying")["haz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 731, lenhei_cm=87.1303, measure="standing")["haz"] == pytest.approx(0, abs=1e-12)


def test_103_1_lying_after_two_years_is_the_102_4_height_row_exactly():
    # boys WFH 102.4: L -0.3521, M 16.0503, S 0.08349 (WHO's trunc(x*10) would
    # take 102.3 and interpolate almost all the way)
    z = zscores("M", 800, 15.0, 103.1, "lying")["whz"]
    assert z == pytest.approx(lms_z(15.0, -0.3521, 16.0503, 0.08349), abs=1e-12)


def test_standing_before_two_years_adds_0_7_cm_and_uses_weight_for_length():
    # boys WFL 80.7: M 10.5781 (WFH 80.7 has M 10.7126: the other table would not give 0)
    assert zscores("M", 500, 10.5781, 80.0, "standing")["whz"] == pytest.approx(0, abs=1e-12)


def test_between_rows_l_m_and_s_are_interpolated():
    # boys WFL 80.6: L -0.3521 M 10.5592 S 0.083; 80.7: M 10.5781 S 0.08298
    m, s = (10.5592 + 10.5781) / 2, (0.083 + 0.08298) / 2
    assert zscores("M", 500, m, 80.65, "lying")["whz"] == pytest.approx(0, abs=1e-9)
    assert zscores("M", 500, 10.0, 80.65, "lying")["whz"] == pytest.approx(
        lms_z(10.0, -0.3521, m, s), abs=1e-9)


def test_standing_before_nine_months_is_taken_as_unknown_position():
    assert position_implausible(273, "standing") and not position_implausible(274, "standing")
    assert zscores("F", 273, 8.0, 68.0, "standing") == zscores("F", 273, 8.0, 68.0, None)
    assert zscores("F", 274, 8.0, 68.0, "standing") == zscores("F", 274, 8.0, 68.7, "lying")


def test_lengths_outside_the_table_give_no_whz_and_never_the_other_table():
    assert zscores("M", 500, 2.4, 44.9, "lying")["whz"] is None
    assert zscores("M", 500, 2.441, 45.0, "lying")["whz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 500, 18.2689, 110.0, "lying")["whz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 500, 18.3, 110.1, "lying")["whz"] is None
    # 109.5 standing is 110.2 cm lying: off the WFL table (WFH has it, but is not for this age).
    assert zscores("M", 500, 18.3, 109.5, "standing")["whz"] is None
    # From 731 days: WFH starts at 65.0 (WFL would have 64.9) and ends at 120.0.
    assert zscores("M", 900, 7.3, 64.9, "standing")["whz"] is None
    assert zscores("M", 900, 7.4327, 65.0, "standing")["whz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 900, 7.4327, 65.7, "lying")["whz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 900, 22.353, 120.0, "standing")["whz"] == pytest.approx(0, abs=1e-12)
    assert zscores("M", 900, 22.4, 120.1, "standing")["whz"] is None
    # The other scores do not depend on the WFL/WFH range.
    z = zscores("M", 500, 18.3, 110.1, "lying")
    assert z["haz"] is not None and z["waz"] is not None and z["baz"] is not None


def test_bmi_for_age_uses_the_adjusted_length():
    # boys day 400 BMI: L -0.4418 M 16.6571 S 0.07979; 76.3 standing is 77.0 lying
    bmi = 9.9 / 0.77 ** 2
    want = restricted_z(bmi, -0.4418, 16.6571, 0.07979)
    assert zscores("M", 400, 9.9, 77.0, "lying")["baz"] == pytest.approx(want, abs=1e-9)
    assert zscores("M", 400, 9.9, 76.3, "standing")["baz"] == pytest.approx(want, abs=1e-9)


def test_oedema_leaves_only_length_for_age():
    plain = zscores("F", 500, 9.0, 78.0, "lying")
    z = zscores("F", 500, 9.0, 78.0, "lying", oedema=True)
    assert z == {"waz": None, "haz": plain["haz"], "whz": None, "baz": None}
    assert plain["haz"] == pytest.approx(lms_z(78.0, 1, 79.0642, 0.03564), abs=1e-12)


def test_ages_and_inputs_with_no_score():
    full = zscores("F", 1826, 18.2179, 109.4189, "standing")
    assert full["waz"] == pytest.approx(0, abs=1e-12) and full["haz"] == pytest.approx(0, abs=1e-12)
    for age in (-1, 1827, 1856, None):
        assert zscores("F", age, 18.0, 109.0, "standing") == dict.fromkeys(growth.INDICES)
    assert zscores(None, 500, 9.0, 78.0, "lying") == dict.fromkeys(growth.INDICES)
    assert zscores("M", 500, 0.0, -1.0, "lying") == dict.fromkeys(growth.INDICES)
    assert zscores("M", 500, None, 78.0, None)["whz"] is None
    with pytest.raises(ValueError):
        zscores("male", 500, 9.0)
    with pytest.raises(ValueError):
        zscores("M", 500, 9.0, 78.0, "sitting")
    with pytest.raises(TypeError):
        zscores("M", 500.0, 9.0)


def test_flags_are_whos_limits_on_the_two_decimal_value():
    assert flags({"waz": -6.004, "haz": 6.004, "whz": 5.004, "baz": -5.004}) == []
    assert flags({"waz": 5.006, "haz": -6.006, "whz": -5.006, "baz": 5.006}) == ["waz", "haz", "whz", "baz"]
    assert flags({"waz": -6.0, "haz": None}) == []
    assert flags({"waz": 5.5, "whz": 4.9}) == ["waz"]


# -- classification

def test_nutrition_class_takes_the_most_severe_criterion():
    normal = {"waz": 0.0, "haz": 0.0, "whz": 0.0, "baz": 0.0}
    assert classify(400, normal, muac_mm=140)["nutrition_class"] == "normal"
    assert classify(400, normal, muac_mm=124)["nutrition_class"] == "MAM"
    assert classify(400, normal, muac_mm=125)["nutrition_class"] == "normal"
    assert classify(400, normal, muac_mm=114)["nutrition_class"] == "SAM"
    assert classify(400, normal, muac_mm=115)["nutrition_class"] == "MAM"
    assert classify(400, {"whz": -3.01}, muac_mm=130)["nutrition_class"] == "SAM"
    assert classify(400, {"whz": -3.0}, muac_mm=130)["nutrition_class"] == "MAM"
    assert classify(400, {"whz": -2.001}, muac_mm=None)["nutrition_class"] == "normal"  # -2.00
    assert classify(400, {"whz": -2.3}, muac_mm=110)["nutrition_class"] == "SAM"
    assert classify(400, {"whz": None}, muac_mm=None, oedema=True)["nutrition_class"] == "SAM"
    assert classify(400, {}, muac_mm=None)["nutrition_class"] is None
    # A flagged WHZ counts as missing.
    assert classify(400, {"whz": -5.5}, muac_mm=None)["nutrition_class"] is None


def test_nutrition_class_only_from_six_to_fifty_nine_months():
    assert classify(182, {"whz": -3.5}, oedema=True)["nutrition_class"] is None
    assert classify(183, {"whz": -3.5})["nutrition_class"] == "SAM"
    assert classify(1826, {"whz": -2.5})["nutrition_class"] == "MAM"
    assert classify(1827, {"whz": -2.5}) == {"nutrition_class": None, **dict.fromkeys(growth.STATUS)}


def test_statuses_follow_who_cutoffs_and_oedema_counts_as_severe():
    c = classify(90, {"waz": -2.5, "haz": -3.2, "whz": 2.1, "baz": 0.0})
    assert c == {"nutrition_class": None, "stunted": True, "severely_stunted": True,
                 "underweight": True, "severely_underweight": False, "wasted": False,
                 "severely_wasted": False, "overweight": True}
    c = classify(90, {"waz": None, "haz": -1.0, "whz": None, "baz": None}, oedema=True)
    assert c["underweight"] and c["severely_underweight"] and c["wasted"] and c["severely_wasted"]
    assert c["overweight"] is False and c["stunted"] is False
    c = classify(90, {"waz": -6.5, "haz": 6.5, "whz": None})
    assert c["underweight"] is None and c["stunted"] is None and c["wasted"] is None


# -- properties

ages = st.integers(min_value=0, max_value=1826)
sexes = st.sampled_from(["M", "F"])
tenths = st.integers(min_value=380, max_value=1300).map(lambda t: t / 10)
measures = st.sampled_from(["lying", "standing", None])


@settings(max_examples=300, deadline=None)
@given(sexes, ages, st.floats(1.0, 39.0), st.floats(1.0, 39.0), tenths, measures)
def test_scores_rise_with_weight_at_a_fixed_age_and_length(sex, age, w1, w2, length, measure):
    a, b = sorted((w1, w2))
    za, zb = zscores(sex, age, a, length, measure), zscores(sex, age, b, length, measure)
    for name in ("waz", "whz", "baz"):
        if za[name] is not None:
            assert (za[name] < zb[name]) if a < b else za[name] == zb[name]
    assert za["haz"] == zb["haz"]


def expected_length(age, cm, measure):
    """DOMAIN §4 step 2, in tenths of a cm."""
    t = round(cm * 10)
    if measure == "standing" and 274 <= age <= 730:
        t += 7
    if measure == "lying" and age >= 731:
        t -= 7
    return t


@settings(max_examples=500, deadline=None)
@given(sexes, st.integers(-60, 1900), st.one_of(st.none(), st.floats(0.5, 40.0)),
       st.one_of(st.none(), tenths), measures, st.booleans())
def test_a_score_is_none_exactly_when_its_inputs_are_out_of_range(sex, age, weight, length, measure, oedema):
    z = zscores(sex, age, weight, length, measure, oedema)
    in_age = 0 <= age <= 1826
    assert (z["haz"] is None) == (not in_age or length is None)
    assert (z["waz"] is None) == (not in_age or weight is None or oedema)
    assert (z["baz"] is None) == (not in_age or weight is None or oedema or length is None)
    if in_age and weight is not None and not oedema and length is not None:
        t = expected_length(age, length, measure)
        inside = 450 <= t <= 1100 if age < 731 else 650 <= t <= 1200
        assert (z["whz"] is None) == (not inside)
    else:
        assert z["whz"] is None
    for value in z.values():
        assert value is None or math.isfinite(value)


def test_growth_imports_without_flask():
    code = "import sys, schemas.growth, schemas.compute; assert 'flask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_tables_are_declared_package_data():
    # A wheel carries only what pyproject's package-data names (test_install builds one).
    import fnmatch
    import tomllib
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["schemas"]
    for path in TABLES.glob("*.csv"):
        rel = path.relative_to(ROOT / "schemas").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel

"""The last four forms in Vietnamese (household, pregnancy, nutrition_counselling,
cp_report at v2), and the logic mistakes found by reading DOMAIN.md §1.1, §1.3,
§1.8 and §1.9 against their v1.

As in tests/test_forms_v2.py, each fix takes a record v1 accepted and shows what
v2 says about it; a comment names DOMAIN's rule. v1 is asserted unchanged beside
it. One test walks the newest version of every bundled form and fails on any
text without Vietnamese.
"""
from __future__ import annotations

import copy
import json

import pytest
import requests

from conftest import batch, change, hlc_at, now_ms
from schemas.forms import bundled_definitions
from test_forms_v2 import check, form
from test_shipped_forms import (
    CP_EARLY, CP_PLANNED_CONSANGUINEOUS, DROP, HOUSEHOLD, NUTRITION_INFANT, NUTRITION_TODDLER,
    PREGNANCY_LMP, PREGNANCY_NO_LMP, VALID, WOMAN, patched,
)

FOUR = ["household", "pregnancy", "nutrition_counselling", "cp_report"]
NEWEST = {}
for _d in bundled_definitions():
    if _d["id"] not in NEWEST or _d["version"] > NEWEST[_d["id"]]["version"]:
        NEWEST[_d["id"]] = _d

# The fields v2 adds to v1 (docs/forms.md "Version 2"): copied or computed for a check.
ADDED = {"household": set(), "pregnancy": {"woman_sex", "edd_days_after_lmp"},
         "nutrition_counselling": {"group_session_id"}, "cp_report": set()}
PREGNANCY2 = {**PREGNANCY_LMP, "woman_sex": "female"}


def v2_of(case):
    """A v1 example as a v2 record: the copied field v2 adds, filled in."""
    data = VALID[case]
    return {**data, "woman_sex": "female"} if case.split("/")[0] == "pregnancy" else data


def english(value):
    return value["en"] if isinstance(value, dict) else value


def plain(definition):
    """A definition with every text in English only: what v2 must keep of v1."""
    def strip(node):
        if isinstance(node, dict):
            if set(node) == {"en", "vi"}:
                return node["en"]
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return strip(definition)


# -- languages

def texts(definition):
    """(where, text) for every text a person reads in a definition."""
    yield "title", definition["title"]

    def fields(fs, where):
        for f in fs:
            at = f"{where}{f['name']}"
            yield f"{at}.label", f.get("label")        # a field with no label shows its name
            for key in ("hint", "unit"):
                if key in f:
                    yield f"{at}.{key}", f[key]
            for c in f.get("choices", []):
                yield f"{at}={c['value']}", c.get("label")
            yield from fields(f.get("fields", []), at + ".")
            for n, ch in enumerate(f.get("checks", [])):
                yield f"{at} check {n}", ch["message"]
    yield from fields(definition["fields"], "")
    for n, ch in enumerate(definition.get("checks", [])):
        yield f"check {n}", ch["message"]


@pytest.mark.parametrize("form_id", sorted(NEWEST))
def test_every_text_of_every_newest_form_has_vietnamese(form_id):
    d = NEWEST[form_id]
    missing = [where for where, t in texts(d)
               if not (isinstance(t, dict) and t.get("vi", "").strip() and t.get("en", "").strip())]
    assert missing == [], f"{form_id} v{d['version']}: no Vietnamese for {missing}"


def test_the_four_english_only_forms_now_have_a_vietnamese_v2():
    assert {f: NEWEST[f]["version"] for f in FOUR} == {f: 2 for f in FOUR}
    assert form("pregnancy", 2).title_in("vi") == "Đăng ký quản lý thai"
    assert form("household", 2).title_in("vi") == "Đăng ký hộ gia đình"
    preg = {f["name"]: f for f in form("pregnancy", 2).describe_fields("vi")}
    assert preg["woman_id"]["label"] == "Phụ nữ mang thai"
    assert preg["edd"]["label"].startswith("Ngày dự sinh")
    assert preg["mch_handbook_issued"]["label"] == "Đã phát Sổ theo dõi sức khỏe bà mẹ và trẻ em"
    assert form("pregnancy", 2).describe_fields("en")[0]["label"] == "The pregnant woman"


def test_ethnic_groups_are_named_in_vietnamese_as_domain_lists_them():
    # DOMAIN §1.0: 01 Kinh, 02 Tày, 03 Thái, 04 Hoa, 05 Khơ-me, 06 Mường, 07 Nùng, 08 Mông,
    # 09 Dao, ..., 15 Sán Chay, 18 Sán Dìu; 55 a foreign national.
    person = {f["name"]: f for f in NEWEST["person"]["fields"]}
    labels = {c["value"]: c["label"]["vi"] for c in person["ethnicity_code"]["choices"]}
    assert sorted(labels) == [f"{n:02d}" for n in range(1, 56)]
    assert [labels[f"{n:02d}"].split(" (")[0] for n in range(1, 10)] == [
        "Kinh", "Tày", "Thái", "Hoa", "Khơ-me", "Mường", "Nùng", "Mông", "Dao"]
    assert labels["15"].startswith("Sán Chay") and labels["18"] == "Sán Dìu"
    assert labels["55"] == "Người nước ngoài"
    cp = {f["name"]: f for f in NEWEST["cp_report"]["fields"]}
    for party in "ab":
        assert cp[f"party_{party}_ethnicity_code"]["choices"] == person["ethnicity_code"]["choices"]


# -- v2 keeps v1

@pytest.mark.parametrize("form_id", FOUR)
def test_v2_keeps_every_field_type_choice_and_bound_of_v1(form_id):
    v1 = plain(_file(form_id, 1))
    v2 = plain(_file(form_id, 2))
    assert v2["restricted_to"] == v1["restricted_to"]
    new = {f["name"]: f for f in v2["fields"]}
    assert set(new) - {f["name"] for f in v1["fields"]} == ADDED[form_id]
    relevance_changed = {"breastfed_yesterday", "recall_liquids_foods"}  # day 0 (see below)
    for old in v1["fields"]:
        f = new[old["name"]]
        for key in set(old) | set(f):
            if key in ("hint",) or (key == "relevant" and old["name"] in relevance_changed):
                continue
            assert f.get(key) == old.get(key), (form_id, old["name"], key)
    # Every rule of v1 is still there (the pregnancy age checks now speak on woman_id).
    rules = [{k: v for k, v in c.items() if k != "field"} for c in v2.get("checks", [])]
    for c in v1.get("checks", []):
        assert {k: v for k, v in c.items() if k != "field"} in rules, c["message"]


def _file(form_id, version):
    from test_shipped_forms import FORMS_DIR
    with open(FORMS_DIR / form_id / f"v{version}.json", encoding="utf-8") as fh:
        return json.load(fh)


@pytest.mark.parametrize("case", sorted(c for c in VALID if c.split("/")[0] in FOUR))
def test_each_v1_example_stays_valid_under_v1_and_is_valid_under_v2(case):
    form_id = case.split("/")[0]
    assert check(form_id, 1, VALID[case]).errors == {}
    assert check(form_id, 2, v2_of(case)).errors == {}


# -- household (DOMAIN §1.1)

def test_a_location_outside_the_province_is_a_warning():
    # DOMAIN §1.1: soft check, lat 20.6–21.7, lon 106.4–108.1. v1 could not say it.
    far = patched(HOUSEHOLD, {"gps": {"lat": 10.78, "lon": 106.70}})   # Hồ Chí Minh City
    assert check("household", 1, far).warnings == {}
    v2 = check("household", 2, far)
    assert v2.errors == {} and list(v2.warnings) == ["gps"]
    assert form("household", 2).localize(v2.warnings, "vi")["gps"][0].startswith(
        "Vị trí nằm ngoài tỉnh Quảng Ninh")
    for lat, lon in [(20.6, 106.4), (21.7, 108.1), (21.31, 107.42)]:
        assert check("household", 2, patched(HOUSEHOLD, {"gps": {"lat": lat, "lon": lon}})).warnings == {}
    assert check("household", 2, patched(HOUSEHOLD, {"gps": {"lat": 21.0, "lon": 108.2}})).warnings
    assert check("household", 2, patched(HOUSEHOLD, {"gps": DROP})).warnings == {}


# -- pregnancy (DOMAIN §1.3)

def test_a_16_year_olds_pregnancy_warns_on_the_woman_and_asks_for_the_risk_factor():
    # DOMAIN §1.3: age < 18 -> the child-protection prompt (§1.9); risk factor age<18.
    sixteen = patched(PREGNANCY2, {"woman_dob": "2008-06-01"})
    v1 = check("pregnancy", 1, {k: v for k, v in sixteen.items() if k != "woman_sex"})
    assert v1.errors == {} and list(v1.warnings) == ["woman_dob"]   # on the copied field
    v2 = check("pregnancy", 2, sixteen)
    assert v2.errors == {} and set(v2.warnings) == {"woman_id", "risk_factors"}
    vi = form("pregnancy", 2).localize(v2.warnings, "vi")
    assert vi["woman_id"] == ["Thai phụ dưới 18 tuổi: cân nhắc lập phiếu báo cáo bảo vệ trẻ em (tảo hôn)."]
    ticked = check("pregnancy", 2, {**sixteen, "risk_factors": ["age_under_18"]})
    assert list(ticked.warnings) == ["woman_id"]      # the prompt stays, the tick is right
    # 18 on the day of registration: no prompt.
    assert check("pregnancy", 2, patched(PREGNANCY2, {"woman_dob": "2007-03-01"})).warnings == {}


def test_the_age_risk_factors_agree_with_her_age():
    # DOMAIN §1.3 risk factors age<18, age>35 against the computed age at registration.
    wrong_tick = check("pregnancy", 2, {**PREGNANCY2, "risk_factors": ["age_under_18"]})
    assert wrong_tick.errors == {} and list(wrong_tick.warnings) == ["risk_factors"]
    thirty_eight = patched(PREGNANCY2, {"woman_dob": "1986-05-01"})
    assert check("pregnancy", 1, {k: v for k, v in thirty_eight.items() if k != "woman_sex"}).warnings == {}
    assert list(check("pregnancy", 2, thirty_eight).warnings) == ["risk_factors"]
    assert check("pregnancy", 2, {**thirty_eight, "risk_factors": ["age_over_35"]}).warnings == {}
    thirty_five = patched(PREGNANCY2, {"woman_dob": "1989-05-01"})   # 35 completed years: not > 35
    assert check("pregnancy", 2, thirty_five).warnings == {}
    assert list(check("pregnancy", 2, {**thirty_five, "risk_factors": ["age_over_35"]}).warnings) == [
        "risk_factors"]


def test_a_pregnancy_is_registered_for_a_woman():
    # DOMAIN §1.3: woman_id is female. v1 could not check it (another record).
    assert check("pregnancy", 2, {**PREGNANCY2, "woman_sex": "male"}).errors == {
        "woman_id": ["A pregnancy is registered for a woman: the person chosen is not female; "
                     "check the person."]}
    assert "woman_sex" in check("pregnancy", 2, PREGNANCY_LMP).errors   # copied, so required


def test_an_lmp_dated_edd_is_lmp_plus_280_days():
    # DOMAIN §1.3: EDD default = LMP + 280 d (Naegele); editable, with its source.
    moved = {**PREGNANCY2, "edd": "2025-09-19"}      # 273 days
    assert check("pregnancy", 1, PREGNANCY_LMP | {"edd": "2025-09-19"}).warnings == {}
    v2 = check("pregnancy", 2, moved)
    assert v2.errors == {} and list(v2.warnings) == ["edd"]
    assert check("pregnancy", 2, {**moved, "edd_source": "ultrasound"}).warnings == {}
    assert check("pregnancy", 2, {**PREGNANCY_NO_LMP, "woman_sex": "female",
                                  "risk_factors": ["anaemia"]}).warnings == {}


def test_a_consanguineous_union_prompts_a_child_protection_report():
    # DOMAIN §1.9 covers consanguineous marriage; the pregnancy form is where it shows.
    data = {**PREGNANCY_NO_LMP, "woman_sex": "female"}
    assert check("pregnancy", 1, PREGNANCY_NO_LMP).warnings == {}
    assert list(check("pregnancy", 2, data).warnings) == ["risk_factors"]


# -- nutrition_counselling (DOMAIN §1.8)

def test_no_yesterday_questions_on_the_day_of_birth():
    # "Yesterday" does not exist at age 0 days (as pnc_visit v2's recall). v1 required it.
    newborn = patched(NUTRITION_INFANT, {"child_dob": "2025-05-20"})
    assert check("nutrition_counselling", 1, newborn).errors == {}
    v2 = check("nutrition_counselling", 2, newborn)
    assert set(v2.errors) == {"breastfed_yesterday", "recall_liquids_foods"}   # not asked
    unasked = patched(newborn, {"breastfed_yesterday": DROP, "recall_liquids_foods": DROP})
    assert "breastfed_yesterday" in check("nutrition_counselling", 1, unasked).errors
    assert check("nutrition_counselling", 2, unasked).errors == {}
    day_one = patched(unasked, {"child_dob": "2025-05-19"})
    assert set(check("nutrition_counselling", 2, day_one).errors) == {
        "breastfed_yesterday", "recall_liquids_foods"}   # required again from day 1


@pytest.mark.parametrize("base, patch", [
    (NUTRITION_INFANT, {"breastfed_yesterday": "no"}),                     # recall: none
    (NUTRITION_TODDLER, {"breastfed_yesterday": "no", "food_groups_yesterday": ["none"],
                         "meals_yesterday": 0}),
])
def test_a_child_given_nothing_yesterday_is_a_warning(base, patch):
    data = patched(base, patch)
    assert check("nutrition_counselling", 1, data).warnings == {}
    v2 = check("nutrition_counselling", 2, data)
    assert v2.errors == {} and list(v2.warnings) == ["breastfed_yesterday"]
    fed = check("nutrition_counselling", 2, {**data, "breastfed_yesterday": "yes"})
    assert "breastfed_yesterday" not in fed.warnings


def test_a_group_session_counselling_links_its_session():
    # DOMAIN §1.8: modality group_session (-> F10 link).
    session = "0193a0c4-7777-7000-8000-000000000007"
    grouped = {**NUTRITION_TODDLER, "group_session_id": session}
    assert check("nutrition_counselling", 2, grouped).errors == {}
    at_home = {**NUTRITION_INFANT, "group_session_id": session}
    assert "group_session_id" in check("nutrition_counselling", 2, at_home).errors


# -- cp_report (DOMAIN §1.9)

def test_cp_report_stays_restricted_and_without_free_text():
    assert NEWEST["cp_report"]["restricted_to"] == ["supervisor", "admin"]
    assert list(form("cp_report", 2).restricted_to) == ["supervisor", "admin"]
    types = {f["type"] for f in NEWEST["cp_report"]["fields"]}
    assert not types & {"string", "text"}


def test_second_cousins_are_beyond_three_generations():
    # Law on Marriage and Family 2014 art. 3.18 (DOMAIN §1.9's source): the third
    # generation is first cousins; a union of second cousins is not prohibited.
    second = {**CP_PLANNED_CONSANGUINEOUS, "kinship": "second_cousins"}
    assert check("cp_report", 1, second).warnings == {}
    v2 = check("cp_report", 2, second)
    assert v2.errors == {} and list(v2.warnings) == ["kinship"]
    assert "ngoài phạm vi ba đời" in form("cp_report", 2).localize(v2.warnings, "vi")["kinship"][0]
    assert check("cp_report", 2, CP_PLANNED_CONSANGUINEOUS).warnings == {}    # first cousins


def test_the_two_parties_are_two_people():
    same = {**CP_EARLY, "party_b_person_id": WOMAN}   # party A is WOMAN too
    assert check("cp_report", 1, same).errors == {}
    assert list(check("cp_report", 2, same).errors) == ["party_b_person_id"]


# -- through the real server: the app gets the prompt, in Vietnamese

def test_a_16_year_olds_pregnancy_is_answered_with_the_prompt_in_vietnamese(server_process):
    token = server_process.login("hw", "dev-vi")
    record = change(patched(PREGNANCY2, {"woman_dob": "2008-06-01"}),
                    hlc=hlc_at(now_ms(), "dev-vi"), form="pregnancy", version=2)
    resp = requests.post(server_process.url + "/api/v1/sync/push", timeout=30,
                         data=json.dumps(batch("dev-vi", [copy.deepcopy(record)])),
                         headers={"Authorization": "Bearer " + token,
                                  "Content-Type": "application/json",
                                  "Accept-Language": "vi"})
    [result] = resp.json()["results"]
    assert result["status"] == "applied"
    assert result["warnings"]["woman_id"] == [
        "Thai phụ dưới 18 tuổi: cân nhắc lập phiếu báo cáo bảo vệ trẻ em (tảo hôn)."]

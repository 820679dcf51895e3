"""Languages in form definitions (DESIGN.md, wave 2): labels, hints, messages
and choice labels as text or {"en", "vi"}; a compiled form answers in the
language asked for, falling back to English; validation messages come back
in the client's language (Accept-Language on the server, `lang` on the device),
and English answers are exactly what they were."""
from __future__ import annotations

import copy
import csv
import io
import json
import sqlite3

import pytest
import requests

from client_sync import Client, InvalidRecord
from conftest import batch, change, hlc_at, now_ms
from schemas.forms import (FormDefinitionError, best_language, bundled_definitions, compile_form,
                           describe_errors)
from test_forms_v2 import GROWTH2, form

V1 = {(d["id"], d["version"]): d for d in bundled_definitions()}


def tiny(**field):
    return {"id": "t", "version": 1, "title": "T",
            "fields": [{"name": "n", "type": "integer", "min": 1, **field},
                       {"name": "c", "type": "choice", "choices": [{"value": "a", "label": "A"}]}]}


# -- definitions

@pytest.mark.parametrize("key", ["label", "hint", "unit"])
@pytest.mark.parametrize("bad", [{"vi": "chỉ tiếng Việt"}, 5, {"en": ""}, {"en": "x", "VI": "y"},
                                 {"en": "x", "vi": 3}])
def test_a_text_that_is_neither_string_nor_languages_is_refused(key, bad):
    with pytest.raises(FormDefinitionError, match=f"field 'n': {key} "):
        compile_form(tiny(**{key: bad}))


def test_a_choice_label_and_a_check_message_take_languages_too():
    d = tiny(label={"en": "Number", "vi": "Số"})
    d["fields"][1]["choices"][0]["label"] = {"vi": "Một"}
    with pytest.raises(FormDefinitionError, match="choices\\[0\\]"):
        compile_form(d)
    d = tiny()
    d["checks"] = [{"field": "n", "assert": {"field": "n", "lt": 5}, "message": {"vi": "Nhỏ hơn 5"}}]
    with pytest.raises(FormDefinitionError, match="check 0 .*message"):
        compile_form(d)


def test_describe_fields_answers_in_the_language_asked_falling_back_to_english():
    d = tiny(label={"en": "Number", "vi": "Số"}, hint="Count them", unit={"en": "kg", "vi": "kg"})
    d["fields"][1]["choices"].append({"value": "b", "label": {"en": "Bee", "vi": "Bê"}})
    f = compile_form(d)
    vi, en, fr = f.describe_fields("vi"), f.describe_fields("en"), f.describe_fields("fr")
    assert vi[0] == {"name": "n", "type": "integer", "label": "Số", "hint": "Count them",
                     "required": False, "warn": False, "relevant": None, "unit": "kg", "min": 1}
    assert en[0]["label"] == fr[0]["label"] == "Number"
    assert vi[1]["choices"] == [{"value": "a", "label": "A"}, {"value": "b", "label": "Bê"}]
    assert en[1]["choices"][1]["label"] == "Bee" and vi[1]["label"] == "c"   # no label: the name


def test_every_string_of_the_v2_forms_has_vietnamese():
    def texts(fields):
        for fd in fields:
            yield fd["label"]
            if "hint" in fd:
                yield fd["hint"]
            for c in fd.get("choices", []):
                yield c["label"]
            yield from texts(fd.get("fields", []))
            for check in fd.get("checks", []):
                yield check["message"]
    for (form_id, version), d in V1.items():
        if version == 1 and form_id != "club":
            continue
        found = list(texts(d["fields"])) + [c["message"] for c in d.get("checks", [])] + [d["title"]]
        assert all(isinstance(t, dict) and t["vi"].strip() and t["en"].strip() for t in found), form_id


def test_the_growth_form_in_vietnamese_uses_domains_terms():
    fields = {f["name"]: f for f in form("growth", 2).describe_fields("vi")}
    assert fields["oedema_bilateral"]["label"] == "Phù hai chân"
    assert "suy dinh dưỡng cấp tính nặng" in fields["nutrition_class"]["label"]
    assert "suy dinh dưỡng cấp tính vừa" in fields["nutrition_class"]["label"]
    assert form("growth", 2).title_in("vi") == "Theo dõi tăng trưởng trẻ em"
    assert form("growth", 2).title == "Child growth monitoring"


def test_repeat_fields_and_relevance_are_described_as_data():
    pnc = {f["name"]: f for f in form("pnc_visit", 2).describe_fields("vi")}
    baby = {f["name"]: f for f in pnc["baby"]["fields"]}
    assert baby["bf_recall"]["relevant"] == {"all": [{"field": "status", "eq": "alive"},
                                                     {"field": "day_postpartum", "ge": 1}]}
    assert baby["bf_recall"]["choices"][0] == {"value": "breast_milk", "label": "Sữa mẹ"}
    assert pnc["visit_number"]["min"] == 1 and pnc["visit_number"]["max"] == 10
    assert pnc["day_postpartum"]["compute"] == "days_between"


# -- messages

def test_builtin_messages_in_vietnamese_and_the_rest_left_english():
    anc = form("anc_visit", 2)
    result = anc.validate_create({"visit_date": "2025-01-01", "weight_kg": 20,
                                  "contact_type": "anc_checkup", "bogus": 1}, today=None)
    vi = anc.localize(result.errors, "vi")
    assert vi["pregnancy_id"] == ["bắt buộc phải nhập"]
    assert vi["weight_kg"] == ["không được nhỏ hơn 30"]
    assert vi["bogus"] == ["không phải là trường của biểu mẫu này"]
    assert anc.localize(result.errors, "en") == result.errors
    assert anc.localize({"x": ["Something the table does not know."]}, "vi") == {
        "x": ["Something the table does not know."]}


def test_relevance_bounds_and_checks_in_vietnamese():
    pnc = form("pnc_visit", 2)
    data = {"outcome_date": "2025-05-20", "visit_date": "2025-05-10", "facility_birth": False,
            "discharge_date": "2025-05-21", "mother_status": "alive",
            "mother_danger_signs": ["fever"], "referred_to": "none"}
    errors = pnc.validate_create(data, today=None).errors
    assert errors["discharge_date"] == ["is not asked when facility_birth is not true"]
    assert errors["visit_date"] == ["must be on or after 2025-05-20 (outcome_date)"]
    vi = pnc.localize(errors, "vi")
    assert vi["discharge_date"] == ["không được hỏi khi facility_birth không là true"]
    assert vi["visit_date"] == ["phải từ ngày 2025-05-20 trở về sau (outcome_date)"]
    assert vi["referred_to"] == ["Bà mẹ có dấu hiệu nguy hiểm: phải được chuyển tuyến."]
    assert pnc.describe_errors(errors, "vi")[0].startswith("pregnancy_id: bắt buộc")
    # An offset's unit is translated too.
    anc = form("anc_visit", 1)
    late = anc.validate_create({"visit_date": "2025-05-01", "next_visit_date": "2025-05-01"}, today=None)
    assert late.errors["next_visit_date"] == ["must be on or after 2025-05-02 (visit_date + 1 day)"]
    assert anc.localize(late.errors, "vi")["next_visit_date"] == [
        "phải từ ngày 2025-05-02 trở về sau (visit_date + 1 ngày)"]


def test_a_v1_check_message_has_no_vietnamese_so_it_stays_english():
    anc = form("anc_visit", 1)
    errors = anc.validate_create({"danger_signs": ["fever"], "referred_to": "none"}, today=None).errors
    vi = anc.localize(errors, "vi")
    assert vi["pregnancy_id"] == ["bắt buộc phải nhập"]
    assert vi["referred_to"] == errors["referred_to"] == ["A woman with a danger sign must be referred."]


@pytest.mark.parametrize("header, lang", [
    (None, "en"), ("", "en"), ("vi", "vi"), ("vi-VN,vi;q=0.9,en;q=0.8", "vi"),
    ("en-US,en;q=0.9,vi;q=0.8", "en"), ("fr, de", "en"), ("fr, vi;q=0.1", "vi"),
    ("vi;q=0, en", "en"), ("vi;q=abc", "en")])
def test_best_language(header, lang):
    assert best_language(header) == lang


# -- through the real server and device

@pytest.fixture
def hw(server_process):
    token = server_process.login("hw", "dev-lang")
    return lambda body, headers=None: requests.post(
        server_process.url + "/api/v1/sync/push", data=json.dumps(body), timeout=30,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json",
                 **(headers or {})})


def growth_change(data, version=2, **kw):
    return change(data, hlc=hlc_at(now_ms(), "dev-lang"), form="growth", version=version, **kw)


def test_push_answers_in_the_accept_language_and_stores_english_warnings(server_process, hw):
    mam = {**GROWTH2, "muac_mm": 120, "counselled": False}
    bad = copy.deepcopy(GROWTH2)
    bad["vitamin_a_given"] = "100k_iu"
    records = [growth_change(mam), growth_change(bad)]
    body = batch("dev-lang", records)
    vi = hw(body, {"Accept-Language": "vi-VN,vi;q=0.9"})
    assert vi.status_code == 200 and vi.headers["Content-Language"] == "vi"
    ok, refused = vi.json()["results"]
    assert ok["status"] == "applied" and ok["warnings"]["muac_mm"][0].startswith(
        "Chu vi vòng cánh tay 115–124 mm là suy dinh dưỡng cấp tính vừa")
    assert refused["status"] == "rejected" and refused["errors"]["vitamin_a_given"][0].startswith(
        "Liều vitamin A 100.000 IU")
    # The same batch again, in English: the stored answer, as it always was.
    en = hw(body)
    assert en.json()["results"][0]["warnings"]["muac_mm"][0].startswith("MUAC 115–124 mm")
    assert "Content-Language" not in en.headers
    conn = sqlite3.connect(server_process.db)
    stored, computed = conn.execute("SELECT warnings, computed FROM records WHERE id = ?",
                                    [ok["id"]]).fetchone()
    conn.close()
    assert json.loads(stored) == en.json()["results"][0]["warnings"]
    assert json.loads(computed)["nutrition_class"] == "mam"
    # Exported with the record.
    token = server_process.login("sup", "dev-sup")
    csv_text = requests.get(server_process.url + "/api/v1/exports/growth.csv", timeout=30,
                            headers={"Authorization": "Bearer " + token}).text
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(csv_text))}
    assert rows[ok["id"]]["warnings"].startswith("muac_mm: MUAC 115–124 mm")
    assert rows[ok["id"]]["nutrition_class"] == "mam"


def test_a_v1_push_is_still_checked_against_v1(server_process, hw):
    # The review's oedema case: v1 accepted it, and a v1 device still may send it.
    v1 = {k: v for k, v in GROWTH2.items() if k not in ("child_sex", "child_dob_precision")}
    v1.update(child_dob="2025-01-01", measured_on="2025-04-01", oedema_bilateral=True,
              weight_kg=5.0, lenhei_cm=58.0, muac_mm=None, vitamin_a_given=None)
    v1 = {k: v for k, v in v1.items() if v is not None}
    results = hw(batch("dev-lang", [growth_change(v1, version=1),
                                    growth_change({**v1, "child_sex": "male",
                                                   "child_dob_precision": "exact"}, version=2)])).json()
    assert [r["status"] for r in results["results"]] == ["applied", "rejected"]
    assert "referred_to" in results["results"][1]["errors"]


def test_the_device_adds_with_the_newest_version_and_edits_keep_theirs(server_process, tmp_path):
    creds = server_process.users["hw"]
    with Client(tmp_path / "d", lang="vi") as device:
        device.login(server_process.url, creds["username"], creds["password"])
        new = device.add("growth", GROWTH2)
        assert device.get(new)["form_version"] == 2
        with pytest.raises(InvalidRecord) as refused:
            device.add("growth", {**GROWTH2, "child_sex": None})
        assert refused.value.errors == {"child_sex": ["bắt buộc phải nhập"]}
        assert "bắt buộc phải nhập" in str(refused.value)
        # A v1 record (made by a device still on v1) pulled here stays v1 when edited.
        v1 = {k: v for k, v in GROWTH2.items() if k not in ("child_sex", "child_dob_precision")}
        old = growth_change(v1, version=1)
        token = server_process.login("hw", "dev-old")
        assert requests.post(server_process.url + "/api/v1/sync/push", timeout=30,
                             data=json.dumps(batch("dev-old", [old])),
                             headers={"Authorization": "Bearer " + token,
                                      "Content-Type": "application/json"}).ok
        device.sync()
        device.edit(old["id"], {"counselled": False})
        report = device.sync()
        assert device.get(old["id"])["form_version"] == 1
        assert device.get(old["id"])["data"]["counselled"] is False
        assert report is not None

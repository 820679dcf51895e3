"""Danger signs in the app (issue 17): a warning is marked a danger sign by
its form and its check's message id, never by words in its text, and every
warning check of every bundled form version has been classified."""
import json

import pytest

from client_sync.app.entry import DANGER_SIGNS, NOT_DANGER_SIGNS, check, is_danger
from schemas.forms import compile_form
from conftest import ROOT

FORMS = ROOT / "schemas" / "forms"


def _warning_checks():
    """(form id, version, English message) of every soft check in the bundled forms,
    the form's own checks and its repeats' entry checks."""
    for path in sorted(FORMS.glob("*/v*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        checks = list(definition.get("checks") or [])
        for field in definition["fields"]:
            checks += field.get("checks") or []
        for one in checks:
            if one.get("warn"):
                message = one["message"]
                yield definition["id"], definition["version"], \
                    message["en"] if isinstance(message, dict) else message


WARNINGS = list(_warning_checks())


@pytest.mark.parametrize("form_id,version,message", WARNINGS,
                         ids=[f"{f}-v{v}-{i}" for i, (f, v, _) in enumerate(WARNINGS)])
def test_every_warning_check_of_a_bundled_form_is_classified(form_id, version, message):
    danger = message in DANGER_SIGNS.get(form_id, ())
    other = any(message.startswith(p) for p in NOT_DANGER_SIGNS.get(form_id, ()))
    assert danger != other, (f"{form_id} v{version}: classify this warning in "
                             f"client_sync/app/entry.py DANGER_SIGNS or NOT_DANGER_SIGNS: "
                             f"{message!r}")


def test_every_listed_danger_sign_is_a_warning_some_form_gives():
    given = {(f, m) for f, _, m in WARNINGS}
    for form_id, messages in DANGER_SIGNS.items():
        for message in messages:
            assert (form_id, message) in given, (form_id, message)


def test_words_in_the_text_do_not_make_a_danger_sign():
    assert WARNINGS and len(WARNINGS) > 20
    # Words alone: "refer" / "danger" in a warning of another form, or an unknown one.
    assert not is_danger("household", "Refer: a danger sign.")
    assert not is_danger("growth", "Blood pressure 140/90 or higher: high blood pressure, "
                                   "a danger sign; check again and refer.")
    assert is_danger("pnc_visit", "Mother's temperature 38.0 °C or higher: fever, a danger sign.")


def test_a_checked_draft_marks_only_the_danger_sign(monkeypatch):
    form = compile_form(json.loads((FORMS / "anc_visit" / "v2.json").read_text("utf-8")))
    draft = {"contact_type": "anc_checkup", "bp_systolic": 165, "bp_diastolic": 110,
             "height_cm": 140}
    answer = check(form, draft, "vi")
    assert {"bp_systolic", "height_cm"} <= set(answer["warnings"])
    assert answer["danger"] == ["bp_systolic"]          # short stature is a risk, not a referral
    assert "chuyển tuyến" in answer["warnings"]["bp_systolic"][0]

"""Issue 17's last CLI items: text trimmed in the library (so ``--json`` and
the app get it too), one labelled time convention and one yes/no wording in
exports, the CLI's own messages in Vietnamese."""
import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from client_sync import Client
from client_sync.cli import cli
from client_sync.client import trimmed
from client_sync.errors import InvalidRecord

HH = {"head_name": "Lý A Sáng", "poverty_status": "poor", "registered_on": "2025-05-30",
      "status": "active"}


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIELDSYNC_BACKOFF_FACTOR", "0")
    for name in ("FIELDSYNC_LANG", "FIELDSYNC_TIMEZONE", "LANGUAGE", "LC_ALL", "LANG"):
        monkeypatch.delenv(name, raising=False)


def run(*args, input=None, ok=True):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def login(server, user="hw"):
    run("login", "--unencrypted", "--server", server.url, "--username", user,
        input=server.users[user]["password"] + "\n")


# -- text is trimmed, blank text is empty -------------------------------------------------


def test_the_library_trims_text_and_refuses_blank_text_on_add_and_edit(server_process):
    login(server_process)
    with Client() as client:
        rid = client.add("household", {**HH, "head_name": "  Lý A Sáng \t",
                                       "poverty_status": " poor "})
        saved = client.get(rid)["data"]
        assert saved["head_name"] == "Lý A Sáng" and saved["poverty_status"] == "poor"
        with pytest.raises(InvalidRecord) as caught:
            client.add("household", {**HH, "head_name": "   "})
        assert "head_name" in caught.value.errors
        client.edit(rid, {"head_name": " Đặng Văn Lộc  "})
        assert client.get(rid)["data"]["head_name"] == "Đặng Văn Lộc"
        with pytest.raises(InvalidRecord):
            client.edit(rid, {"head_name": " \u00a0 "})   # a required name cannot go blank
        assert client.get(rid)["data"]["head_name"] == "Đặng Văn Lộc"
        assert len(list(client.list(form="household"))) == 1


def test_json_input_is_trimmed_and_blank_text_is_refused(server_process, tmp_path):
    login(server_process)
    padded = tmp_path / "padded.json"
    padded.write_text(json.dumps({**HH, "head_name": "  Lý A Sáng  "}), encoding="utf-8")
    rid = run("add", "household", "--json", str(padded)).stdout.strip()
    assert json.loads(run("show", rid, "--json").output)["data"]["head_name"] == "Lý A Sáng"
    blank = tmp_path / "blank.json"
    blank.write_text(json.dumps({**HH, "head_name": "    "}), encoding="utf-8")
    result = run("add", "household", "--json", str(blank), ok=False)
    assert result.exit_code == 1 and "head_name" in result.stderr
    assert len(run("list").stdout.strip().splitlines()) == 1


_FIELDS = {"name": {"type": "string"}, "note": {"type": "text"}, "n": {"type": "integer"},
           "tags": {"type": "multi_choice"},
           "kids": {"type": "repeat", "fields": [{"name": "kid", "type": "string"}]}}
_PAD = st.text(" \t\n\u00a0\u3000", max_size=3)


@settings(max_examples=60)
@given(core=st.text(min_size=0, max_size=8), left=_PAD, right=_PAD, n=st.integers())
def test_trimmed_cuts_padding_everywhere_and_blank_becomes_none(core, left, right, n):
    data = {"name": left + core + right, "note": left + core + right, "n": n,
            "tags": [left + core + right, right], "kids": [{"kid": left + core + right}]}
    out = trimmed(_FIELDS, data)
    want = core.strip() or None
    assert out["name"] == want and out["note"] == want and out["n"] == n
    assert out["tags"] == ([core.strip()] if core.strip() else [])
    assert out["kids"] == [{"kid": want}]
    assert data["name"] == left + core + right   # the caller's dict is not changed

"""Issue 17's last CLI items: text trimmed in the library (so ``--json`` and
the app get it too), one labelled time convention and one yes/no wording in
exports, the CLI's own messages in Vietnamese."""
import csv
import json
import re
import time
import uuid
from datetime import datetime

import openpyxl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from client_sync import Client
from client_sync.cli import cli
from client_sync.client import trimmed
from client_sync.errors import InvalidRecord
from conftest import ROOT, run_cli

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


# -- one time convention and one yes/no, on both sides -------------------------------------

GROWTH = {"child_dob": "2024-01-10", "child_sex": "female", "child_dob_precision": "exact",
          "measured_on": "2025-05-30", "weight_kg": 9.1, "lenhei_cm": 74.0,
          "position": "lying", "oedema_bilateral": False, "referred_to": "none",
          "counselled": True}
ZULU = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def _csv_rows(path):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _xlsx_rows(path, sheet="growth"):
    book = openpyxl.load_workbook(path)
    cells = list(book[sheet].iter_rows())
    header = [c.value for c in cells[0]]
    return [dict(zip(header, row)) for row in cells[1:]]


def _exports_agree(csv_path, xlsx_path):
    """The CSV and the XLSX of one growth record say the same yes/no words and
    the same UTC moments, each labelled as UTC."""
    (row,), (cells,) = _csv_rows(csv_path), _xlsx_rows(xlsx_path)
    assert row["oedema_bilateral"] == "no" and row["counselled"] == "yes"
    for name in ("oedema_bilateral", "counselled"):
        assert cells[name].value == row[name] and cells[name].data_type == "s"
    for name in ("created_at", "updated_at"):
        assert ZULU.match(row[name]), row[name]
        assert cells[name].number_format.endswith('"UTC"')
        stamped = datetime.fromisoformat(row[name].replace("Z", "+00:00"))
        assert cells[name].value == stamped.replace(tzinfo=None)


def test_device_and_server_exports_agree_on_yes_no_and_on_utc(server_process, tmp_path):
    login(server_process)
    with Client() as client:
        client.add("growth", {**GROWTH, "child_id": str(uuid.uuid4())})
    run("sync")
    sup = str(tmp_path / "sup")
    run("--data-dir", sup, "login", "--unencrypted", "--server", server_process.url,
        "--username", "sup", input=server_process.users["sup"]["password"] + "\n")
    for fmt in ("csv", "xlsx"):           # the device's export, over HTTP
        run("--data-dir", sup, "export", "growth", "--format", fmt,
            "--out", str(tmp_path / f"device.{fmt}"))
    _exports_agree(tmp_path / "device.csv", tmp_path / "device.xlsx")
    for fmt in ("csv", "xlsx"):           # the server's, from its database
        run_cli(server_process.db, "export", "growth", "--format", fmt,
                "--out", str(tmp_path / f"server.{fmt}"))
    _exports_agree(tmp_path / "server.csv", tmp_path / "server.xlsx")
    assert _csv_rows(tmp_path / "server.csv") == _csv_rows(tmp_path / "device.csv")


def _status_time(monkeypatch, zone=None, system=None):
    with Client() as client:
        client.store.set_meta(last_sync="2025-06-01T01:02:03.000Z")
    if zone:
        monkeypatch.setenv("FIELDSYNC_TIMEZONE", zone)
    if system:
        monkeypatch.setenv("TZ", system)
        time.tzset()
    try:
        out = run("status").output
    finally:
        monkeypatch.delenv("TZ", raising=False)
        time.tzset()
    return next(line for line in out.splitlines() if line.startswith("Last complete sync"))


def test_status_shows_utc_labelled_and_the_local_time_when_a_zone_is_known(monkeypatch):
    assert _status_time(monkeypatch, system="UTC") == \
        "Last complete sync: 2025-06-01 01:02:03 UTC"
    assert _status_time(monkeypatch, zone="Asia/Ho_Chi_Minh") == (
        "Last complete sync: 2025-06-01 01:02:03 UTC (2025-06-01 08:02:03 local time, "
        "UTC+07:00, Asia/Ho_Chi_Minh)")
    monkeypatch.delenv("FIELDSYNC_TIMEZONE")
    system = _status_time(monkeypatch, system="Asia/Bangkok")
    assert system.startswith("Last complete sync: 2025-06-01 01:02:03 UTC (2025-06-01 "
                             "08:02:03 local time, UTC+07:00")


# -- the CLI's own messages in Vietnamese ---------------------------------------------------

CATALOG = ROOT / "client_sync" / "translations" / "vi" / "LC_MESSAGES"


def test_vietnamese_for_a_whole_session_against_the_server(server_process):
    out = run("--lang", "vi", "login", "--unencrypted", "--server", server_process.url,
              "--username", "hw", input=server_process.users["hw"]["password"] + "\n").output
    assert out.startswith("Đã đăng nhập với tên hw (health_worker; địa bàn QN.LM.03)")
    rid = run("add", "household", *[f"{k}={v}" for k, v in HH.items()]).stdout.strip()
    assert run("--lang", "vi", "edit", rid[:8], "head_name=Lò Văn Pảo").output.startswith(
        f"Đã lưu {rid} (chờ đồng bộ).")
    assert "địa bàn QN.LM.03, chờ gửi" in run("--lang", "vi", "show", rid[:8]).output
    assert run("--lang", "vi", "sync").output.startswith("Đồng bộ xong: ")
    status = run("--lang", "vi", "status").output
    assert "Người dùng: hw trên" in status and "Thay đổi chờ gửi: 0" in status
    assert "Lần đồng bộ trọn vẹn gần nhất: " in status and "Xung đột đang mở: 0" in status
    wrong = run("--lang", "vi", "edit", rid[:8], "head_nam=x", ok=False)
    assert wrong.exit_code == 1
    assert wrong.stderr.startswith("Error: household không có trường 'head_nam'. Các trường:")
    assert "Sync complete: " in run("sync").output          # English stays the default


def test_an_error_path_and_the_care_commands_speak_vietnamese(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_LANG", "vi")
    (tmp_path / "out.csv").write_text("kept", encoding="utf-8")
    refused = run("export", "growth", "--format", "csv", "--out", str(tmp_path / "out.csv"),
                  ok=False)
    assert refused.exit_code == 1 and "đã có: hãy chọn --out khác, hoặc dùng --force" in \
        refused.stderr
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == "kept"
    empty = run("--data-dir", str(tmp_path / "none"), "doctor", ok=False)
    assert "Không có cơ sở dữ liệu của máy" in empty.stderr
    assert run("lock").output == "Đã khóa: lệnh tiếp theo sẽ hỏi cụm mật khẩu.\n"
    monkeypatch.setenv("FIELDSYNC_LANG", "en")
    assert run("lock").output == "Locked: the next command asks for the passphrase.\n"


def test_the_librarys_errors_are_said_in_vietnamese_with_their_values(tmp_path):
    import socket
    with socket.socket() as sock:          # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = run("--lang", "vi", "login", "--unencrypted", "--server", f"http://127.0.0.1:{port}",
                  "--username", "hw", input="pw\n", ok=False)
    assert refused.exit_code == 1
    assert f"Error: Máy chủ http://127.0.0.1:{port} từ chối kết nối" in refused.stderr
    assert "các thay đổi của bạn vẫn chờ gửi" in refused.stderr
    missing = run("--lang", "vi", "show", "zzzz9", ok=False)
    assert "Không có hồ sơ zzzz9 trên máy này (xem `fieldsync list`" in missing.stderr
    assert "Chưa đăng nhập. Hãy chạy `fieldsync login" in \
        run("--lang", "vi", "sync", ok=False).stderr
    english = run("show", "zzzz9", ok=False)               # English stays the default
    assert "No record zzzz9 on this device (see `fieldsync list`" in english.stderr


def test_say_fills_the_translated_template_with_the_values_and_leaves_unknown_text(monkeypatch):
    from client_sync import i18n
    from client_sync.errors import RecordNotFound, SyncError
    from client_sync.transport import ServerAddressError
    error = ServerAddressError("no_route", "http://10.0.0.5:8080")
    assert str(error) == ("No network route to http://10.0.0.5:8080: connect to a network and "
                          "sync later; your changes stay queued.")
    inner = i18n.N_("No record {id} on this device.", id="0193")
    outer = i18n.N_("Invalid edit: {errors}", errors=inner)
    try:
        i18n.use("vi")
        assert i18n.say(error) == ("Không có đường mạng tới http://10.0.0.5:8080: hãy kết nối "
                                   "mạng rồi đồng bộ sau; các thay đổi của bạn vẫn chờ gửi.")
        assert i18n.say(RecordNotFound(outer)) == \
            "Nội dung sửa chưa hợp lệ: Không có hồ sơ 0193 trên máy này."
        assert i18n.say(SyncError("said by a server, in its own words")) == \
            "said by a server, in its own words"
        i18n.use("en")
        assert i18n.say(RecordNotFound(outer)) == str(outer) == \
            "Invalid edit: No record 0193 on this device."
    finally:
        i18n.use(None)


def _placeholders(text):
    return sorted(re.findall(r"\{[^{}]*\}", text))


def test_the_catalog_translates_every_message_of_the_code_keeping_placeholders():
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po
    from babel.messages.mofile import read_mo

    with open(CATALOG / "cli.po", "rb") as fh:
        po = {m.id: m.string for m in read_po(fh) if m.id}
    with open(CATALOG / "cli.mo", "rb") as fh:
        mo = {m.id: m.string for m in read_mo(fh) if m.id}
    in_code = {message for _, _, message, _, _ in extract_from_dir(
        ROOT, method_map=[(line[len("[python: "):-1], "python")
                          for line in (ROOT / "client_sync/translations/babel.cfg").read_text()
                          .splitlines() if line.startswith("[python: ")],
        keywords={"_": None, "N_": None})}
    # The command's own messages and the library's errors, which it says
    # again in the user's language (i18n.say).
    assert len(in_code) > 120
    assert "No network route to {url}: connect to a network and sync later; your changes " \
        "stay queued." in in_code
    assert in_code <= set(po), f"not in cli.po (run make translations): {in_code - set(po)}"
    assert mo == po, "cli.mo is older than cli.po: run make translations"
    for message, text in po.items():
        assert text and text != message, f"untranslated: {message}"
        assert _placeholders(text) == _placeholders(message), message

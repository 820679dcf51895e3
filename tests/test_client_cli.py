"""The `fieldsync` command through click's CliRunner: DESIGN.md's commands,
value syntax and exit codes; every error one clear line, never a traceback."""
import json

import pytest
from click.testing import CliRunner

from client_sync.cli import cli, parse_value
from conftest import run_cli

HH_ARGS = ["head_name=Lý A Sáng", "poverty_status=poor", "registered_on=2025-05-30",
           "status=active", "travel_minutes_to_chs=45", "gps=21.31,107.42,12"]


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIELDSYNC_GIVE_UP_AFTER", "2")
    monkeypatch.setenv("FIELDSYNC_BACKOFF_FACTOR", "0")


def run(*args, input=None, ok=True):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _device_id():
    """This device's id, as `fieldsync status` shows it."""
    return run("status").output.split("(device ", 1)[1].split(")", 1)[0]


def fails(*args, input=None):
    """Run a command that must fail with one clear line on stderr."""
    result = run(*args, input=input, ok=False)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("spec, raw, expected", [
    ({"name": "x", "type": "text"}, "", None),
    ({"name": "x", "type": "multi_choice"}, "anaemia,none", ["anaemia", "none"]),
    ({"name": "x", "type": "boolean"}, "yes", True),
    ({"name": "x", "type": "boolean"}, "no", False),
    ({"name": "x", "type": "integer"}, "45", 45),
    ({"name": "x", "type": "decimal"}, "52.5", 52.5),
    ({"name": "x", "type": "geopoint"}, "21.3,107.4", {"lat": 21.3, "lon": 107.4}),
    ({"name": "x", "type": "repeat"}, '[{"sex": "female"}]', [{"sex": "female"}]),
    ({"name": "x", "type": "string"}, "a,b", "a,b"),
])
def test_value_syntax(spec, raw, expected):
    assert parse_value(spec, raw) == expected


@pytest.mark.parametrize("spec, raw", [
    ({"name": "x", "type": "boolean"}, "maybe"),
    ({"name": "x", "type": "integer"}, "4.5"),
    ({"name": "x", "type": "decimal"}, "heavy"),
    ({"name": "x", "type": "geopoint"}, "21.3"),
    ({"name": "x", "type": "repeat"}, "[oops"),
])
def test_bad_values_name_the_field(spec, raw):
    with pytest.raises(Exception, match="^x: "):
        parse_value(spec, raw)


def test_commands_without_login_fail_with_one_line():
    assert "log" in fails("add", "household", "head_name=Lý A Sáng")
    assert "sync" in fails("sync") or "log" in fails("sync")
    assert "No record" in fails("show", "0193a0c4-1111-7000-8000-000000000001")
    assert "Not logged in" in run("status").output
    assert "should look like" in fails("login", "--server", "10.0.0.5", "--username", "hw",
                                       input="x\n")
    assert "household" in run("forms").output  # the bundled forms, offline


def test_health_worker_session(server_process, tmp_path):
    line = fails("login", "--server", server_process.url, "--username", "hw", input="wrong\n")
    assert "password" in line.lower() or "sign" in line.lower() or "login" in line.lower()
    out = run("login", "--server", server_process.url, "--username", "hw",
              input="hw-pass-123\n").output
    assert "Logged in as hw" in out and "QN.LM.03" in out
    rid = run("add", "household", *HH_ARGS).output.strip()
    assert len(rid) == 36
    shown = run("show", rid).output.splitlines()
    assert "Head of household: full name (head_name): Lý A Sáng" in shown
    assert "Walking time to the commune health station (minutes) (travel_minutes_to_chs): 45" \
        in shown
    assert json.loads(run("show", rid, "--json").output)["sync_state"] == "pending"
    assert f"{rid}\thousehold\tQN.LM.03\tpending" in run("list").output
    assert "Pending changes: 1" in run("status").output
    assert "poverty_status" in fails("add", "household", *HH_ARGS[:1], "poverty_status=rich",
                                     *HH_ARGS[2:])
    assert "no field" in fails("edit", rid, "colour=blue")
    assert "travel_minutes_to_chs" in fails("edit", rid, "travel_minutes_to_chs=lots")
    run("edit", rid, "phone=0912345678", "address_detail=Thôn Khe Tiền")
    run("edit", rid, "address_detail=")  # clears
    assert "Sync complete: pushed 1 (1 applied" in run("sync").output
    status = run("status").output
    assert "Pending changes: 0" in status and "Open conflicts: 0" in status
    data = json.loads(run("show", rid, "--json").output)
    assert data["data"]["phone"] == "0912345678" and data["data"]["address_detail"] is None
    assert data["sync_state"] == "acknowledged"
    run("delete", rid)
    assert rid not in run("list").output
    assert "pushed 1" in run("sync").output
    assert "deleted" in fails("edit", rid, "phone=0987654321")


def test_add_from_json_file_and_area(server_process, tmp_path):
    run("login", "--server", server_process.url, "--username", "hw", input="hw-pass-123\n")
    path = tmp_path / "hh.json"
    path.write_text(json.dumps({"head_name": "Đặng Văn Lộc", "poverty_status": "not_poor",
                                "registered_on": "2025-01-10", "status": "active"}))
    rid = run("add", "household", "--json", str(path), "--area", "QN.LM.03").output.strip()
    assert "(head_name): Đặng Văn Lộc" in run("show", rid).output
    assert "outside your areas" in fails("add", "household", "--json", str(path), "--area", "QN.TB.01")
    path.write_text("{not json")
    assert "not valid JSON" in fails("add", "household", "--json", str(path))


def test_sync_against_a_dead_server_exits_non_zero_and_keeps_changes(server_process):
    run("login", "--server", server_process.url, "--username", "hw", input="hw-pass-123\n")
    run("add", "household", *HH_ARGS)
    server_process.stop()
    line = fails("sync")
    assert "Sync incomplete" in line and "stay queued" in line
    assert "Pending changes: 1" in run("status").output
    assert "the last attempt did not finish" in run("status").output


def test_switching_user_with_unsynced_changes_is_refused(server_process):
    run("login", "--server", server_process.url, "--username", "hw", input="hw-pass-123\n")
    run("add", "household", *HH_ARGS)
    line = fails("login", "--server", server_process.url, "--username", "hw2",
                 input="hw2-pass-123\n")
    assert "unsynced" in line


def test_export_writes_the_file_only_when_complete(server_process, tmp_path):
    run("login", "--server", server_process.url, "--username", "hw", input="hw-pass-123\n")
    run("add", "household", *HH_ARGS)
    run("sync")
    out = tmp_path / "hh.csv"
    fails("export", "household", "--format", "csv", "--out", str(out))  # health workers may not
    assert not out.exists() and not list(tmp_path.glob(".hh.csv.*"))
    # Another user on this device: an admin releases it first (issue 14).
    run_cli(server_process.db, "device", "release", _device_id())
    run("login", "--server", server_process.url, "--username", "sup", input="sup-pass-123\n")
    assert "Wrote" in run("export", "household", "--format", "csv", "--out", str(out)).output
    assert "Lý A Sáng" in out.read_text(encoding="utf-8-sig")

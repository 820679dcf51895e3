"""Issue 17, the command line that tells the truth fast: failures classified
and explained, conflicts on the device whichever edit arrived first, forms and
records in words, id prefixes, search, warnings, stuck states, files."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests
import urllib3
from click.testing import CliRunner

from client_sync import Client
from client_sync.cli import cli
from client_sync.config import NetworkConfig
from client_sync.transport import ServerAddressError, Transport, permanent_failure
from conftest import ROOT, run_cli

HH_ARGS = ["head_name=Lý A Sáng", "poverty_status=poor", "registered_on=2025-05-30",
           "status=active"]
FAST = NetworkConfig(connect_timeout=2, read_timeout=5, give_up_after=4, backoff_factor=0)


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIELDSYNC_GIVE_UP_AFTER", "30")
    monkeypatch.setenv("FIELDSYNC_BACKOFF_FACTOR", "0")
    monkeypatch.delenv("FIELDSYNC_LANG", raising=False)


def run(*args, input=None, ok=True):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def fails(*args, input=None):
    result = run(*args, input=input, ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def login(server, user="hw"):
    password = server.users[user]["password"]
    run("login", "--server", server.url, "--username", user, input=password + "\n")


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- failures -------------------------------------------------------------------------


def test_a_refused_connection_is_reported_at_once_not_retried():
    transport = Transport(f"http://127.0.0.1:{closed_port()}", None,
                          NetworkConfig(give_up_after=30, backoff_factor=0))
    with pytest.raises(ServerAddressError) as caught:
        transport.info()
    # Backoff 0 and 30 s to give up: the old loop tried thousands of times.
    assert caught.value.kind == "refused" and transport.attempts == 1
    line = fails("login", "--server", f"http://127.0.0.1:{closed_port()}", "--username", "hw",
                 input="x\n")
    assert "refused the connection" in line and "Check the server address" in line


def test_an_unknown_host_is_reported_at_once_with_what_to_check():
    # `.invalid` never resolves (RFC 2606): the resolver's answer is final, so one attempt.
    transport = Transport("http://fieldsync-test.invalid:8080", None,
                          NetworkConfig(give_up_after=30, backoff_factor=0))
    with pytest.raises(ServerAddressError) as caught:
        transport.info()
    assert caught.value.kind == "unknown_host" and transport.attempts == 1
    line = fails("login", "--server", "http://fieldsync-test.invalid:8080", "--username", "hw",
                 input="x\n")
    assert "fieldsync-test.invalid" in line and "check the server address" in line


def test_https_against_an_http_server_is_a_tls_mismatch_with_what_to_check(server_process):
    https = server_process.url.replace("http://", "https://")
    line = fails("login", "--server", https, "--username", "hw", input="hw-pass-123\n")
    assert "TLS" in line and server_process.url in line and "supervisor" in line


def test_failures_are_classified_permanent_or_transient():
    pool = urllib3.HTTPConnectionPool("nowhere.invalid", 80)
    dns = urllib3.exceptions.NameResolutionError("nowhere.invalid", pool, OSError("no name"))
    assert permanent_failure(requests.ConnectionError(
        urllib3.exceptions.MaxRetryError(pool, "/", dns))) == "unknown_host"
    refused = urllib3.exceptions.NewConnectionError(pool, "refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert permanent_failure(refused) == "refused"
    # Timeouts and resets are worth another attempt.
    assert permanent_failure(urllib3.exceptions.ConnectTimeoutError(pool, "slow")) is None
    assert permanent_failure(requests.ConnectionError(ConnectionResetError(104, "reset"))) is None
    assert permanent_failure(requests.exceptions.ReadTimeout("slow")) is None


def test_a_revoked_login_says_sign_in_again_not_wait_for_a_better_connection(server_process):
    login(server_process)
    run("add", "household", *HH_ARGS)
    run_cli(server_process.db, "user", "disable", "hw")
    line = fails("sync")
    assert "sign in again. To sign in: fieldsync login --server" in line
    assert "connection is better" not in line
    assert "stay safe" in line


def test_a_locked_out_user_is_told_an_admin_can_unlock(server_process):
    line = ""
    for _ in range(30):
        line = fails("login", "--server", server_process.url, "--username", "hw",
                     input="wrong-pass\n")
        if "locked out" in line:
            break
    assert "`fieldsync-server user unlock hw`." in line and ".." not in line
    run_cli(server_process.db, "user", "unlock", "hw")
    login(server_process)


# -- conflicts on the device -------------------------------------------------------------


def _devices(server_process, tmp_path):
    made = []
    for name in ("a", "b"):
        client = Client(tmp_path / name, FAST)
        client.login(server_process.url, "hw", "hw-pass-123")
        made.append(client)
    return made


def _resolve_all(server_process):
    token = server_process.login("sup")
    headers = {"Authorization": f"Bearer {token}"}
    listed = requests.get(server_process.url + "/api/v1/conflicts", params={"status": "open"},
                          headers=headers, timeout=10).json()["conflicts"]
    for entry in listed:
        answer = requests.post(f"{server_process.url}/api/v1/conflicts/{entry['id']}/resolve",
                               json={"keep": "current"}, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
    return listed


@pytest.mark.parametrize("loser_first", [True, False])
def test_every_open_conflict_shows_on_both_devices_until_resolved(server_process, tmp_path,
                                                                   loser_first, monkeypatch):
    a, b = _devices(server_process, tmp_path)
    rid = a.add("household", {"head_name": "Nguyễn Thị Hoa", "poverty_status": "poor",
                              "registered_on": "2025-01-15", "status": "active"})
    a.sync()
    b.sync()
    a.edit(rid, {"head_name": "Nguyễn Thị Hòa"})
    b.store.observe(a.store.hlc)              # b's edit is the later one: it wins
    b.edit(rid, {"head_name": "Nguyễn Thị Hoà"})
    for device in ((a, b) if loser_first else (b, a)):
        device.sync()
    for device in (a, b):
        device.sync()
        [entry] = device.conflicts()
        assert entry["record_id"] == rid and entry["field"] == "head_name"
        assert entry["current"]["value"] == "Nguyễn Thị Hoà"
        assert entry["losing"]["value"] == "Nguyễn Thị Hòa"
        assert device.status()["conflicts"] == 1
        assert device.get(rid)["sync_state"] == "conflict"
    # The command line shows both values, by label.
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "a"))
    out = run("conflicts").output
    assert "kept: Nguyễn Thị Hoà" in out and "lost: Nguyễn Thị Hòa" in out
    assert "Head of household" in out
    assert "Open conflicts: 1" in run("status").output
    assert len(_resolve_all(server_process)) == 1
    for device in (a, b):
        device.sync()
        assert device.conflicts() == [] and device.status()["conflicts"] == 0
        assert device.get(rid)["sync_state"] == "acknowledged"
    assert "No open conflicts" in run("conflicts").output
    a.close()
    b.close()


# -- forms and records -------------------------------------------------------------------


def test_forms_form_shows_labels_hints_choice_names_and_when_asked():
    out = run("forms", "person").output
    assert "ethnicity_code" in out and "01 = Kinh" in out
    assert "hi_number: Health insurance number" in out
    assert "asked when: " in out
    out = run("forms", "anc_visit").output
    assert "asked when: Type of contact is Antenatal check-up" in out
    assert "Vaginal bleeding" in out and "PMTCT" in out  # a choice name and a hint
    assert "Khám thai" in run("--lang", "vi", "forms", "anc_visit").output
    assert "Unknown form" in fails("forms", "nothing")


def test_id_prefix_find_show_and_warnings(server_process):
    login(server_process)
    first = run("add", "household", *HH_ARGS).output.strip().splitlines()[0]
    second = run("add", "household", "head_name=Đặng Văn Lộc", *HH_ARGS[1:]).output.strip()
    common = os.path.commonprefix([first, second])
    assert len(common) >= 8  # UUIDv7: made within a minute, they share their time prefix
    line = fails("show", common)
    assert "ambiguous" in line and first in line and second in line
    prefix = first[:len(common) + 1] if first[len(common)] != second[len(common)] else None
    assert prefix is not None
    assert "(head_name): Lý A Sáng" in run("show", prefix).output
    run("edit", prefix, "phone=0912345678")
    assert "No record" in fails("show", "ffffffff")
    # Search ignores case and diacritics.
    assert second in run("find", "dang van loc").output
    assert first in run("find", "LY A SANG").output
    assert "No record" in fails("find", "Hoàng")
    run("delete", second[:len(common) + 1] if second[len(common)] != first[len(common)] else second)
    assert "DELETED" in run("show", second).output


def test_danger_signs_and_duplicates_are_warned_on_add_and_shown(server_process):
    login(server_process)
    hh = run("add", "household", *HH_ARGS).output.strip()
    visit = ["pregnancy_id=" + hh[:len(hh) - 4], "lmp_date=2025-01-01", "visit_date=2025-06-20",
             "contact_type=anc_checkup", "provider=midwife", "place=CHS", "bp_systolic=165",
             "bp_diastolic=110", "danger_signs=none", "referred_to=none"]
    result = run("add", "anc_visit", *visit)
    rid = result.stdout.strip()
    assert len(rid) == 36  # stdout keeps only the id
    assert "140/90" in result.stderr and "refer" in result.stderr
    assert "140/90" in run("show", rid[:13]).output
    status = run("status").output
    assert "Records with warnings: 1" in status and rid in status
    again = run("add", "anc_visit", *visit)
    assert "Possible duplicate" in again.stderr and rid in again.stderr


def test_text_is_trimmed_and_blank_text_is_missing(server_process):
    login(server_process)
    line = fails("add", "household", "head_name=   ", *HH_ARGS[1:])
    assert "head_name" in line and "required" in line
    rid = run("add", "household", "head_name=  Lý A Sáng  ", *HH_ARGS[1:]).output.strip()
    assert json.loads(run("show", rid, "--json").output)["data"]["head_name"] == "Lý A Sáng"


def test_a_15_character_insurance_number_is_refused_with_the_reason(server_process):
    login(server_process)
    hh = run("add", "household", *HH_ARGS).output.strip()
    person = [f"household_id={hh[:12]}", "full_name=Lý Thị Mai", "sex=female",
              "dob=1995-03-02", "dob_precision=exact", "ethnicity_code=01",
              "relationship_to_head=spouse", "recorded_on=2025-05-30", "vital_status=alive"]
    line = fails("add", "person", *person, "hi_has_card=yes", "hi_number=HS4010123456789")
    assert "hi_number" in line and "10 digits" in line and "15-character card" in line
    rid = run("add", "person", *person, "hi_has_card=yes", "hi_number=0123456789",
              "hi_valid_from=2025-01-01", "hi_valid_to=2025-12-31").output
    assert json.loads(run("show", rid.strip(), "--json").output)["data"]["household_id"] == hh
    assert "15-character" in run("forms", "person").output


# -- stuck states ---------------------------------------------------------------------------


def test_forbidden_records_are_resent_after_the_scope_is_fixed(server_process):
    login(server_process)
    run_cli(server_process.db, "user", "set", "hw", "--area", "QN.TB.01")
    rid = run("add", "household", *HH_ARGS, "--area", "QN.LM.03").output.strip()
    out = run("sync").output
    assert "Sync complete" not in out and "refused" in out
    assert "Ask your supervisor to check your areas" in out
    assert json.loads(run("show", rid, "--json").output)["sync_state"] == "forbidden"
    run_cli(server_process.db, "user", "set", "hw", "--area", "QN.LM.03")
    out = run("sync").output
    assert "Sync complete" in out, out
    assert json.loads(run("show", rid, "--json").output)["sync_state"] == "acknowledged"


def test_ctrl_c_during_a_sync_says_nothing_is_lost(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    home = tmp_path / "home"
    with Client(home) as client:  # a logged-in device, with one queued change
        client.store.set_meta(server=url, token="t", user={
            "username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]})
        client.add("household", {"head_name": "Lý A Sáng", "poverty_status": "poor",
                                 "registered_on": "2025-05-30", "status": "active"})
    # PYTHONFAULTHANDLER: if it ever fails to stop, SIGABRT prints where it was.
    env = {**os.environ, "FIELDSYNC_HOME": str(home), "FIELDSYNC_GIVE_UP_AFTER": "120",
           "PYTHONFAULTHANDLER": "1"}
    # Ctrl-C in a terminal reaches a program whose SIGINT is at its default. A test run
    # started in the background (`make test &` in a script, nohup, some CI runners) hands
    # its children SIGINT *ignored*, and Python keeps it ignored: the sync would never
    # see the signal. So the sync starts with Python's usual SIGINT handler.
    start = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from client_sync.cli import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", start, "sync"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = listener.accept()
        conn.settimeout(60)
        head = b""
        while b"\r\n\r\n" not in head:  # the whole request sent: it waits for an answer
            chunk = conn.recv(4096)
            assert chunk, "the sync closed its connection before sending a request"
            head += chunk
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            pytest.fail("the sync did not stop on Ctrl-C; where it was:\n"
                        + proc.communicate(timeout=30)[1])
    finally:
        proc.kill()
        listener.close()
    conn.close()
    assert proc.returncode == 130
    assert "Nothing is lost" in err and "Traceback" not in err and "Aborted" not in err
    with Client(home) as client:
        assert client.status()["pending"] == 1


# -- files and commands ---------------------------------------------------------------------


def test_export_refuses_to_overwrite_and_takes_since_and_bom(server_process, tmp_path):
    out = tmp_path / "hh.csv"
    out.write_text("keep me")
    assert "already exists" in fails("export", "household", "--format", "csv", "--out", str(out))
    assert out.read_text() == "keep me"
    login(server_process, "sup")
    assert "--since" in fails("export", "household", "--format", "csv", "--out",
                              str(tmp_path / "x.csv"), "--since", "last week")
    run("export", "household", "--format", "csv", "--out", str(out), "--force", "--bom",
        "--since", "2000-01-01")
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_broken_pipe_is_quiet(tmp_path):
    home = tmp_path / "home"
    with Client(home) as client:
        client.store.set_meta(server="http://127.0.0.1:9", token="t", user={
            "username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]})
        for i in range(1500):  # more than a pipe's buffer of lines
            client.add("household", {"head_name": f"Hộ số {i}", "poverty_status": "poor",
                                     "registered_on": "2025-05-30", "status": "active"})
    env = {**os.environ, "FIELDSYNC_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", "from client_sync.cli import main; main()",
                             "list"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().count(b"\t") == 4
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 0


def test_version_and_logout(server_process):
    assert run("--version").output.startswith("fieldsync ")
    login(server_process)
    run("add", "household", *HH_ARGS)
    line = fails("logout")
    assert "not synced" in line and "--force" in line
    status = run("status").output       # the refused logout kept the login and the change
    assert status.startswith("User: hw on ") and "Pending changes: 1" in status
    out = run("logout", "--force").output
    assert "1 unsynced record(s) were deleted" in out and "lost" in out
    assert "Not logged in" in run("status").output

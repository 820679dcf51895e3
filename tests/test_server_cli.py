"""`fieldsync-server` commands, run as real processes on real database files."""
import json
import sqlite3

import pytest
import requests

from conftest import ServerProcess, free_port, run_cli


def test_init_migrates_publishes_the_bundled_forms_and_is_idempotent(tmp_path):
    db = tmp_path / "new" / "fs.db"
    out = run_cli(db, "init").stdout
    from server.migrations import latest_version
    assert f"schema version {latest_version()}" in out and "21 newly published" in out
    assert "user add NAME --role admin" in out  # says how to create the first user
    again = run_cli(db, "init").stdout
    assert "up to date" in again and "0 newly published" in again
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    # Ten forms at v1 and v2, and the club register (issue 15, Vietnamese v2s).
    assert conn.execute("SELECT count(*) FROM forms").fetchone()[0] == 21


def test_init_upgrades_a_version_1_database_in_place(db_path):
    """A database made before migrations 2 and 3: `serve` refuses it, `init`
    adds the export index and seeds the commit-time floor, keeping the data."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP INDEX idx_records_form_seq")
    conn.execute("DELETE FROM meta WHERE key = 'updated_at'")
    conn.execute("PRAGMA user_version = 1")
    for n, at in enumerate(["2031-05-01T00:00:00.000Z", "2030-01-01T00:00:00.000Z"]):
        conn.execute("INSERT INTO records (id, form, form_version, area, state, data, hlc, seq, "
                     "created_at, updated_at) VALUES (?, 'household', 1, 'QN.LM.03', '{}', '{}', "
                     "'h', ?, ?, ?)", [f"r{n}", n + 1, at, at])
    conn.close()
    refused = run_cli(db_path, "user", "list", check=False)
    assert refused.returncode != 0 and "fieldsync-server init" in refused.stderr
    out = run_cli(db_path, "init").stdout
    from server.migrations import latest_version
    assert f"(applied {', '.join(map(str, range(2, latest_version() + 1)))})" in out, out
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    columns = [r[2] for r in conn.execute("PRAGMA index_info(idx_records_form_seq)")]
    assert columns == ["form", "seq"]
    assert conn.execute("SELECT value FROM meta WHERE key = 'updated_at'").fetchone() == \
        ("2031-05-01T00:00:00.000Z",)
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 2
    assert "up to date" in run_cli(db_path, "init").stdout


def test_commands_on_an_uninitialised_database_say_to_run_init(tmp_path):
    proc = run_cli(tmp_path / "fs.db", "user", "list", check=False)
    assert proc.returncode != 0 and "fieldsync-server init" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_add_reads_one_line_of_stdin_and_list_shows_it(db_path):
    run_cli(db_path, "user", "add", "nurse", "--role", "health_worker", "--area", "QN.LM.05",
            "--area", "QN.LM.06", input="a-good-password\n")
    rows = [json.loads(line) for line in run_cli(db_path, "user", "list", "--json")
            .stdout.splitlines()]
    nurse = next(r for r in rows if r["username"] == "nurse")
    assert nurse == {"username": "nurse", "role": "health_worker",
                     "areas": ["QN.LM.05", "QN.LM.06"], "disabled": False}


@pytest.mark.parametrize("args,stdin,message", [
    (["user", "add", "hw", "--role", "health_worker", "--area", "QN.A"], "password-123\n",
     "already exists"),
    (["user", "add", "x", "--role", "health_worker", "--area", "qn.bad"], "password-123\n",
     "Not an area code"),
    (["user", "add", "x", "--role", "health_worker"], "password-123\n", "at least one --area"),
    (["user", "add", "x", "--role", "admin"], "short\n", "at least 8"),
    (["user", "add", "x", "--role", "admin"], "", "No password"),
    (["user", "add", "x", "--role", "boss"], "password-123\n", "boss"),
    (["user", "disable", "ghost"], None, "No user"),
    (["user", "set", "ghost", "--area", "QN.A"], None, "No user"),
    (["user", "set", "hw", "--area", "qn.bad"], None, "Not an area code"),
    (["user", "set", "hw"], None, "--role and/or --area"),
])
def test_user_errors_are_one_clear_line(db_path, args, stdin, message):
    proc = run_cli(db_path, *args, input=stdin, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_disable_and_passwd_revoke_tokens(server_process):
    token = server_process.login("hw", "dev-a")
    h = {"Authorization": "Bearer " + token}
    assert requests.get(server_process.url + "/api/v1/forms", headers=h).status_code == 200
    run_cli(server_process.db, "user", "passwd", "hw", input="a-new-password\n")
    assert requests.get(server_process.url + "/api/v1/forms", headers=h).status_code == 401
    server_process.users = {**server_process.users,
                            "hw": {**server_process.users["hw"], "password": "a-new-password"}}
    token = server_process.login("hw", "dev-a")
    run_cli(server_process.db, "user", "disable", "hw")
    assert requests.get(server_process.url + "/api/v1/forms",
                        headers={"Authorization": "Bearer " + token}).status_code == 401


def test_user_set_changes_scope_and_the_devices_pull_starts_over(server_process):
    """A worker moved to another village: the old cursor answers resync_required,
    the token still works, and the new scope is what the next pull sees."""
    h = {"Authorization": "Bearer " + server_process.login("hw", "dev-a")}
    pull = server_process.url + "/api/v1/sync/pull"
    cursor = requests.get(pull, headers=h).json()["cursor"]
    run_cli(server_process.db, "user", "set", "hw", "--area", "QN.LM.04")
    rows = [json.loads(line) for line in run_cli(server_process.db, "user", "list", "--json")
            .stdout.splitlines()]
    assert next(r for r in rows if r["username"] == "hw")["areas"] == ["QN.LM.04"]
    resp = requests.get(pull, params={"cursor": cursor}, headers=h)
    assert resp.status_code == 409 and resp.json()["error"] == "resync_required"
    assert resp.json()["details"]["user"] == {"username": "hw", "role": "health_worker",
                                              "areas": ["QN.LM.04"]}
    assert requests.get(pull, headers=h).status_code == 200


def test_forms_publish_refuses_a_changed_definition_under_a_published_version(db_path,
                                                                             tmp_path):
    from schemas.forms import bundled_definitions
    household = next(d for d in bundled_definitions() if d["id"] == "household")
    assert household["version"] == 1   # sorted by id and version
    same = tmp_path / "same.json"
    same.write_text(json.dumps(household))
    assert "already published" in run_cli(db_path, "forms", "publish", str(same)).stdout
    changed = dict(household, title="Household (edited)")
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    proc = run_cli(db_path, "forms", "publish", str(path), check=False)
    # v2 is bundled (the Vietnamese one), so the next free version is 3.
    assert proc.returncode != 0 and "version 3" in proc.stderr
    path.write_text(json.dumps(dict(changed, version=2)))
    proc = run_cli(db_path, "forms", "publish", str(path), check=False)
    assert proc.returncode != 0 and "version 3" in proc.stderr   # v2 is published already
    path.write_text(json.dumps(dict(changed, version=3)))
    assert "Published household v3" in run_cli(db_path, "forms", "publish", str(path)).stdout
    listed = run_cli(db_path, "forms", "list").stdout
    assert "household\tv3" in listed and "cp_report\tv2" in listed


def test_forms_publish_reports_a_broken_definition(db_path, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"id": "x", "version": 1, "title": "X",
                                "fields": [{"name": "a", "type": "nonsense"}]}))
    proc = run_cli(db_path, "forms", "publish", str(path), check=False)
    assert proc.returncode != 0 and "broken.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_backup_while_serving_gives_a_consistent_copy(server_process, tmp_path):
    from conftest import batch, change, hlc_at, household, now_ms
    token = server_process.login("hw", "dev-a")
    body = batch("dev-a", [change(household(), hlc=hlc_at(now_ms(), "dev-a"))])
    requests.post(server_process.url + "/api/v1/sync/push", json=body,
                  headers={"Authorization": "Bearer " + token}, timeout=10).raise_for_status()
    target = tmp_path / "backup.db"
    out = run_cli(server_process.db, "backup", str(target)).stdout
    assert "integrity ok" in out
    conn = sqlite3.connect(target)
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 4
    proc = run_cli(server_process.db, "backup", str(target), check=False)
    assert proc.returncode != 0 and "exists" in proc.stderr


def test_serve_logs_one_line_per_request_without_query_or_personal_data(db_path, tmp_path):
    log = tmp_path / "serve.log"
    server = ServerProcess(db=db_path, port=free_port(), log=log, workers=1).start()
    try:
        token = server.login("hw", "dev-a")
        requests.get(server.url + "/api/v1/sync/pull?cursor=SECRETCURSOR&limit=5",
                     headers={"Authorization": "Bearer " + token}, timeout=10)
    finally:
        server.stop()
    text = log.read_text()
    lines = [line for line in text.splitlines() if '"GET /api/v1/sync/pull"' in line]
    assert len(lines) == 1 and " 400 " in lines[0]  # the made-up cursor is refused
    for secret in ("SECRETCURSOR", token, "hw-pass-123", "127.0.0.1 -"):
        assert secret not in text
    assert "gunicorn" in text.lower()  # the production server, not Flask's


def _raw(port, request):
    """Send raw bytes; return (status, head, body) of the answer."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body


def test_an_over_long_cursor_reaches_the_app_and_gets_its_json_400(server_process):
    """A long cursor reaches the app, which answers in its error shape. Past
    the server's 16 KiB for the request line and headers together, waitress
    answers itself (431), in our JSON error shape too, and keeps serving."""
    token = server_process.login("hw")
    auth = f"Authorization: Bearer {token}\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status, head, body = _raw(server_process.port, b"GET /api/v1/sync/pull?limit=10&cursor="
                              + b"a" * 9000 + b" HTTP/1.1\r\n" + auth)
    assert status == 400 and "application/json" in head.lower(), head
    assert json.loads(body)["error"] == "invalid_cursor"
    status, head, body = _raw(server_process.port, b"GET /api/v1/sync/pull?cursor="
                              + b"a" * 17000 + b" HTTP/1.1\r\n" + auth)
    assert status == 431 and "application/json" in head.lower(), head
    assert json.loads(body)["error"] == "headers_too_large"
    assert b"aaaa" not in body  # the request is not echoed
    status, head, body = _raw(server_process.port, b"GET /api/v1/ HTTP/1.1\r\nX-Big: "
                              + b"b" * 17000 + b"\r\n" + auth)
    assert status == 431 and "application/json" in head.lower(), head
    assert json.loads(body)["error"] == "headers_too_large"
    assert requests.get(server_process.url + "/api/v1/", timeout=5).status_code == 200

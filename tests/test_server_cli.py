"""`fieldsync-server` commands, run as real processes on real database files."""
import json
import sqlite3

import pytest
import requests

from conftest import ServerProcess, free_port, run_cli


def test_init_migrates_publishes_the_bundled_forms_and_is_idempotent(tmp_path):
    db = tmp_path / "new" / "fs.db"
    out = run_cli(db, "init").stdout
    assert "schema version 1" in out and "10 newly published" in out
    assert "user add NAME --role admin" in out  # says how to create the first user
    again = run_cli(db, "init").stdout
    assert "up to date" in again and "0 newly published" in again
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM forms").fetchone()[0] == 10


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


def test_forms_publish_refuses_a_changed_definition_under_a_published_version(db_path,
                                                                             tmp_path):
    from schemas.forms import bundled_definitions
    household = next(d for d in bundled_definitions() if d["id"] == "household")
    same = tmp_path / "same.json"
    same.write_text(json.dumps(household))
    assert "already published" in run_cli(db_path, "forms", "publish", str(same)).stdout
    changed = dict(household, title="Household (edited)")
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    proc = run_cli(db_path, "forms", "publish", str(path), check=False)
    assert proc.returncode != 0 and "version 2" in proc.stderr
    path.write_text(json.dumps(dict(changed, version=2)))
    assert "Published household v2" in run_cli(db_path, "forms", "publish", str(path)).stdout
    listed = run_cli(db_path, "forms", "list").stdout
    assert "household\tv2" in listed and "cp_report\tv1" in listed


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

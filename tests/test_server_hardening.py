"""The smaller holes of issue 14 (item 5), each against the real thing: atomic
login limits, device ownership, private files, an append-only audit with every
action and no field values, and its export."""
import csv
import json
import os
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import USERS, ServerProcess, free_port, run_cli
from tests.test_exports_api import Api, Device, household
from tests.test_review import concurrent_edit


def _sign_in(url, name, password=None, device_id="dev-x"):
    return requests.post(url + "/api/v1/auth/login", timeout=60, json={
        "username": name, "password": password or USERS[name]["password"],
        "device_id": device_id, "app_version": "test"})


def test_parallel_wrong_passwords_are_counted_atomically(server_process):
    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(lambda i: _sign_in(server_process.url, "hw", "wrong-pass-x"),
                                range(60)))
    statuses = sorted(a.status_code for a in answers)
    # Exactly LOGIN_MAX_FAILURES_PER_USER passwords checked, the rest refused
    # unread: 429, or 503 when the worker's password checks were all busy
    # (tests/test_login_storm.py), which counts nothing.
    assert statuses.count(401) == 5 and set(statuses) <= {401, 429, 503}, statuses
    assert statuses.count(429) > 0
    assert _sign_in(server_process.url, "hw").status_code == 429  # even the right one


def test_a_device_belongs_to_its_first_user_until_an_admin_releases_it(server_process):
    url = server_process.url
    first = _sign_in(url, "hw", device_id="dev-shared")
    assert first.status_code == 200
    taken = _sign_in(url, "sup", device_id="dev-shared")
    assert taken.status_code == 409
    body = taken.json()
    assert body["error"] == "device_taken" and body["details"] == {"device_id": "dev-shared"}
    assert "fieldsync-server device release" in body["message"]
    assert "hw" not in body["message"]  # the owner's name is not given away
    # The owner still signs in there; the device stays in the owner's view.
    assert _sign_in(url, "hw", device_id="dev-shared").status_code == 200
    sup = _sign_in(url, "sup", device_id="dev-sup").json()["token"]
    devices = requests.get(url + "/api/v1/devices", timeout=10,
                           headers={"Authorization": "Bearer " + sup}).json()["devices"]
    assert {d["device_id"]: d["user"] for d in devices}["dev-shared"] == "hw"

    out = run_cli(server_process.db, "device", "release", "dev-shared")
    assert "Released dev-shared" in out.stdout
    # The old owner's sign-in on it is over; the next user owns it.
    forms = requests.get(url + "/api/v1/forms", timeout=10,
                         headers={"Authorization": "Bearer " + first.json()["token"]})
    assert forms.status_code == 401
    assert _sign_in(url, "sup", device_id="dev-shared").status_code == 200
    assert _sign_in(url, "hw", device_id="dev-shared").status_code == 409
    assert run_cli(server_process.db, "device", "release", "dev-nope",
                   check=False).returncode != 0


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_server_files_and_folders_are_private(tmp_path):
    db = tmp_path / "new" / "data" / "fieldsync.db"
    run_cli(db, "init")
    assert _mode(db.parent) == _mode(db.parent.parent) == 0o700
    assert _mode(db) == 0o600
    run_cli(db, "user", "add", "hw", "--role", "health_worker", "--area", "QN.LM.03",
            input=USERS["hw"]["password"] + "\n")
    server = ServerProcess(db=db, port=free_port(), log=tmp_path / "server.log").start()
    try:
        server.login("hw", "dev-a")
        wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
        assert wal.exists() and shm.exists()
        assert _mode(db) == _mode(wal) == _mode(shm) == 0o600
        run_cli(db, "backup", str(tmp_path / "copy.db"))
        assert _mode(tmp_path / "copy.db") == 0o600
    finally:
        server.stop()
    # A database made before this change is made private by `init`.
    os.chmod(db, 0o644)
    assert "0600" in run_cli(db, "init").stdout
    assert _mode(db) == 0o600


def _audit(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return [(u, a, json.loads(d)) for u, a, d in
                conn.execute("SELECT username, action, details FROM audit ORDER BY id")]
    finally:
        conn.close()


SECRET = "Zebra Ostrich Quokka"  # a field value that must never reach the audit


def test_every_action_is_audited_with_who_what_how_many_and_no_field_value(client, db_path):
    api = Api(client=client)
    a, b = Device(api, "hw", "dev-a"), Device(api, "sup", "dev-b")
    record = concurrent_edit(a, b, "household", "QN.LM.03", household(), "head_name",
                             SECRET + " A", SECRET + " B")
    a.pull()
    sup = api.login("sup", "dev-sup")
    [conflict] = api.json("GET", "/api/v1/conflicts", sup)[1]["conflicts"]
    assert api.json("POST", f"/api/v1/conflicts/{conflict['id']}/resolve", sup,
                    {"value": SECRET + " C"})[0] == 200
    assert api.call("GET", "/api/v1/exports/household.csv", sup)[0] == 200
    assert api.call("POST", "/api/v1/auth/logout", a.token)[0] == 200
    run_cli(db_path, "user", "add", "newbie", "--role", "health_worker", "--area",
            "QN.LM.03", input="newbie-pass-1\n")
    run_cli(db_path, "user", "disable", "newbie")

    rows = _audit(db_path)
    assert SECRET not in json.dumps(rows, ensure_ascii=False)
    assert record not in json.dumps([d for _, action, d in rows if action != "conflict_resolve"])
    by_action = {}
    for user, action, details in rows:
        by_action.setdefault(action, []).append((user, details))
    pushes = by_action["push"]
    assert ("hw", {"device_id": "dev-a", "batch_id": pushes[0][1]["batch_id"], "records": 1,
                   "applied": 1, "unchanged": 0, "conflict": 0, "rejected": 0,
                   "forbidden": 0}) == pushes[0]
    assert pushes[1][0] == "sup" and pushes[1][1]["records"] == 1
    assert ("hw", {"device_id": "dev-a", "records": 1, "more": False}) in by_action["pull"]
    assert by_action["logout"] == [("hw", {"device_id": "dev-a"})]
    assert by_action["conflict_resolve"][0][0] == "sup"
    assert by_action["export"][0][0] == "sup" and by_action["export"][0][1]["rows"] == 1
    assert by_action["user_add"][-1] == ("cli", {"username": "newbie",
                                                 "role": "health_worker",
                                                 "areas": ["QN.LM.03"]})
    assert by_action["user_disable"] == [("cli", {"username": "newbie"})]
    assert {"login", "push", "pull", "logout", "export", "conflict_resolve",
            "user_add", "user_disable"} <= set(by_action)


@pytest.mark.parametrize("sql", ["UPDATE audit SET action = 'nothing'", "DELETE FROM audit",
                                 "UPDATE audit SET details = '{}' WHERE id = 1"])
def test_the_audit_is_append_only(db_path, sql):
    conn = sqlite3.connect(db_path)
    try:
        before = conn.execute("SELECT * FROM audit ORDER BY id").fetchall()
        assert before  # `user add` wrote some
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
        conn.execute("INSERT INTO audit (at, username, action) VALUES ('x', 'y', 'z')")
        assert conn.execute("SELECT * FROM audit ORDER BY id").fetchall()[:-1] == before
    finally:
        conn.close()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_admins_export_the_audit(db_path, tmp_path, fmt):
    out = tmp_path / f"audit.{fmt}"
    done = run_cli(db_path, "audit", "export", "--out", str(out))
    rows = _audit(db_path)
    exported = rows[:-1]  # the export audits itself after writing
    assert rows[-1][:2] == ("cli", "audit_export") and rows[-1][2]["rows"] == len(exported)
    assert f"Wrote {len(exported)} audit rows" in done.stdout
    assert _mode(out) == 0o600
    with open(out, encoding="utf-8", newline="") as f:
        if fmt == "csv":
            read = list(csv.DictReader(f))
            got = [(r["username"] or None, r["action"], json.loads(r["details"])) for r in read]
        else:
            got = [(r["username"], r["action"], r["details"]) for r in map(json.loads, f)]
    assert got == exported and len(got) >= 4  # one user_add per test user at least
    # Never over an existing file.
    assert run_cli(db_path, "audit", "export", "--out", str(out), check=False).returncode != 0

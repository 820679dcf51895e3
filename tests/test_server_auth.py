"""Sign-in, tokens and the login rate limit (in-process app, real SQLite)."""
import sqlite3
import threading
from datetime import timedelta

import pytest
import time_machine

from conftest import USERS, batch, change, hlc_at, household, login, now_ms


def sign_in(client, name="hw", password=None, device="dev-a", **env):
    u = USERS[name]
    return client.post("/api/v1/auth/login", json={
        "username": u["username"], "password": password or u["password"],
        "device_id": device, "app_version": "1.0"}, **env)


def test_login_returns_a_device_token_the_user_and_the_server_clock(client):
    resp = sign_in(client)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["user"] == {"username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]}
    assert body["hlc"].endswith("-server") and len(body["token"]) >= 40
    forms = client.get("/api/v1/forms", headers={"Authorization": "Bearer " + body["token"]})
    assert forms.status_code == 200


def test_tokens_are_stored_hashed_and_passwords_with_argon2id(client, app):
    token = sign_in(client).get_json()["token"]
    conn = sqlite3.connect(app.config["DB"])
    dump = "\n".join(conn.iterdump())
    assert token not in dump
    assert USERS["hw"]["password"] not in dump
    hashes = [r[0] for r in conn.execute("SELECT password_hash FROM users")]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)


def test_token_lifetime_is_30_days_by_default(client):
    token = sign_in(client).get_json()["token"]
    h = {"Authorization": "Bearer " + token}
    with time_machine.travel(timedelta(days=29, hours=23)):
        assert client.get("/api/v1/forms", headers=h).status_code == 200
    with time_machine.travel(timedelta(days=30, minutes=1)):
        resp = client.get("/api/v1/forms", headers=h)
        assert resp.status_code == 401 and resp.get_json()["error"] == "token_expired"


def test_token_lifetime_is_configurable(db_path):
    from server import create_app
    client = create_app({"DB": str(db_path), "TOKEN_LIFETIME_DAYS": 1}).test_client()
    body = sign_in(client).get_json()
    with time_machine.travel(timedelta(days=1, minutes=1)):
        resp = client.get("/api/v1/forms", headers={"Authorization": "Bearer " + body["token"]})
        assert resp.status_code == 401


@pytest.mark.parametrize("header,code", [
    (None, "missing_token"), ("Bearer", "invalid_token"), ("Bearer abc", "invalid_token"),
    ("Token abc", "invalid_token"), ("Bearer " + "a" * 5000, "invalid_token")])
def test_requests_without_a_valid_token_get_401(client, header, code):
    resp = client.get("/api/v1/forms", headers={"Authorization": header} if header else {})
    assert resp.status_code == 401 and resp.get_json()["error"] == code


def test_logout_revokes_only_this_token(client):
    t1, t2 = login(client, "hw", "dev-a"), login(client, "hw", "dev-b")
    assert client.post("/api/v1/auth/logout",
                       headers={"Authorization": "Bearer " + t1}).status_code == 200
    resp = client.get("/api/v1/forms", headers={"Authorization": "Bearer " + t1})
    assert resp.status_code == 401 and resp.get_json()["error"] == "token_revoked"
    assert client.get("/api/v1/forms",
                      headers={"Authorization": "Bearer " + t2}).status_code == 200


def test_disabling_a_user_revokes_all_their_tokens_and_blocks_login(client, app):
    from server import auth
    from server.db import connect
    tokens = [login(client, "hw", d) for d in ("dev-a", "dev-b")]
    auth.disable_user(connect(app.config["DB"]), "hw")
    for t in tokens:
        assert client.get("/api/v1/forms",
                          headers={"Authorization": "Bearer " + t}).status_code == 401
    # The right password gets exactly the wrong password's answer: it must
    # not confirm a disabled account's password (issue 14).
    right, wrong = sign_in(client), sign_in(client, password="wrong-password")
    assert right.status_code == wrong.status_code == 401
    assert right.get_json() == wrong.get_json()
    assert right.get_json()["error"] == "invalid_credentials"


def test_wrong_password_and_unknown_user_get_the_same_401(client):
    a = sign_in(client, password="wrong-password")
    b = client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x" * 9,
                                                "device_id": "dev-a"})
    assert a.status_code == b.status_code == 401
    assert a.get_json() == b.get_json()


@pytest.mark.parametrize("body", [
    {}, {"username": "hw"}, {"username": 5, "password": "x", "device_id": "d"},
    {"username": "hw", "password": "x", "device_id": "Not Valid!"},
    {"username": "hw", "password": "x", "device_id": "dev", "role": "admin"}])
def test_malformed_login_is_400(client, body):
    resp = client.post("/api/v1/auth/login", json=body)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


def test_failed_logins_are_rate_limited_per_username(client):
    for _ in range(5):
        assert sign_in(client, password="wrong-password").status_code == 401
    resp = sign_in(client)  # even the right password waits now
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    # Another user from the same address is not locked out by hw's failures.
    assert sign_in(client, "sup").status_code == 200


def test_failed_logins_are_rate_limited_per_address(db_path):
    from server import create_app
    client = create_app({"DB": str(db_path), "LOGIN_MAX_FAILURES_PER_ADDRESS": 3}).test_client()
    for name in ("hw", "sup", "admin"):
        assert sign_in(client, name, password="wrong-password").status_code == 401
    assert sign_in(client, "hw2").status_code == 429
    other = {"environ_base": {"REMOTE_ADDR": "10.9.9.9"}}
    assert sign_in(client, "hw2", **other).status_code == 200


def test_a_token_revoked_during_a_push_commits_nothing(db_path, monkeypatch):
    """Logout waits for the write lock; the push re-checks its token under it."""
    import sqlite_utils

    from server import create_app
    from server.auth import token_hash
    # A busy timeout far longer than the test: the push waits for the lock
    # however slow the machine, and is never a 503.
    app = create_app({"TESTING": True, "DB": str(db_path), "BUSY_TIMEOUT_MS": 120_000})
    client = app.test_client()
    token = login(client, "hw", "dev-a")
    c = change(household(), hlc=hlc_at(now_ms(), "dev-a"))
    blocker = sqlite3.connect(app.config["DB"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the push will wait for this lock
    result = {}
    # The push thread says when it asks for the write lock (authenticated by
    # then), so the token is revoked only once the push waits on the lock.
    at_lock = threading.Event()
    execute = sqlite_utils.Database.execute

    def watched_execute(db, sql, *args, **kwargs):
        if sql == "BEGIN IMMEDIATE" and threading.current_thread() is thread:
            at_lock.set()
        return execute(db, sql, *args, **kwargs)

    monkeypatch.setattr(sqlite_utils.Database, "execute", watched_execute)

    def run():
        result["resp"] = app.test_client().post(
            "/api/v1/sync/push", json=batch("dev-a", [c]),
            headers={"Authorization": "Bearer " + token})

    thread = threading.Thread(target=run)
    thread.start()
    assert at_lock.wait(60), "the push never asked for the write lock"
    assert "resp" not in result  # it cannot have it: the blocker holds it
    blocker.execute("UPDATE tokens SET revoked_at = 'now' WHERE token_hash = ?",
                    [token_hash(token)])
    blocker.execute("COMMIT")
    thread.join(60)
    assert not thread.is_alive()
    resp = result["resp"]
    assert resp.status_code == 401 and resp.get_json()["error"] == "token_revoked"
    assert blocker.execute("SELECT count(*) FROM records").fetchone()[0] == 0
    assert blocker.execute("SELECT count(*) FROM batches").fetchone()[0] == 0


def test_a_locked_database_is_503_with_retry_after_and_nothing_acknowledged(db_path):
    from server import create_app
    app = create_app({"DB": str(db_path), "BUSY_TIMEOUT_MS": 200})
    client = app.test_client()
    token = login(client, "hw", "dev-a")
    h = {"Authorization": "Bearer " + token}
    body = batch("dev-a", [change(household(), hlc=hlc_at(now_ms(), "dev-a"))])
    blocker = sqlite3.connect(app.config["DB"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    resp = client.post("/api/v1/sync/push", json=body, headers=h)
    assert resp.status_code == 503 and resp.headers["Retry-After"].isdigit()
    assert resp.get_json()["error"] == "unavailable"
    blocker.execute("ROLLBACK")
    assert blocker.execute("SELECT count(*) FROM records").fetchone()[0] == 0
    resp = client.post("/api/v1/sync/push", json=body, headers=h)  # the same batch again
    assert resp.status_code == 200 and resp.get_json()["results"][0]["status"] == "applied"


def test_a_full_disk_is_503_and_nothing_is_acknowledged(db_path):
    """SQLITE_FULL mid-batch: the page limit stands in for a full disk."""
    from server import create_app
    app = create_app({"DB": str(db_path)})
    client = app.test_client()
    h = {"Authorization": "Bearer " + login(client, "hw", "dev-a")}
    conn = sqlite3.connect(db_path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    from server import db as dbmod
    real_connect = dbmod.connect

    def tiny(path, busy_timeout_ms=5000):
        db = real_connect(path, busy_timeout_ms)
        db.execute(f"PRAGMA max_page_count = {pages + 2}")
        return db

    real_take_idle = dbmod._take_idle
    dbmod.connect = tiny
    dbmod._take_idle = lambda *args: None  # a new connection, through `tiny`
    try:
        big = [change(household(address_detail="x" * 190), hlc=hlc_at(now_ms(), "dev-a"))
               for _ in range(200)]
        resp = client.post("/api/v1/sync/push", json=batch("dev-a", big), headers=h)
    finally:
        dbmod.connect, dbmod._take_idle = real_connect, real_take_idle
    assert resp.status_code == 503, resp.get_json()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

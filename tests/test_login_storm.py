"""A login storm cannot take the server's threads (issue 14, many devices).

Each password check is argon2id (64 MiB, ~0.1 s of CPU). A worker runs at
most `LOGIN_CONCURRENCY` at once and a sign-in waits `LOGIN_WAIT_SECONDS`
for a slot, then gets 503 `unavailable` with `Retry-After` from
`RETRY_AFTER_SECONDS`; that refusal stores and counts nothing, so it never
brings a user nearer their lock-out (server/auth.py `password_check_slot`).
"""
import re
import sqlite3
import threading
import time

import requests

from conftest import USERS, ServerProcess, free_port

RETRY = 7


def _failures(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return dict(conn.execute("SELECT key, count(*) FROM login_failures GROUP BY key"))
    finally:
        conn.close()


def _login_body(name, device_id, password=None):
    return {"username": name, "password": password or USERS[name]["password"],
            "device_id": device_id, "app_version": "test"}


def _all_slots(app):
    """Take every password-check slot of `app`, as checks in flight would."""
    from server.auth import login_slots
    slots = login_slots(app)
    held = 0
    while slots.acquire(blocking=False):
        held += 1
    return slots, held


def test_a_sign_in_without_a_free_slot_gets_503_and_counts_nothing(app, client, db_path):
    app.config.update(RETRY_AFTER_SECONDS=RETRY, LOGIN_WAIT_SECONDS=0.01)
    wrong = client.post("/api/v1/auth/login", json=_login_body("hw", "dev-a", "wrong-pass"))
    assert wrong.status_code == 401
    before = _failures(db_path)
    assert before == {"user:hw": 1, "addr:127.0.0.1": 1}
    slots, held = _all_slots(app)
    assert held == app.config["LOGIN_CONCURRENCY"] == 2
    try:
        for password in ("wrong-pass", None):
            resp = client.post("/api/v1/auth/login", json=_login_body("hw", "dev-a", password))
            assert resp.status_code == 503, resp.get_json()
            assert resp.headers["Retry-After"] == str(RETRY)
            assert resp.get_json()["error"] == "unavailable"
            assert resp.get_json()["details"] == {"retry_after": RETRY}
        # The console's sign-in shares the check, and says so in its page.
        form = client.get("/sign-in").text
        page = client.post("/sign-in", data={
            "username": "sup", "password": USERS["sup"]["password"],
            "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', form)[1]})
        assert page.status_code == 503 and page.headers["Retry-After"] == str(RETRY)
        assert "đang bận" in page.text   # the console's default language
        assert _failures(db_path) == before
    finally:
        for _ in range(held):
            slots.release()
    ok = client.post("/api/v1/auth/login", json=_login_body("hw", "dev-a"))
    assert ok.status_code == 200
    assert _failures(db_path) == {"addr:127.0.0.1": 1}   # the user's count is cleared


def test_a_burst_of_parallel_logins_leaves_pulls_answering_and_counts_right(
        db_path, tmp_path, monkeypatch, capsys):
    """The real server (2 workers × 4 threads): 40 right and 24 wrong
    passwords at once, and a pull in the middle of them."""
    monkeypatch.setenv("FIELDSYNC_RETRY_AFTER_SECONDS", str(RETRY))
    # No wait for a slot: a worker's third check at once is refused, so the
    # burst is bound to meet the limit whatever this machine's speed.
    monkeypatch.setenv("FIELDSYNC_LOGIN_WAIT_SECONDS", "0")
    # The lock-out stays out of the way: what is checked is its count.
    monkeypatch.setenv("FIELDSYNC_LOGIN_MAX_FAILURES_PER_USER", "1000")
    monkeypatch.setenv("FIELDSYNC_LOGIN_MAX_FAILURES_PER_ADDRESS", "1000")
    srv = ServerProcess(db=db_path, port=free_port(), log=tmp_path / "server.log").start()
    try:
        token = srv.login("hw", "dev-puller")
        rights = [("hw", f"storm-{i:02d}", None) for i in range(40)]
        wrongs = [("sup", f"storm-sup-{i:02d}", "not-the-password") for i in range(24)]
        attempts = rights + wrongs
        answers = [None] * len(attempts)
        go = threading.Barrier(len(attempts) + 1)

        def sign_in(k, name, device_id, password):
            go.wait()
            try:
                answers[k] = requests.post(srv.url + "/api/v1/auth/login", timeout=60,
                                           json=_login_body(name, device_id, password))
            except requests.RequestException as exc:
                answers[k] = exc

        threads = [threading.Thread(target=sign_in, args=(k, *a), daemon=True)
                   for k, a in enumerate(attempts)]
        for t in threads:
            t.start()
        go.wait()
        began = time.monotonic()
        pull = requests.get(srv.url + "/api/v1/sync/pull", timeout=60,
                            headers={"Authorization": "Bearer " + token})
        pull_ms = (time.monotonic() - began) * 1000
        for t in threads:
            t.join(120)
        assert pull.status_code == 200, pull.text[:300]
        statuses = {}
        for (name, _, password), resp in zip(attempts, answers):
            assert isinstance(resp, requests.Response), resp
            statuses.setdefault((name, password is None), []).append(resp.status_code)
            if resp.status_code == 503:
                assert resp.headers["Retry-After"] == str(RETRY)
                assert resp.json()["error"] == "unavailable"
        right, wrong = statuses[("hw", True)], statuses[("sup", False)]
        assert set(right) <= {200, 503} and set(wrong) <= {401, 503}, statuses
        refused = right.count(503) + wrong.count(503)
        with capsys.disabled():
            print(f"\nlogin storm: {len(attempts)} at once -> {right.count(200)} signed in, "
                  f"{wrong.count(401)} wrong, {refused} told to retry; pull {pull_ms:.0f} ms")
        assert refused > 0, "the burst never met the bound on password checks"
        # Only the checked wrong passwords count; the refused ones do not.
        counts = _failures(db_path)
        assert counts.get("user:sup", 0) == wrong.count(401)
        assert counts.get("addr:127.0.0.1", 0) == wrong.count(401)
        assert "user:hw" not in counts
        conn = sqlite3.connect(db_path)
        try:
            issued = conn.execute("SELECT count(*) FROM tokens WHERE device_id LIKE 'storm-%'"
                                  ).fetchone()[0]
        finally:
            conn.close()
        assert issued == right.count(200)
    finally:
        srv.stop()


def test_the_device_library_waits_out_the_503_and_signs_in(db_path, tmp_path, monkeypatch):
    """Six devices sign in at once through `Client.login` on a server with one
    password check per worker and no wait: some meet a 503, wait its
    Retry-After and retry, and every one signs in."""
    from client_sync import Client, NetworkConfig

    monkeypatch.setenv("FIELDSYNC_LOGIN_CONCURRENCY", "1")
    monkeypatch.setenv("FIELDSYNC_LOGIN_WAIT_SECONDS", "0")
    monkeypatch.setenv("FIELDSYNC_RETRY_AFTER_SECONDS", "1")
    monkeypatch.delenv("FIELDSYNC_PASSPHRASE", raising=False)
    log = tmp_path / "server.log"
    srv = ServerProcess(db=db_path, port=free_port(), log=log).start()
    network = NetworkConfig(give_up_after=60, connect_timeout=5, read_timeout=30,
                            backoff_factor=0, backoff_jitter=0)
    try:
        go = threading.Barrier(6)
        users = []

        def sign_in(k):
            with Client(tmp_path / f"dev{k}", network) as device:
                go.wait()
                try:
                    users.append(device.login(srv.url, "hw", USERS["hw"]["password"]))
                except Exception as exc:  # reported below, never swallowed
                    users.append(exc)

        threads = [threading.Thread(target=sign_in, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        srv.stop()
    assert [u["username"] if isinstance(u, dict) else u for u in users] == ["hw"] * 6
    refused = log.read_text().count('"POST /api/v1/auth/login" 503')
    assert refused > 0, "no sign-in met the bound: the retry was not exercised"
    assert _failures(db_path) == {}


def test_the_device_spreads_its_retries_after_a_503_over_as_long_again(monkeypatch):
    """A storm's devices are all told the same Retry-After: each waits at
    least that long, and the waits are spread over [R, 2R] rather than all
    ending in the same instant (with jitter off, tests get exactly R)."""
    import urllib3
    from client_sync import transport

    waits = []
    monkeypatch.setattr(transport.time, "sleep", waits.append)
    answer = urllib3.HTTPResponse(status=503, headers={"Retry-After": "4"})
    for _ in range(200):
        transport.DeadlineRetry(total=5, backoff_jitter=0.5, status_forcelist=[503],
                                respect_retry_after_header=True).sleep(answer)
    assert len(waits) == 200 and all(4.0 <= w <= 8.0 for w in waits)
    assert min(waits) < 5.0 and max(waits) > 7.0          # spread over the window
    assert len({round(w, 3) for w in waits}) > 150
    waits.clear()
    transport.DeadlineRetry(total=5, backoff_jitter=0, status_forcelist=[503],
                            respect_retry_after_header=True).sleep(answer)
    assert waits == [4.0]

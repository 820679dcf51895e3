"""Tests written to kill mutants of server/auth.py (docs/mutation.md, "Auth
run"): tokens, passwords, sign-in and its rate limits, device ownership,
`require_auth`, and the user administration the CLI and the console call.

Every expectation is written out by hand from DESIGN.md and the README: a
token is kept as its SHA-256 and lives 30 days; a disabled account, an
unknown user and a wrong password get one answer; five failures for a user
(twenty for an address) within 900 s give 429 with `Retry-After`; a device
belongs to the first user who signs in on it. Times are frozen
(time_machine) so stored moments and window edges are exact.

Fast on purpose (mutmut runs these for every auth mutant): one small
database per module, copied per test, whose users' password hashes are
argon2id at the cheapest parameters (argon2 verifies with the parameters
stored in the hash), so a sign-in costs milliseconds. Only the tests of
`hash_password` itself pay for the real profile.
"""
import hashlib
import json
import sqlite3
import threading
from datetime import datetime, timezone

import pytest
import time_machine
from argon2 import PasswordHasher
from flask import g, jsonify

from conftest import USERS, copy_db
from server import auth, create_app
from server.db import connect
from server.errors import ApiError

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
OFF_PASSWORD = "off-pass-123"  # the right password of "off", a disabled account
NOW = datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=timezone.utc)
NOW_ISO = "2026-03-01T08:00:00.123Z"
T = NOW.timestamp()  # time.time() while frozen
EARLIER = "2026-02-01T00:00:00.000Z"
LATER = "2099-01-01T00:00:00.000Z"
ADDR = "10.0.0.1"
AUDIT_FLOOR = None  # set by base_db

WRONG = {"error": "invalid_credentials", "message": "Wrong username or password.",
         "details": {}}
LIMITED_MESSAGE = "Too many failed sign-ins; wait a few minutes and try again."
BUSY_MESSAGE = ("The server is busy checking other sign-ins; nothing was changed. "
                "Try again in a few seconds.")
TAKEN_MESSAGE = ("This device is registered to another user. An administrator must "
                 "release it first (fieldsync-server device release DEVICE_ID); until "
                 "then, sign in on your own device.")
BEARER = {"WWW-Authenticate": "Bearer"}
MISSING = "Sign in first: this endpoint needs 'Authorization: Bearer <token>'."
MALFORMED = "The Authorization header must be 'Bearer <token>'."
UNKNOWN = "Unknown token; sign in again."
REVOKED = "This sign-in was revoked; sign in again."
EXPIRED = "This sign-in has expired; sign in again."
NEEDS_AREA = "A health worker or supervisor needs at least one --area."


@pytest.fixture(scope="module")
def base_db(template_db, tmp_path_factory):
    """The template's users with cheap hashes, and "off", a disabled worker."""
    path = copy_db(template_db, tmp_path_factory.mktemp("auth") / "base.db")
    conn = sqlite3.connect(path)
    for u in USERS.values():
        conn.execute("UPDATE users SET password_hash = ? WHERE username = ?",
                     [CHEAP.hash(u["password"]), u["username"]])
    conn.execute("INSERT INTO users (username, password_hash, role, areas, disabled, "
                 "created_at) VALUES ('off', ?, 'health_worker', '[\"QN.LM.04\"]', 1, ?)",
                 [CHEAP.hash(OFF_PASSWORD), EARLIER])
    conn.commit()
    # The template's own audit rows (its `user add`s) are not this test's.
    global AUDIT_FLOOR
    AUDIT_FLOOR = conn.execute("SELECT max(id) FROM audit").fetchone()[0]
    conn.close()
    return path


def make_app(base_db, tmp_path, **config):
    path = copy_db(base_db, tmp_path / "fieldsync.db")
    return create_app({"TESTING": True, "DB": str(path), **config})


@pytest.fixture
def app(base_db, tmp_path):
    return make_app(base_db, tmp_path)


@pytest.fixture
def db(app):
    """A connection of its own, inside the app's context (the settings)."""
    with app.app_context():
        conn = connect(app.config["DB"])
        yield conn
        conn.conn.close()


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def sha(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def uid(db, name):
    return db.execute("SELECT id FROM users WHERE username = ?", [name]).fetchone()[0]


def add_token(db, name, token, device="dev-a", expires=LATER, revoked=None):
    db.execute("INSERT INTO tokens (token_hash, user_id, device_id, created_at, expires_at, "
               "revoked_at) VALUES (?, ?, ?, ?, ?, ?)",
               [sha(token), uid(db, name), device, EARLIER, expires, revoked])


def revoked_at(db, token):
    return db.execute("SELECT revoked_at FROM tokens WHERE token_hash = ?",
                      [sha(token)]).fetchone()[0]


def failures(db):
    return sorted(db.execute("SELECT key, at FROM login_failures").fetchall())


def add_failures(db, key, *ats):
    for at in ats:
        db.execute("INSERT INTO login_failures (key, at) VALUES (?, ?)", [key, at])


def audits(db, action):
    return [(r[0], json.loads(r[1])) for r in db.execute(
        "SELECT username, details FROM audit WHERE action = ? AND id > ? ORDER BY id",
        [action, AUDIT_FLOOR])]


def user_row(db, name):
    row = db.execute("SELECT username, role, areas, disabled FROM users WHERE username = ?",
                     [name]).fetchone()
    return row and (row[0], row[1], json.loads(row[2]), row[3])


def raised(call, *args, **kwargs):
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    e = info.value
    return e.code, e.status, e.message, e.details, e.headers


# -- tokens and passwords -------------------------------------------------------

def test_a_token_is_kept_as_the_hex_sha256_of_its_utf8_text():
    assert auth.token_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert auth.token_hash("é") == hashlib.sha256(b"\xc3\xa9").hexdigest()


def test_passwords_are_argon2id_with_the_rfc_9106_low_memory_profile():
    stored = auth.hash_password("correct horse")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert auth.verify_password(stored, "correct horse") is True
    assert auth.verify_password(stored, "correct horsf") is False


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=8,t=1,p=1$broken"])
def test_a_damaged_stored_hash_is_a_wrong_password_not_an_error(stored):
    assert auth.verify_password(stored, "anything") is False


# -- user administration (the CLI and the console) ------------------------------

def test_users_are_listed_by_name_with_their_role_areas_and_state(db):
    listed = auth.list_users(db)
    assert [(u["username"], u["role"], u["areas"], u["disabled"]) for u in listed] == [
        ("admin", "admin", [], False), ("hw", "health_worker", ["QN.LM.03"], False),
        ("hw2", "health_worker", ["QN.TB.01"], False), ("off", "health_worker",
                                                          ["QN.LM.04"], True),
        ("sup", "supervisor", ["QN.LM"], False)]
    assert all(set(u) == {"id", "username", "role", "areas", "disabled"} for u in listed)
    assert [u["disabled"] for u in listed].count(True) == 1
    assert auth.get_user(db, "off") == {"id": uid(db, "off"), "username": "off",
                                        "role": "health_worker", "areas": ["QN.LM.04"],
                                        "disabled": True}
    assert auth.get_user(db, "hw")["disabled"] is False
    assert auth.get_user(db, "nobody") is None


def test_an_audit_row_has_the_time_the_user_the_action_and_json_details(db, frozen):
    auth.audit(db, "sup", "looked")
    auth.audit(db, None, "exported", {"rows": 3})
    rows = db.execute("SELECT at, username, action, details FROM audit "
                      "WHERE action IN ('looked', 'exported') ORDER BY id").fetchall()
    assert rows == [(NOW_ISO, "sup", "looked", "{}"),
                    (NOW_ISO, None, "exported", '{"rows": 3}')]


NAME64 = "Mai.Le_2@tram-" + "x" * 50


def test_add_user_stores_the_user_its_areas_once_and_an_argon2id_hash(db, frozen):
    auth.add_user(db, NAME64, "12345678", "health_worker",
                  ["QN.LM.03", "QN.LM.04", "QN.LM.03"], by="cli")
    row = db.execute("SELECT role, areas, disabled, created_at, password_hash FROM users "
                     "WHERE username = ?", [NAME64]).fetchone()
    assert row[:4] == ("health_worker", '["QN.LM.03", "QN.LM.04"]', 0, NOW_ISO)
    assert row[4].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().verify(row[4], "12345678")
    assert audits(db, "user_add") == [("cli", {"username": NAME64, "role": "health_worker",
                                               "areas": ["QN.LM.03", "QN.LM.04"]})]


def test_an_admin_needs_no_area(db):
    auth.add_user(db, "boss", "admin-pass-2", "admin", [])
    assert user_row(db, "boss") == ("boss", "admin", [], 0)
    assert audits(db, "user_add") == [(None, {"username": "boss", "role": "admin",
                                              "areas": []})]


@pytest.mark.parametrize("name,password,role,areas,message", [
    ("", "12345678", "admin", [], "A username is 1-64 letters, digits or _ . @ -."),
    (None, "12345678", "admin", [], "A username is 1-64 letters, digits or _ . @ -."),
    ("x" * 65, "12345678", "admin", [], "A username is 1-64 letters, digits or _ . @ -."),
    ("mai le", "12345678", "admin", [], "A username is 1-64 letters, digits or _ . @ -."),
    ("mai", "12345678", "boss", [],
     "Unknown role 'boss'; use one of health_worker, supervisor, admin."),
    ("mai", "12345678", "health_worker", ["QN.LM.03", "qn.lm", "QN..X"],
     "Not an area code: 'qn.lm' (expected e.g. QN.LM.03)."),
    ("mai", "12345678", "supervisor", ["QN."], "Not an area code: 'QN.' "
     "(expected e.g. QN.LM.03)."),
    ("mai", "12345678", "health_worker", [], NEEDS_AREA),
    ("mai", "12345678", "supervisor", [], NEEDS_AREA),
    ("mai", "1234567", "admin", [], "A password needs at least 8 characters."),
    ("mai", None, "admin", [], "A password needs at least 8 characters."),
    ("hw", "12345678", "admin", [], "User 'hw' already exists."),
])
def test_add_user_refuses_with_a_message_naming_what_is_wrong(db, name, password, role,
                                                              areas, message):
    before = db.execute("SELECT count(*) FROM users").fetchone()[0]
    with pytest.raises(auth.UserError) as info:
        auth.add_user(db, name, password, role, areas)
    assert str(info.value) == message
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == before
    assert audits(db, "user_add") == []


@pytest.mark.parametrize("change", ["disable_user", "enable_user", "unlock_user",
                                    "set_password", "set_scope", "revoke_device"])
def test_changing_an_unknown_user_names_them(db, change):
    args = {"set_password": ("ghost", "12345678"), "revoke_device": ("ghost", "dev-a")}
    with pytest.raises(auth.UserError) as info:
        getattr(auth, change)(db, *args.get(change, ("ghost",)))
    assert str(info.value) == "No user 'ghost'."
    assert db.execute("SELECT count(*) FROM audit WHERE id > ?",
                      [AUDIT_FLOOR]).fetchone()[0] == 0


def test_disable_revokes_every_live_token_of_that_user_only(db, frozen):
    add_token(db, "hw", "hw-a", "dev-a")
    add_token(db, "hw", "hw-b", "dev-b")
    add_token(db, "hw", "hw-old", "dev-a", revoked=EARLIER)
    add_token(db, "sup", "sup-a", "dev-s")
    auth.disable_user(db, "hw", by="admin")
    assert user_row(db, "hw")[3] == 1 and user_row(db, "sup")[3] == 0
    assert [revoked_at(db, t) for t in ("hw-a", "hw-b", "hw-old", "sup-a")] == [
        NOW_ISO, NOW_ISO, EARLIER, None]
    assert audits(db, "user_disable") == [("admin", {"username": "hw"})]


def test_enable_lets_the_user_sign_in_again_but_keeps_tokens_revoked(db, frozen):
    add_token(db, "off", "off-a", revoked=EARLIER)
    auth.enable_user(db, "off", by="admin")
    assert user_row(db, "off")[3] == 0 and user_row(db, "hw")[3] == 0
    assert revoked_at(db, "off-a") == EARLIER
    assert audits(db, "user_enable") == [("admin", {"username": "off"})]
    assert auth.check_credentials(db, "off", OFF_PASSWORD, ADDR)["username"] == "off"


def test_revoke_device_revokes_that_users_live_tokens_on_that_device(db, frozen):
    add_token(db, "hw", "a1", "dev-a")
    add_token(db, "hw", "a2", "dev-a")
    add_token(db, "hw", "a-old", "dev-a", revoked=EARLIER)
    add_token(db, "hw", "b1", "dev-b")
    add_token(db, "sup", "s1", "dev-a")
    assert auth.revoke_device(db, "hw", "dev-a", by="sup") == 2
    assert [revoked_at(db, t) for t in ("a1", "a2", "a-old", "b1", "s1")] == [
        NOW_ISO, NOW_ISO, EARLIER, None, None]
    assert audits(db, "device_revoke") == [("sup", {"username": "hw", "device_id": "dev-a"})]
    assert auth.revoke_device(db, "hw", "dev-a") == 0


def test_set_password_replaces_the_hash_and_revokes_the_users_tokens(db, frozen):
    add_token(db, "hw", "hw-a")
    add_token(db, "sup", "sup-a")
    auth.set_password(db, "hw", "new-pass-1", by="admin")
    stored = db.execute("SELECT password_hash FROM users WHERE username = 'hw'").fetchone()[0]
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().verify(stored, "new-pass-1")
    assert not auth.verify_password(stored, USERS["hw"]["password"])
    assert [revoked_at(db, t) for t in ("hw-a", "sup-a")] == [NOW_ISO, None]
    assert audits(db, "user_passwd") == [("admin", {"username": "hw"})]


def test_set_password_refuses_a_short_one_and_changes_nothing(db):
    add_token(db, "hw", "hw-a")
    with pytest.raises(auth.UserError) as info:
        auth.set_password(db, "hw", "1234567")
    assert str(info.value) == "A password needs at least 8 characters."
    assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)["username"] == "hw"
    assert revoked_at(db, "hw-a") is None and audits(db, "user_passwd") == []


def test_set_scope_changes_the_role_or_the_areas_and_keeps_tokens(db):
    add_token(db, "hw", "hw-a")
    assert auth.set_scope(db, "hw", "supervisor", by="admin") == ("supervisor", ["QN.LM.03"])
    assert user_row(db, "hw") == ("hw", "supervisor", ["QN.LM.03"], 0)
    assert auth.set_scope(db, "hw", areas=["QN.TB", "QN.LM", "QN.TB"]) == (
        "supervisor", ["QN.TB", "QN.LM"])
    assert user_row(db, "hw") == ("hw", "supervisor", ["QN.TB", "QN.LM"], 0)
    assert auth.set_scope(db, "sup", "admin", []) == ("admin", [])
    assert user_row(db, "sup") == ("sup", "admin", [], 0)
    assert revoked_at(db, "hw-a") is None
    assert audits(db, "user_set") == [
        ("admin", {"username": "hw", "role": "supervisor", "areas": ["QN.LM.03"]}),
        (None, {"username": "hw", "role": "supervisor", "areas": ["QN.TB", "QN.LM"]}),
        (None, {"username": "sup", "role": "admin", "areas": []})]


@pytest.mark.parametrize("name,role,areas,message", [
    ("hw", "boss", None, "Unknown role 'boss'; use one of health_worker, supervisor, admin."),
    ("hw", None, ["QN.LM", "qn"], "Not an area code: 'qn' (expected e.g. QN.LM.03)."),
    ("hw", None, [], NEEDS_AREA),
    ("admin", "health_worker", None, NEEDS_AREA),  # an admin has no area to keep
    ("admin", "supervisor", [], NEEDS_AREA),
])
def test_set_scope_refuses_and_changes_nothing(db, name, role, areas, message):
    before = user_row(db, name)
    with pytest.raises(auth.UserError) as info:
        auth.set_scope(db, name, role, areas)
    assert str(info.value) == message
    assert user_row(db, name) == before and audits(db, "user_set") == []


def test_unlock_forgets_the_users_failures_but_not_the_addresses(db):
    add_failures(db, "user:hw", T - 10, T - 5, T - 1)
    add_failures(db, "user:sup", T - 3)
    add_failures(db, f"addr:{ADDR}", T - 10, T - 5)
    assert auth.unlock_user(db, "hw", by="admin") == 3
    assert failures(db) == [(f"addr:{ADDR}", T - 10), (f"addr:{ADDR}", T - 5),
                            ("user:sup", T - 3)]
    assert audits(db, "user_unlock") == [("admin", {"username": "hw", "failures": 3})]
    assert auth.unlock_user(db, "hw") == 0


def test_clear_failures_forgets_one_users_failures(db):
    add_failures(db, "user:hw", T - 2)
    add_failures(db, "user:hw2", T - 2)
    add_failures(db, "addr:hw", T - 2)
    auth.clear_failures(db, "hw")
    assert failures(db) == [("addr:hw", T - 2), ("user:hw2", T - 2)]


def test_is_locked_counts_the_users_failures_inside_the_window(db, frozen):
    # Exactly 900 s old is outside the window; addresses and others do not count.
    add_failures(db, "user:hw", T - 900, T - 899, T - 500, T - 100, T - 1)
    add_failures(db, "user:sup", T - 1, T - 1)
    add_failures(db, "addr:hw", T - 1)
    assert auth.is_locked(db, "hw") is False
    add_failures(db, "user:hw", T)
    assert auth.is_locked(db, "hw") is True
    assert auth.is_locked(db, "sup") is False


def test_is_locked_follows_the_settings(base_db, tmp_path, frozen):
    app = make_app(base_db, tmp_path, LOGIN_WINDOW_SECONDS=60,
                   LOGIN_MAX_FAILURES_PER_USER=2)
    with app.app_context():
        db = connect(app.config["DB"])
        add_failures(db, "user:hw", T - 61, T - 60, T - 30)
        assert auth.is_locked(db, "hw") is False
        add_failures(db, "user:hw", T - 59)
        assert auth.is_locked(db, "hw") is True


# -- sign-in and its limits ------------------------------------------------------

def test_the_right_password_gives_the_user(db):
    assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR) == {
        "id": uid(db, "hw"), "username": "hw", "role": "health_worker",
        "areas": ["QN.LM.03"], "disabled": False}
    assert failures(db) == []


@pytest.mark.parametrize("name,password", [
    ("hw", "wrong-password"), ("ghost", "whatever-1"), ("off", OFF_PASSWORD),
    ("off", "wrong-password")])
def test_unknown_wrong_or_disabled_get_one_answer_and_count(db, frozen, name, password):
    code, status, message, details, headers = raised(
        auth.check_credentials, db, name, password, ADDR)
    assert {"error": code, "message": message, "details": details} == WRONG
    assert status == 401 and headers == {}
    assert failures(db) == [(f"addr:{ADDR}", T), (f"user:{name}", T)]


def test_an_unknown_user_is_checked_against_a_real_argon2_hash(db, monkeypatch):
    """The dummy check keeps an unknown name as slow as a known one. Made
    afresh here: under mutmut an earlier run in the parent process may have
    made it already, and the code that makes it would then never run."""
    monkeypatch.setattr(auth, "_DUMMY_HASH", None)
    for _ in range(2):
        with pytest.raises(ApiError):
            auth.check_credentials(db, "ghost", "not a password", ADDR)
        assert auth._DUMMY_HASH.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert PasswordHasher().verify(auth._DUMMY_HASH, "not a password")


def test_success_takes_back_the_users_failures_and_its_own_attempt(db, frozen):
    add_failures(db, "user:hw", T - 20, T - 10)
    add_failures(db, f"addr:{ADDR}", T - 20, T - 10)
    add_failures(db, "user:sup", T - 5)
    add_failures(db, "addr:10.0.0.9", T - 5)
    assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)["id"] == uid(db, "hw")
    assert failures(db) == [(f"addr:{ADDR}", T - 20), (f"addr:{ADDR}", T - 10),
                            ("addr:10.0.0.9", T - 5), ("user:sup", T - 5)]


def test_the_fifth_failure_locks_the_user_out_even_with_the_right_password(db, frozen):
    for _ in range(4):
        with pytest.raises(ApiError):
            auth.check_credentials(db, "hw", "wrong-password", ADDR)
    # Four are not yet the limit.
    assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)["username"] == "hw"
    for _ in range(5):
        with pytest.raises(ApiError):
            auth.check_credentials(db, "hw", "wrong-password", ADDR)
    assert raised(auth.check_credentials, db, "hw", USERS["hw"]["password"], "10.0.0.2") == (
        "too_many_attempts", 429, LIMITED_MESSAGE, {"retry_after": 900},
        {"Retry-After": "900"})
    # A refused attempt is not counted; another user is not locked.
    assert [k for k, _ in failures(db)].count("user:hw") == 5
    assert "addr:10.0.0.2" not in {k for k, _ in failures(db)}
    assert auth.check_credentials(db, "sup", USERS["sup"]["password"], ADDR)["username"] == "sup"


def test_twenty_failures_lock_the_address_for_every_user(db, frozen):
    for i in range(20):
        add_failures(db, f"addr:{ADDR}", T - 1)
    add_failures(db, "addr:10.0.0.2", *[T - 1] * 19)
    assert raised(auth.check_credentials, db, "hw", USERS["hw"]["password"], ADDR)[:2] == (
        "too_many_attempts", 429)
    assert auth.check_credentials(db, "hw", USERS["hw"]["password"], "10.0.0.2")["id"]


def test_the_counting_transaction_checks_the_address_limit_itself(db, frozen):
    """`_reserve_attempt` re-checks both limits inside its write transaction:
    a parallel attempt may have reached the address limit after the read
    that `check_credentials` does first."""
    add_failures(db, f"addr:{ADDR}", *[T - 1] * 20)
    assert raised(auth._reserve_attempt, db, "hw", ADDR)[:2] == ("too_many_attempts", 429)
    add_failures(db, "user:sup", *[T - 1] * 5)
    assert raised(auth._reserve_attempt, db, "sup", "10.0.0.2")[:2] == (
        "too_many_attempts", 429)
    assert len(failures(db)) == 25
    assert len(auth._reserve_attempt(db, "hw2", "10.0.0.2")) == 2
    assert failures(db)[:2] == [(f"addr:{ADDR}", T - 1)] * 2
    assert ("addr:10.0.0.2", T) in failures(db) and ("user:hw2", T) in failures(db)


def test_the_limits_and_the_window_follow_the_settings(base_db, tmp_path, frozen):
    app = make_app(base_db, tmp_path, LOGIN_WINDOW_SECONDS=60,
                   LOGIN_MAX_FAILURES_PER_USER=2, LOGIN_MAX_FAILURES_PER_ADDRESS=3)
    with app.app_context():
        db = connect(app.config["DB"])
        add_failures(db, "user:hw", T - 61, T - 60, T - 59)
        assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)
        add_failures(db, "user:hw", T - 59, T - 1)
        assert raised(auth.check_credentials, db, "hw", USERS["hw"]["password"], ADDR)[1:] == (
            429, LIMITED_MESSAGE, {"retry_after": 60}, {"Retry-After": "60"})
        add_failures(db, "addr:10.0.0.3", T - 59, T - 59)
        assert auth.check_credentials(db, "sup", USERS["sup"]["password"], "10.0.0.3")
        add_failures(db, "addr:10.0.0.3", T - 59)
        assert raised(auth.check_credentials, db, "sup", USERS["sup"]["password"],
                      "10.0.0.3")[:2] == ("too_many_attempts", 429)


def test_failures_at_the_window_edge_neither_count_nor_are_purged(db, frozen):
    """900 s old: outside the window (not counted) but not yet purged."""
    add_failures(db, "user:hw", *[T - 900] * 5)
    add_failures(db, "user:sup", T - 901, T - 900, T - 899)
    assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)["username"] == "hw"
    with pytest.raises(ApiError):
        auth.check_credentials(db, "hw2", "wrong-password", ADDR)
    assert failures(db) == [(f"addr:{ADDR}", T), ("user:hw2", T),
                            ("user:sup", T - 900), ("user:sup", T - 899)]
    add_failures(db, "user:hw", *[T - 899] * 5)
    assert raised(auth.check_credentials, db, "hw", USERS["hw"]["password"], ADDR)[0] == (
        "too_many_attempts")


def test_parallel_wrong_passwords_are_counted_before_any_is_checked(base_db, tmp_path):
    """Issue 14: the check and the count are one transaction, so of twelve
    parallel wrong passwords exactly five are checked, the rest get 429."""
    app = make_app(base_db, tmp_path, LOGIN_CONCURRENCY=12, LOGIN_WAIT_SECONDS=60,
                   BUSY_TIMEOUT_MS=60_000)
    start = threading.Barrier(12)
    statuses = []

    def attempt():
        client = app.test_client()
        start.wait()
        statuses.append(client.post("/api/v1/auth/login", json={
            "username": "hw", "password": "wrong-password", "device_id": "dev-a"}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(statuses) == [401] * 5 + [429] * 7
    conn = sqlite3.connect(app.config["DB"])
    assert conn.execute("SELECT count(*) FROM login_failures WHERE key = 'user:hw'"
                        ).fetchone()[0] == 5


# -- password-check slots --------------------------------------------------------

@pytest.mark.parametrize("setting,slots", [(2, 2), (0, 1), (1, 1), (3, 3)])
def test_a_worker_has_login_concurrency_slots_and_always_one(base_db, tmp_path, setting,
                                                             slots):
    app = make_app(base_db, tmp_path, LOGIN_CONCURRENCY=setting)
    sem = auth.login_slots(app)
    assert auth.login_slots(app) is sem
    taken = 0
    while taken <= slots and sem.acquire(blocking=False):
        taken += 1
    assert taken == slots
    for _ in range(taken):
        sem.release()


def test_no_free_slot_is_503_and_counts_nothing(base_db, tmp_path, frozen):
    app = make_app(base_db, tmp_path, LOGIN_CONCURRENCY=1, LOGIN_WAIT_SECONDS=0,
                   RETRY_AFTER_SECONDS=7)
    sem = auth.login_slots(app)
    assert sem.acquire(blocking=False)
    with app.app_context():
        db = connect(app.config["DB"])
        assert raised(auth.check_credentials, db, "hw", USERS["hw"]["password"], ADDR) == (
            "unavailable", 503, BUSY_MESSAGE, {"retry_after": 7}, {"Retry-After": "7"})
        assert failures(db) == []
        # A user already at the limit is refused at once, with no slot.
        add_failures(db, "user:sup", *[T] * 5)
        assert raised(auth.check_credentials, db, "sup", "x", ADDR)[:2] == (
            "too_many_attempts", 429)
        add_failures(db, "addr:10.0.0.5", *[T] * 20)
        assert raised(auth.check_credentials, db, "hw2", "x", "10.0.0.5")[:2] == (
            "too_many_attempts", 429)
        sem.release()
        # The slot is given back after a failure and after a success.
        with pytest.raises(ApiError):
            auth.check_credentials(db, "hw", "wrong-password", ADDR)
        assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)
        assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)
    assert sem.acquire(blocking=False)
    sem.release()


def test_a_sign_in_waits_for_a_slot_up_to_login_wait_seconds(base_db, tmp_path):
    app = make_app(base_db, tmp_path, LOGIN_CONCURRENCY=1, LOGIN_WAIT_SECONDS=1)

    class FreedWhileWaiting:
        """The only slot is taken; another sign-in gives it back while this
        one waits, and only a sign-in that waits gets it (no timer, so no
        race with a loaded machine)."""

        def __init__(self):
            self.sem = threading.BoundedSemaphore(1)
            assert self.sem.acquire(blocking=False)

        def acquire(self, blocking=True, timeout=None):
            if blocking and (timeout is None or timeout > 0):
                self.sem.release()
            return self.sem.acquire(blocking=False)

        def release(self):
            self.sem.release()

    app.extensions["fieldsync_login_slots"] = FreedWhileWaiting()
    with app.app_context():
        db = connect(app.config["DB"])
        assert auth.check_credentials(db, "hw", USERS["hw"]["password"], ADDR)


# -- login: tokens and device ownership -----------------------------------------

def test_login_issues_a_device_token_that_lives_30_days(db, frozen):
    token, expires, user = auth.login(db, "hw", USERS["hw"]["password"], "dev-a", "1.2", ADDR)
    assert len(token) == 43 and set(token) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert expires == "2026-03-31T08:00:00.123Z"
    assert user == {"id": uid(db, "hw"), "username": "hw", "role": "health_worker",
                    "areas": ["QN.LM.03"], "disabled": False}
    assert db.execute("SELECT * FROM tokens").fetchall() == [
        (sha(token), uid(db, "hw"), "dev-a", NOW_ISO, "2026-03-31T08:00:00.123Z", None)]
    assert db.execute("SELECT device_id, username, app_version FROM devices").fetchall() == [
        ("dev-a", "hw", "1.2")]
    assert audits(db, "login") == [("hw", {"device_id": "dev-a"})]
    # Signing in again on it: a second token, the app version updated.
    token2 = auth.login(db, "hw", USERS["hw"]["password"], "dev-a", "1.3", ADDR)[0]
    assert token2 != token
    assert db.execute("SELECT count(*) FROM tokens WHERE revoked_at IS NULL").fetchone()[0] == 2
    assert db.execute("SELECT device_id, username, app_version FROM devices").fetchall() == [
        ("dev-a", "hw", "1.3")]


def test_the_token_lifetime_is_a_setting(base_db, tmp_path, frozen):
    app = make_app(base_db, tmp_path, TOKEN_LIFETIME_DAYS=2)
    with app.app_context():
        db = connect(app.config["DB"])
        assert auth.login(db, "hw", USERS["hw"]["password"], "dev-a", None, ADDR)[1] == (
            "2026-03-03T08:00:00.123Z")


def test_a_device_belongs_to_the_first_user_until_released(db, frozen):
    auth.login(db, "hw", USERS["hw"]["password"], "dev-a", "1.0", ADDR)
    assert raised(auth.login, db, "sup", USERS["sup"]["password"], "dev-a", "1.0", ADDR) == (
        "device_taken", 409, TAKEN_MESSAGE, {"device_id": "dev-a"}, {})
    assert db.execute("SELECT count(*) FROM tokens WHERE user_id = ?",
                      [uid(db, "sup")]).fetchone()[0] == 0
    assert db.execute("SELECT username, app_version FROM devices").fetchall() == [("hw", "1.0")]
    assert audits(db, "login_refused") == [("sup", {"device_id": "dev-a",
                                                    "reason": "device_taken"})]
    assert [u for u, _ in audits(db, "login")] == ["hw"]
    assert auth.release_device(db, "dev-a", by="admin") == "hw"
    auth.login(db, "sup", USERS["sup"]["password"], "dev-a", "2.0", ADDR)
    assert db.execute("SELECT username, app_version FROM devices").fetchall() == [
        ("sup", "2.0")]
    assert raised(auth.login, db, "hw", USERS["hw"]["password"], "dev-a", "1.0", ADDR)[0] == (
        "device_taken")


def test_a_device_known_without_an_owner_is_free(db):
    db.execute("INSERT INTO devices (device_id, username, app_version) VALUES "
               "('dev-n', NULL, '0.9')")
    auth.login(db, "hw2", USERS["hw2"]["password"], "dev-n", "1.0", ADDR)
    assert db.execute("SELECT username, app_version FROM devices").fetchall() == [
        ("hw2", "1.0")]


def test_release_device_revokes_its_tokens_and_forgets_its_owner_and_rejections(db, frozen):
    add_token(db, "hw", "a1", "dev-a")
    add_token(db, "hw", "a2", "dev-a")
    add_token(db, "hw", "a-old", "dev-a", revoked=EARLIER)
    add_token(db, "hw", "b1", "dev-b")
    db.execute("INSERT INTO devices (device_id, username) VALUES ('dev-a', 'hw'), "
               "('dev-b', 'hw')")
    for device in ("dev-a", "dev-b"):
        db.execute("INSERT INTO rejections (device_id, record_id, status, at) VALUES "
                   "(?, 'r1', 'rejected', ?)", [device, EARLIER])
    assert auth.release_device(db, "dev-a", by="admin") == "hw"
    assert [revoked_at(db, t) for t in ("a1", "a2", "a-old", "b1")] == [
        NOW_ISO, NOW_ISO, EARLIER, None]
    assert db.execute("SELECT device_id, username FROM devices ORDER BY device_id"
                      ).fetchall() == [("dev-a", None), ("dev-b", "hw")]
    assert db.execute("SELECT device_id FROM rejections").fetchall() == [("dev-b",)]
    assert audits(db, "device_release") == [("admin", {"device_id": "dev-a", "owner": "hw",
                                                       "tokens_revoked": 2})]
    with pytest.raises(auth.UserError) as info:
        auth.release_device(db, "dev-z")
    assert str(info.value) == "No device 'dev-z'."


def test_logout_revokes_only_its_own_live_token(db, frozen):
    add_token(db, "hw", "t1", "dev-a")
    add_token(db, "hw", "t2", "dev-a")
    add_token(db, "hw", "t-old", "dev-b", revoked=EARLIER)
    auth.logout(db, {"username": "hw", "device_id": "dev-a", "token_hash": sha("t1")})
    auth.logout(db, {"username": "hw", "device_id": "dev-b", "token_hash": sha("t-old")})
    assert [revoked_at(db, t) for t in ("t1", "t2", "t-old")] == [NOW_ISO, None, EARLIER]
    assert audits(db, "logout") == [("hw", {"device_id": "dev-a"}),
                                    ("hw", {"device_id": "dev-b"})]


# -- authenticating requests -----------------------------------------------------

def test_a_live_token_gives_its_user_and_device(db):
    add_token(db, "sup", "tok-sup", "dev-s")
    assert auth.authenticate(db, "Bearer tok-sup") == {
        "id": uid(db, "sup"), "username": "sup", "role": "supervisor", "areas": ["QN.LM"],
        "device_id": "dev-s", "token_hash": sha("tok-sup")}


@pytest.mark.parametrize("header", ["bearer tok", "BEARER tok", "Bearer  tok ",
                                    "Bearer " + "t" * 256])
def test_the_scheme_is_case_blind_and_the_token_trimmed_up_to_256(db, header):
    token = header.partition(" ")[2].strip()
    add_token(db, "hw", token)
    assert auth.authenticate(db, header)["token_hash"] == sha(token)


@pytest.mark.parametrize("header,code,message", [
    (None, "missing_token", MISSING), ("", "missing_token", MISSING),
    ("Bearer", "invalid_token", MALFORMED), ("Bearer    ", "invalid_token", MALFORMED),
    ("Basic tok", "invalid_token", MALFORMED), ("Bearertok", "invalid_token", MALFORMED),
    ("Bearer " + "t" * 257, "invalid_token", MALFORMED),
    ("Bearer unknown", "invalid_token", UNKNOWN),
    ("Bearer " + "u" * 256, "invalid_token", UNKNOWN)])
def test_a_missing_malformed_or_unknown_token_is_401(db, header, code, message):
    add_token(db, "hw", "t" * 257)
    assert raised(auth.authenticate, db, header) == (code, 401, message, {}, BEARER)


def test_revoked_disabled_and_expired_tokens_are_401(db, frozen):
    add_token(db, "hw", "revoked", revoked=EARLIER)
    add_token(db, "off", "disabled")
    add_token(db, "hw", "at-now", expires=NOW_ISO)
    add_token(db, "hw", "past-and-revoked", expires=EARLIER, revoked=EARLIER)
    add_token(db, "hw", "next-ms", expires="2026-03-01T08:00:00.124Z")
    assert raised(auth.authenticate, db, "Bearer revoked") == (
        "token_revoked", 401, REVOKED, {}, BEARER)
    assert raised(auth.authenticate, db, "Bearer disabled")[:3] == (
        "token_revoked", 401, REVOKED)
    assert raised(auth.authenticate, db, "Bearer past-and-revoked")[0] == "token_revoked"
    assert raised(auth.authenticate, db, "Bearer at-now") == (
        "token_expired", 401, EXPIRED, {}, BEARER)
    assert auth.authenticate(db, "Bearer next-ms")["username"] == "hw"


def test_token_is_live_rechecks_revocation_disabling_and_expiry(db, frozen):
    add_token(db, "hw", "live", expires="2026-03-01T08:00:00.124Z")
    add_token(db, "hw", "revoked", revoked=EARLIER)
    add_token(db, "off", "disabled")
    add_token(db, "hw", "at-now", expires=NOW_ISO)
    assert auth.token_is_live(db, sha("live")) is True
    for token in ("revoked", "disabled", "at-now", "never-issued"):
        assert auth.token_is_live(db, sha(token)) is False, token


# -- require_auth ----------------------------------------------------------------

def guarded_app(base_db, tmp_path):
    """The real app with three views behind `require_auth`, decorated here."""
    app = make_app(base_db, tmp_path)

    def anyone(word):
        return jsonify(user=g.user, word=word)

    def staff(word):
        return jsonify(user=g.user, word=word)

    def nobody():
        return jsonify(seen=True)

    app.add_url_rule("/t/anyone/<word>", view_func=auth.require_auth()(anyone))
    app.add_url_rule("/t/staff/<word>",
                     view_func=auth.require_auth(roles=("supervisor", "admin"))(staff))
    app.add_url_rule("/t/nobody", view_func=auth.require_auth(roles=[])(nobody))
    with app.app_context():
        db = connect(app.config["DB"])
        for name in ("hw", "sup", "admin"):
            add_token(db, name, "tok-" + name, "dev-" + name)
        db.conn.close()
    return app


def bearer(name):
    return {"Authorization": "Bearer tok-" + name}


def test_require_auth_puts_the_user_on_g_and_passes_the_view_its_arguments(base_db,
                                                                          tmp_path):
    client = guarded_app(base_db, tmp_path).test_client()
    resp = client.get("/t/anyone/xin-chao", headers=bearer("hw"))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["word"] == "xin-chao"
    assert {k: body["user"][k] for k in ("username", "role", "areas", "device_id")} == {
        "username": "hw", "role": "health_worker", "areas": ["QN.LM.03"],
        "device_id": "dev-hw"}
    resp = client.get("/t/anyone/x")
    assert resp.status_code == 401 and resp.get_json() == {
        "error": "missing_token", "message": MISSING, "details": {}}
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_require_auth_with_roles_answers_403_naming_the_role_and_the_allowed(base_db,
                                                                            tmp_path):
    client = guarded_app(base_db, tmp_path).test_client()
    resp = client.get("/t/staff/a", headers=bearer("hw"))
    assert resp.status_code == 403 and resp.get_json() == {
        "error": "forbidden", "message": "Your role may not use this endpoint.",
        "details": {"role": "health_worker", "allowed": ["supervisor", "admin"]}}
    for name in ("sup", "admin"):
        resp = client.get("/t/staff/b", headers=bearer(name))
        assert resp.status_code == 200 and resp.get_json()["user"]["username"] == name
    # An empty list of roles lets nobody in (it is not "no restriction").
    resp = client.get("/t/nobody", headers=bearer("admin"))
    assert resp.status_code == 403 and resp.get_json()["details"] == {
        "role": "admin", "allowed": []}
    # No token is 401 before any role is looked at.
    assert client.get("/t/staff/a").status_code == 401


def test_require_auth_keeps_the_views_name(base_db, tmp_path):
    def the_view():
        """Its docstring."""
    wrapped = auth.require_auth()(the_view)
    assert wrapped.__name__ == "the_view" and wrapped.__doc__ == "Its docstring."
    assert wrapped.__wrapped__ is the_view


# -- through HTTP ---------------------------------------------------------------

def test_the_login_endpoint_answers_token_expiry_user_and_clock(client_app, frozen):
    client, db = client_app
    resp = client.post("/api/v1/auth/login", json={
        "username": "sup", "password": USERS["sup"]["password"], "device_id": "dev-s",
        "app_version": "3.1"})
    body = resp.get_json()
    assert resp.status_code == 200
    assert body["expires_at"] == "2026-03-31T08:00:00.123Z" and len(body["token"]) == 43
    assert body["user"] == {"username": "sup", "role": "supervisor", "areas": ["QN.LM"]}
    assert body["hlc"].endswith("-server")
    h = {"Authorization": "Bearer " + body["token"]}
    assert client.get("/api/v1/forms", headers=h).status_code == 200
    resp = client.post("/api/v1/auth/logout", headers=h)
    assert resp.status_code == 200 and resp.get_json() == {"revoked": True}
    resp = client.get("/api/v1/forms", headers=h)
    assert resp.status_code == 401 and resp.get_json() == {
        "error": "token_revoked", "message": REVOKED, "details": {}}


def test_http_errors_of_sign_in_carry_the_documented_bodies(client_app):
    client, db = client_app
    off = client.post("/api/v1/auth/login", json={
        "username": "off", "password": OFF_PASSWORD, "device_id": "dev-o"})
    assert off.status_code == 401 and off.get_json() == WRONG
    login = {"username": "hw", "password": USERS["hw"]["password"], "device_id": "dev-o"}
    assert client.post("/api/v1/auth/login", json=login).status_code == 200
    taken = client.post("/api/v1/auth/login", json={
        "username": "sup", "password": USERS["sup"]["password"], "device_id": "dev-o"})
    assert taken.status_code == 409 and taken.get_json() == {
        "error": "device_taken", "message": TAKEN_MESSAGE, "details": {"device_id": "dev-o"}}
    for _ in range(5):
        client.post("/api/v1/auth/login", json={**login, "password": "wrong-password"})
    limited = client.post("/api/v1/auth/login", json=login)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "900"
    assert limited.get_json() == {"error": "too_many_attempts", "message": LIMITED_MESSAGE,
                                  "details": {"retry_after": 900}}
    devices = client.get("/api/v1/devices", headers={
        "Authorization": "Bearer " + client.post("/api/v1/auth/login", json={
            "username": "hw2", "password": USERS["hw2"]["password"],
            "device_id": "dev-h2"}).get_json()["token"]})
    assert devices.status_code == 403 and devices.get_json()["details"] == {
        "role": "health_worker", "allowed": ["supervisor", "admin"]}


@pytest.fixture
def client_app(app, db):
    return app.test_client(), db

"""The device library against the real server process over real HTTP: offline
adds land exactly once, concurrent edits merge as DESIGN.md says, refused
records stay visible, a lost login or a dead server loses nothing."""
import json
import signal
import socket
import sqlite3

import pytest
import requests

from client_sync import (ApiError, AuthError, Client, InvalidRecord, NetworkConfig,
                         ServerUnreachable, UserSwitchRefused)
from client_sync.store import uuid7
from conftest import run_cli
from faultproxy import FaultProxy

FAST = NetworkConfig(give_up_after=5, connect_timeout=1, read_timeout=5, backoff_factor=0,
                     backoff_jitter=0)


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))


def household(i=0, **extra):
    return {"head_name": f"Lý A Sáng {i}", "poverty_status": "poor",
            "registered_on": "2025-05-30", "status": "active", **extra}


@pytest.fixture
def device(server_process, tmp_path):
    """Factory: a logged-in device with its own data folder."""
    made = []

    def make(name="d1", user="hw", url=None, network=FAST):
        client = Client(tmp_path / name, network)
        creds = server_process.users[user]
        client.login(url or server_process.url, creds["username"], creds["password"])
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def server_rows(server):
    con = sqlite3.connect(server.db)
    try:
        return {rid: (json.loads(data), bool(deleted)) for rid, data, deleted in
                con.execute("SELECT id, data, deleted FROM records")}
    finally:
        con.close()


def server_count(server, sql):
    con = sqlite3.connect(server.db)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def push_audit(server):
    """The server's audit of pushes: one row per committed batch, with its counts."""
    con = sqlite3.connect(server.db)
    try:
        return [json.loads(d) for (d,) in con.execute(
            "SELECT details FROM audit WHERE action = 'push' ORDER BY id")]
    finally:
        con.close()


def test_offline_adds_reach_the_server_exactly_once(server_process, device):
    d = device()
    seq0 = server_count(server_process, "SELECT value FROM meta WHERE key = 'seq'")
    ids = [d.add("household", household(i)) for i in range(25)]
    assert {r["sync_state"] for r in d.list()} == {"pending"}
    report = d.sync()
    assert report.complete and report.pushed == 25 and report.applied == 25
    rows = server_rows(server_process)
    assert set(rows) == set(ids)
    assert all(rows[i][0]["head_name"] == f"Lý A Sáng {n}" for n, i in enumerate(ids))
    assert {r["sync_state"] for r in d.list()} == {"acknowledged"}
    assert d.status()["pending"] == 0
    again = d.sync()
    assert again.pushed == 0
    # Exactly once, in a way the schema does not guarantee (one row per id
    # is the primary key's doing): the server wrote 25 times in all (its seq
    # counter moves on every write, a resend that merges to nothing does not
    # move it, so the audit is checked too), and its audit shows each record
    # in exactly one committed batch, applied, none sent again.
    assert int(server_count(server_process, "SELECT value FROM meta WHERE key = 'seq'")) \
        == int(seq0) + 25
    audit = [a for a in push_audit(server_process) if a["device_id"] == d.device_id]
    assert audit and sum(a["records"] for a in audit) == 25
    assert sum(a["applied"] for a in audit) == 25 and sum(a["unchanged"] for a in audit) == 0
    assert len({a["batch_id"] for a in audit}) == len(audit)


def test_two_devices_edit_different_fields_both_survive(server_process, device):
    a, b = device("a"), device("b")
    rid = a.add("household", household(1))
    a.sync()
    b.sync()
    a.edit(rid, {"phone": "0912345678"})
    b.edit(rid, {"address_detail": "Thôn Khe Tiền"})
    a.sync(), b.sync(), a.sync()
    expected = {**household(1), "phone": "0912345678", "address_detail": "Thôn Khe Tiền"}
    assert a.get(rid)["data"] == b.get(rid)["data"] == server_rows(server_process)[rid][0] == expected
    assert server_count(server_process, "SELECT COUNT(*) FROM conflicts") == 0


def after_clock_of(later, earlier):
    """Move device `later`'s clock past `earlier`'s last clock, as if it had
    received it: its next edit is then later by the HLC, whatever the wall
    clock says. (Two edits on two devices in the same millisecond tie on
    time and the HLC orders them by device id, random here.)"""
    later.store.observe(earlier.store.hlc)


def test_same_field_later_clock_wins_everywhere_and_one_conflict(server_process, device):
    a, b = device("a"), device("b")
    rid = a.add("household", household(2))
    a.sync()
    b.sync()
    a.edit(rid, {"head_name": "Edited on A"})
    after_clock_of(b, a)
    b.edit(rid, {"head_name": "Edited on B later"})  # later clock
    report_a = a.sync()
    report_b = b.sync()
    a.sync()
    assert report_a.applied == 1 and report_b.applied == 1
    for data in (a.get(rid)["data"], b.get(rid)["data"], server_rows(server_process)[rid][0]):
        assert data["head_name"] == "Edited on B later"
    assert server_count(server_process, "SELECT COUNT(*) FROM conflicts") == 1
    # The other order: the earlier edit arrives last and loses.
    a.edit(rid, {"head_name": "A first"})
    after_clock_of(b, a)
    b.edit(rid, {"head_name": "B second"})
    assert b.get(rid)["hlc"] > a.get(rid)["hlc"]
    assert b.sync().applied == 1
    report = a.sync()
    assert report.conflicts == 1
    assert a.get(rid)["data"]["head_name"] == "B second"
    assert server_count(server_process, "SELECT COUNT(*) FROM conflicts") == 2
    # Both open conflicts show on both devices, whichever edit arrived first
    # (the first was logged when B's winning edit replaced A's: issue 17).
    b.sync()
    for d in (a, b):
        assert d.get(rid)["sync_state"] == "conflict" and d.status()["conflicts"] == 2
        assert {c["losing"]["value"] for c in d.conflicts()} == {"Edited on A", "A first"}


def test_rejected_and_forbidden_records_stay_visible_until_fixed(server_process, device):
    d = device()
    # An older app version saved what the server now refuses (bypassing validation).
    bad = uuid7()
    d.store.local_change(bad, user="hw", data={**household(3), "poverty_status": "rich"},
                         create={"form": "household", "form_version": 1, "area": "QN.LM.03"})
    foreign = uuid7()
    d.store.local_change(foreign, user="hw", data=household(4),
                         create={"form": "household", "form_version": 1, "area": "QN.TB.01"})
    good = d.add("household", household(5))
    report = d.sync()
    assert report.complete and (report.rejected, report.forbidden, report.applied) == (1, 1, 1)
    status = d.status()
    problems = {p["id"]: p for p in status["problems"]}
    assert problems[bad]["sync_state"] == "rejected" and "poverty_status" in problems[bad]["errors"]
    assert problems[foreign]["sync_state"] == "forbidden"
    assert d.get(bad)["data"]["poverty_status"] == "rich"
    assert status["pending"] == 2
    # Not resent as is; fixed, it goes through as a complete create.
    assert d.sync().pushed == 0
    d.edit(bad, {"poverty_status": "near_poor"})
    assert d.sync().applied == 1
    assert server_rows(server_process)[bad][0]["poverty_status"] == "near_poor"
    assert d.get(bad)["sync_state"] == "acknowledged" and d.get(bad)["errors"] is None
    assert good in server_rows(server_process) and foreign not in server_rows(server_process)


def test_offline_validation_uses_the_form(server_process, device):
    d = device()
    with pytest.raises(InvalidRecord) as info:
        d.add("household", {**household(), "poverty_status": "rich"})
    assert "poverty_status" in info.value.errors
    rid = d.add("household", household())
    with pytest.raises(InvalidRecord):
        d.edit(rid, {"head_name": None})  # required
    with pytest.raises(InvalidRecord, match="outside your areas"):
        d.add("household", household(), area="QN.TB.01")
    assert d.store.unsynced_count() == 1


def test_revoked_token_asks_to_log_in_again_and_loses_nothing(server_process, device):
    d = device()
    rid = d.add("household", household(6))
    token = d.store.get_meta("token")
    requests.post(server_process.url + "/api/v1/auth/logout",
                  headers={"Authorization": f"Bearer {token}"}, timeout=5).raise_for_status()
    with pytest.raises(AuthError, match="sign in again. To sign in: fieldsync login"):
        d.sync()
    assert d.store.unsynced_count() == 1 and d.get(rid)["sync_state"] == "pending"
    d.login(server_process.url, "hw", "hw-pass-123")
    assert d.sync().applied == 1 and rid in server_rows(server_process)


def without_hanging(call, bound=300):
    """`call()`, failed if it has not returned after `bound` seconds: a guard
    against a retry loop that never ends (the test would hang the whole run),
    far beyond any real run, not a measure of speed."""
    def hung(signum, frame):
        raise AssertionError(f"still running after {bound} s: it never gave up")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(bound)
    try:
        return call()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_unreachable_server_gives_up_in_time_and_keeps_everything(server_process, device):
    d = device()  # logs in with time to spare; only the sync below races the clock
    patient = d.network
    d.network = NetworkConfig(give_up_after=2, connect_timeout=0.5, read_timeout=1,
                              backoff_factor=0.1, backoff_jitter=0)
    rid = d.add("household", household(7))
    # A listener that never answers: connections open, no reply ever comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    d.store.set_meta(server=f"http://127.0.0.1:{silent.getsockname()[1]}")
    # It gives up, saying after how long (speed is bench/'s business).
    with pytest.raises(ServerUnreachable, match="did not answer within 2 s") as info:
        without_hanging(d.sync)
    assert info.value.report is not None and not info.value.report.complete
    silent.close()
    assert d.store.unsynced_count() == 1 and d.status()["last_sync_ok"] is False
    d.store.set_meta(server=server_process.url)
    d.network = patient
    assert d.sync().applied == 1 and rid in server_rows(server_process)


def test_switching_user_with_unsynced_changes_is_refused(server_process, device):
    d = device(user="hw")
    rid = d.add("household", household(8))
    with pytest.raises(UserSwitchRefused, match="unsynced"):
        d.login(server_process.url, "hw2", "hw2-pass-123")
    assert d.user["username"] == "hw" and d.get(rid) is not None
    d.sync()
    # A device belongs to its first user until an admin releases it (issue 14).
    with pytest.raises(ApiError, match="device_taken"):
        d.login(server_process.url, "hw2", "hw2-pass-123")
    run_cli(server_process.db, "device", "release", d.device_id)
    assert d.login(server_process.url, "hw2", "hw2-pass-123")["username"] == "hw2"
    assert list(d.list()) == []  # hw's records are not hw2's to see
    assert d.sync().pulled == 0


def test_batches_halve_on_413_and_grow_back(server_process, device):
    proxy = FaultProxy(server_process.port, max_body=900).start()
    try:
        d = device(url=proxy.url)
        ids = [d.add("household", household(i, address_detail=f"house {i} " * 8)) for i in range(40)]
        report = d.sync()
        assert report.complete and report.applied == 40
        assert 1 <= proxy.stats["too_large"] <= 6  # no oscillation back to a refused size
        assert set(ids) <= set(server_rows(server_process))
        assert d.store.get_meta("batch_size") < 40
    finally:
        proxy.stop()


def test_progress_callback_and_report(server_process, device):
    d = device()
    for i in range(5):
        d.add("household", household(i))
    seen = []
    report = d.sync(progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert ("push", 0, 5) in seen and ("push", 5, 5) in seen
    assert any(phase == "pull" and done == 5 for phase, done, _ in seen)
    assert report.pulled == 5 and report.skew is not None and abs(report.skew) < 60


def test_scope_change_restarts_the_pull_and_drops_records_out_of_scope(server_process, device):
    d = device("a", user="hw")
    mine = d.add("household", household(9))
    d.sync()
    other = device("b", user="hw2")
    theirs = other.add("household", household(10))
    other.sync()
    con = sqlite3.connect(server_process.db)
    with con:
        con.execute("UPDATE users SET areas = ? WHERE username = 'hw'", (json.dumps(["QN.TB.01"]),))
    con.close()
    report = d.sync()
    assert report.complete and report.resyncs == 1
    assert [r["id"] for r in d.list()] == [theirs]
    assert d.get(mine) is None
    # The device learnt the new areas from the resync, without a new login:
    # a record in the new village is accepted locally and by the server.
    assert d.user["areas"] == ["QN.TB.01"]
    moved = d.add("household", household(11))
    assert d.sync().applied == 1 and d.get(moved)["area"] == "QN.TB.01"


def test_a_sync_with_unchanged_forms_downloads_no_definitions(server_process, device,
                                                              monkeypatch, tmp_path):
    from conftest import run_cli
    from schemas.forms import bundled_definitions
    from client_sync.transport import Transport
    asked = []  # (ETag sent, definitions came back, ETag answered), over real HTTP
    real = Transport.forms

    def spy(self, etag=None):
        forms, tag = real(self, etag)
        asked.append((etag, forms is not None, tag))
        return forms, tag

    monkeypatch.setattr(Transport, "forms", spy)
    d = device()  # the login fetches them whole
    assert asked == [(None, True, d.store.forms_etag())] and asked[0][2]
    report = d.sync()
    assert asked[-1] == (asked[0][2], False, asked[0][2]) and not report.forms_refreshed
    assert len(d.store.load_forms()) == 21   # every published version
    with pytest.raises(InvalidRecord):  # still validated offline by the cached forms
        d.add("household", {**household(), "poverty_status": "rich"})
    latest = max((f for f in bundled_definitions() if f["id"] == "household"),
                 key=lambda f: f["version"])
    newer = latest["version"] + 1   # a version nobody has published yet
    path = tmp_path / "household-next.json"
    path.write_text(json.dumps(dict(latest, version=newer, title="Household (next)")))
    run_cli(server_process.db, "forms", "publish", str(path))
    report = d.sync()
    assert asked[-1][:2] == (asked[0][2], True) and report.forms_refreshed
    assert d.store.forms_etag() == asked[-1][2] != asked[0][2]
    assert ("household", newer) in {(f["id"], f["version"]) for f in d.store.load_forms()}


def _field_clocks(state):
    return {name: reg["hlc"] for name, reg in state["fields"].items()}


def test_an_edited_record_pulls_with_its_common_clock_and_keeps_every_field_clock(
        server_process, device):
    from server.storage import decode_state
    a, b = device("a"), device("b")
    rid = a.add("household", household(1))
    a.sync()
    b.sync()
    a.edit(rid, {"phone": "0912345678"})
    a.sync()
    assert b.sync().pulled == 1
    con = sqlite3.connect(server_process.db)
    try:
        stored = decode_state(con.execute("SELECT state FROM records WHERE id = ?",
                                          (rid,)).fetchone()[0])
    finally:
        con.close()
    pulled = requests.get(server_process.url + "/api/v1/sync/pull?clocks=common",
                          headers={"Authorization": "Bearer " + b.store.get_meta("token")},
                          timeout=10).json()["records"][0]
    assert list(pulled["clocks"]) == ["phone"] and pulled["common_hlc"] != pulled["hlc"]
    on_b = json.loads(b.store._row(rid)["state"])
    assert _field_clocks(on_b) == _field_clocks(stored)
    assert b.get(rid)["data"]["phone"] == "0912345678"


def test_a_server_without_common_clocks_is_pulled_sparse(server_process, device, monkeypatch):
    """A server older than clocks=common answers 400 invalid_clocks: the device
    asks the next mode. ('older' stands for a mode this server does not know.)"""
    from client_sync.transport import Transport
    monkeypatch.setattr(Transport, "PULL_CLOCKS", ("from-the-future", "sparse"))
    a, b = device("a"), device("b")
    ids = [a.add("household", household(i)) for i in range(3)]
    a.sync()
    report = b.sync()
    assert report.complete and report.pulled == 3
    assert {r["id"] for r in b.list()} == set(ids)


def test_the_device_holds_one_pulled_page_at_a_time(server_process, device, monkeypatch):
    """A page (and its records) is let go before the next is asked for: a
    device never holds two decoded pages (a page of 5,000 is ~15 MB)."""
    import weakref
    from client_sync.transport import Transport

    class Page(dict):  # dict and list take weak references only as subclasses
        pass

    class Records(list):
        pass

    held, alive_at_next = [], []
    real = Transport.pull

    def spy(self, cursor, limit):
        alive_at_next.extend(ref() is not None for ref in held)
        page = Page(real(self, cursor, 2))  # pages of 2 records: several pages
        page["records"] = Records(page["records"])
        held[:] = [weakref.ref(page), weakref.ref(page["records"])]
        return page

    a = device("a")
    ids = [a.add("household", household(i)) for i in range(5)]
    assert a.sync().complete
    monkeypatch.setattr(Transport, "pull", spy)
    b = device("b")
    report = b.sync()
    assert report.complete and report.pulled == 5 and {r["id"] for r in b.list()} == set(ids)
    assert len(alive_at_next) >= 4 and not any(alive_at_next)

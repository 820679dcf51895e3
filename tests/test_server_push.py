"""Push semantics against the real server process over real HTTP (DESIGN.md "Push")."""
import gzip
import json
import sqlite3
import uuid

import pytest
import requests

from conftest import ServerProcess, batch, change, free_port, hlc_at, household, now_ms
from server.storage import decode_state

DAY = 86_400_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, template_db):
    """One real server for this module; tests use their own record ids."""
    from conftest import copy_db
    folder = tmp_path_factory.mktemp("push")
    srv = ServerProcess(db=copy_db(template_db, folder / "fieldsync.db"), port=free_port(),
                        log=folder / "server.log")
    srv.start()
    yield srv
    srv.stop()


class Device:
    """A minimal device: signs in, pushes batches, remembers nothing else."""

    def __init__(self, server, user, device_id):
        self.server, self.device_id = server, device_id
        self.headers = {"Authorization": "Bearer " + server.login(user, device_id)}

    def post(self, body, headers=None, raw=None):
        return requests.post(self.server.url + "/api/v1/sync/push",
                             data=raw if raw is not None else json.dumps(body),
                             headers={**self.headers, "Content-Type": "application/json",
                                      **(headers or {})}, timeout=30)

    def push(self, *records, batch_id=None, device_time=None):
        resp = self.post(batch(self.device_id, list(records), batch_id, device_time))
        assert resp.status_code == 200, resp.text
        return resp.json()

    def clock(self, offset_ms=0, counter=0):
        return hlc_at(now_ms() + offset_ms, self.device_id, counter)


def q(server, sql, *params):
    conn = sqlite3.connect(server.db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def stored_values(server, record_id):
    return json.loads(q(server, "SELECT data FROM records WHERE id = ?", record_id)[0][0])


@pytest.fixture(scope="module")
def a(server):
    return Device(server, "hw", "dev-a")


@pytest.fixture(scope="module")
def b(server):
    return Device(server, "sup", "dev-b")


def test_replayed_batch_returns_stored_result(server, a):
    rid = str(uuid.uuid4())
    body = batch("dev-a", [change(household(), hlc=a.clock(), record_id=rid)])
    first = a.post(body)
    seq = q(server, "SELECT seq FROM records WHERE id = ?", rid)[0][0]
    again = a.post(body)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["results"] == [{"id": rid, "status": "applied"}]
    assert q(server, "SELECT seq FROM records WHERE id = ?", rid)[0][0] == seq


def test_resend_under_new_batch_id_is_unchanged(server, a):
    c = change(household(), hlc=a.clock())
    a.push(c)
    top = q(server, "SELECT value FROM meta WHERE key = 'seq'")[0][0]
    assert a.push(c)["results"][0]["status"] == "unchanged"
    assert q(server, "SELECT value FROM meta WHERE key = 'seq'")[0][0] == top
    assert q(server, "SELECT count(*) FROM records WHERE id = ?", c["id"])[0][0] == 1


def test_batch_id_reused_with_different_body_is_409(server, a):
    bid = str(uuid.uuid4())
    a.push(change(household(), hlc=a.clock()), batch_id=bid)
    other = change(household(), hlc=a.clock())
    resp = a.post(batch("dev-a", [other], batch_id=bid))
    assert resp.status_code == 409 and resp.json()["error"] == "batch_id_reused"
    assert q(server, "SELECT count(*) FROM records WHERE id = ?", other["id"])[0][0] == 0


@pytest.mark.parametrize("later_first", [True, False])
def test_same_field_later_clock_wins_and_one_conflict_is_logged(server, a, b, later_first):
    t0 = now_ms() - 10_000
    create = change(household(), hlc=hlc_at(t0, "dev-a"))
    a.push(create)
    rid, base = create["id"], create["hlc"]
    # Both edit head_name from the created value, without seeing each other.
    early = change({"head_name": "Early B"}, hlc=hlc_at(t0 + 1000, "dev-b"), record_id=rid,
                   bases={"head_name": base})
    late = change({"head_name": "Late A"}, hlc=hlc_at(t0 + 2000, "dev-a"), record_id=rid,
                  bases={"head_name": base})
    if later_first:
        assert a.push(late)["results"][0]["status"] == "applied"
        res = b.push(early)["results"][0]
        assert res["status"] == "conflict"
        assert res["record"]["data"]["head_name"] == "Late A"
    else:
        assert b.push(early)["results"][0]["status"] == "applied"
        assert a.push(late)["results"][0]["status"] == "applied"
    assert stored_values(server, rid)["head_name"] == "Late A"
    rows = q(server, "SELECT field, current, losing FROM conflicts WHERE record_id = ?", rid)
    assert len(rows) == 1
    field, current, losing = rows[0]
    assert field == "head_name"
    assert json.loads(current)["value"] == "Late A"
    assert json.loads(losing) == {"value": "Early B", "hlc": early["hlc"], "device": "dev-b",
                                  "user": "sup"}
    # A resend of the losing change logs nothing new.
    b.push(early)
    assert q(server, "SELECT count(*) FROM conflicts WHERE record_id = ?", rid)[0][0] == 1


def test_different_fields_from_two_devices_both_stand_without_conflict(server, a, b):
    t0 = now_ms() - 10_000
    create = change(household(), hlc=hlc_at(t0, "dev-a"))
    a.push(create)
    rid = create["id"]
    b.push(change({"phone": "0912345678"}, hlc=hlc_at(t0 + 1000, "dev-b"), record_id=rid))
    a.push(change({"head_name": "Tran Thi B"}, hlc=hlc_at(t0 + 500, "dev-a"), record_id=rid,
                  bases={"head_name": create["hlc"]}))
    values = stored_values(server, rid)
    assert values["phone"] == "0912345678" and values["head_name"] == "Tran Thi B"
    assert q(server, "SELECT count(*) FROM conflicts WHERE record_id = ?", rid)[0][0] == 0


def test_same_clock_with_another_value_is_rejected_as_clock_reused(server, a):
    create = change(household(), hlc=a.clock(-5000))
    a.push(create)
    res = a.push({**create, "data": household(head_name="Someone Else")})["results"][0]
    assert res["status"] == "rejected" and res["code"] == "clock_reused"
    assert "head_name" in res["errors"]
    assert stored_values(server, create["id"])["head_name"] == "Nguyen Van A"


def test_identity_is_fixed_at_creation(server, b):
    create = change(household(), hlc=b.clock(-5000), area="QN.LM.03")
    b.push(create)
    moved = change({"phone": "0912345678"}, hlc=b.clock(), record_id=create["id"],
                   area="QN.LM.04")
    other_form = change({"phone": "0912345678"}, hlc=b.clock(), record_id=create["id"],
                        form="person")
    for res in b.push(moved, other_form)["results"]:
        assert res["status"] == "rejected" and res["code"] == "identity_mismatch"
    assert q(server, "SELECT area, form FROM records WHERE id = ?", create["id"]) == \
        [("QN.LM.03", "household")]


def test_clock_far_ahead_is_restamped_and_a_resend_is_unchanged(server, a):
    future = a.clock(offset_ms=DAY)
    c = change(household(), hlc=future)
    answer = a.push(c, device_time=None)
    res = answer["results"][0]
    assert res["status"] == "applied"
    assert answer["skew"]["restamped"] == 4  # every field of the create
    clocks = res["record"]["clocks"]
    assert all(v.endswith("-server") and v < future for v in clocks.values())
    # The server's own clock did not jump a day ahead.
    assert answer["hlc"] < future
    state = decode_state(q(server, "SELECT state FROM records WHERE id = ?", c["id"])[0][0])
    assert state["fields"]["head_name"]["origin"] == future
    again = a.push(c)
    assert again["results"][0]["status"] == "unchanged"
    assert again["skew"]["restamped"] == 0


def test_skew_is_measured_from_device_time_and_recorded(server, a):
    ahead = "2099-01-01T00:00:00+00:00"
    answer = a.push(change(household(), hlc=a.clock()), device_time=ahead)
    assert answer["skew"]["seconds"] > 365 * 86400
    assert q(server, "SELECT skew_seconds FROM devices WHERE device_id = 'dev-a'")[0][0] > 0


def test_each_change_is_checked_alone_and_neighbours_apply(server, a):
    good = change(household(), hlc=a.clock())
    results = a.push(
        change(household(), hlc=a.clock(), form="no_such_form"),
        change(household(), hlc=a.clock(), version=9),
        change(household(extra_field=1), hlc=a.clock()),
        change(household(travel_minutes_to_chs=-5), hlc=a.clock()),
        change({"head_name": "Only a name"}, hlc=a.clock()),   # an incomplete create
        change(household(), hlc="yesterday"),                   # a malformed clock
        good,
    )["results"]
    codes = [(r["status"], r.get("code")) for r in results]
    assert codes[:2] == [("rejected", "unknown_form"), ("rejected", "unknown_version")]
    assert "form" in results[0]["errors"] and "form_version" in results[1]["errors"]
    assert "extra_field" in results[2]["errors"]
    assert "travel_minutes_to_chs" in results[3]["errors"]
    assert "poverty_status" in results[4]["errors"]
    assert "hlc" in results[5]["errors"]
    assert results[6] == {"id": good["id"], "status": "applied"}
    ids = [r["id"] for r in results[:6]]
    assert q(server, f"SELECT count(*) FROM records WHERE id IN ({','.join('?' * 6)})",
             *ids)[0][0] == 0
    outstanding = {r[0] for r in q(server, "SELECT record_id FROM rejections "
                                           "WHERE device_id = 'dev-a'")}
    assert set(ids) <= outstanding


def test_writes_outside_the_users_areas_are_forbidden(server, a):
    other = Device(server, "hw2", "dev-c")
    mine = change(household(), hlc=a.clock(-2000))
    a.push(mine)
    claims = change(household(), hlc=other.clock(), area="QN.LM.03")   # claims my area
    tbx = change(household(), hlc=other.clock(), area="QN.TBX")        # not on a dot boundary
    results = other.push(
        claims,
        change({"phone": "0900000000"}, hlc=other.clock(), record_id=mine["id"],
               area="QN.TB.01"),                                        # stored area is mine
        tbx,
        # malformed too, and naming its own area: the stored area still decides first
        change({"phone": "0900000000"}, hlc="yesterday", record_id=mine["id"],
               area="QN.TB.01"),
    )["results"]
    assert [r["status"] for r in results] == ["forbidden"] * 4
    assert "phone" not in stored_values(server, mine["id"])
    # Only this test's records: other tests of the module store hw2's records.
    assert q(server, "SELECT id, created_by FROM records WHERE id IN (?, ?, ?)",
             mine["id"], claims["id"], tbx["id"]) == [(mine["id"], "hw")]


def test_areas_allowed_and_not_interleaved_in_one_batch(server, a):
    """Each change's area decides for that change alone, however often an
    area comes back in the batch (the writer remembers each area's answer)."""
    other = Device(server, "hw2", "dev-c")
    areas = ["QN.TB.01", "QN.LM.03", "QN.TB.01", "QN.LM.03", "QN.TB.01.X", "QN.TBX"]
    results = other.push(*[change(household(), hlc=other.clock(), area=area)
                           for area in areas])["results"]
    assert [r["status"] for r in results] == \
        ["applied", "forbidden", "applied", "forbidden", "applied", "forbidden"]


def test_concurrent_edits_making_an_invalid_record_are_stored_and_flagged(server, a, b):
    t0 = now_ms() - 10_000
    create = change(household(status="moved_out", status_date="2025-03-05"),
                    hlc=hlc_at(t0, "dev-a"))
    a.push(create)
    rid = create["id"]
    # A reactivates the household (clearing the move date); B, unaware,
    # corrects the move date. Each is valid; together they are not.
    a.push(change({"status": "active", "status_date": None}, hlc=hlc_at(t0 + 1000, "dev-a"),
                  record_id=rid, bases={"status": create["hlc"],
                                        "status_date": create["hlc"]}))
    b.push(change({"status_date": "2025-03-06"}, hlc=hlc_at(t0 + 2000, "dev-b"),
                  record_id=rid, bases={"status_date": create["hlc"]}))
    values = stored_values(server, rid)
    assert values["status"] == "active" and values["status_date"] == "2025-03-06"
    assert json.loads(q(server, "SELECT flags FROM records WHERE id = ?", rid)[0][0]) == \
        ["invalid_merge"]


def test_gzip_body_is_accepted(server, a):
    c = change(household(), hlc=a.clock())
    raw = gzip.compress(json.dumps(batch("dev-a", [c])).encode())
    resp = a.post(None, headers={"Content-Encoding": "gzip"}, raw=raw)
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["status"] == "applied"


def _bomb():
    # 64 MiB of zeros: about 64 KiB compressed.
    return gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)


BAD_BODIES = {
    "malformed_json": (b'{"device_id": "dev-a", ', {}, 400, "invalid_json"),
    "not_an_object": (b"[1, 2]", {}, 400, "invalid_json"),
    "nan": (b'{"device_id": NaN}', {}, 400, "invalid_json"),
    "lone_surrogate": (b'{"device_id": "\\ud800"}', {}, 400, "invalid_json"),
    # With a BOM the stdlib parses (orjson does not) and keeps the big integer.
    "integer_beyond_64_bits": (b'\xef\xbb\xbf{"device_id": 123456789012345678901234567890}', {},
                               400, "invalid_json"),
    "missing_records": ("no_records", {}, 400, "invalid_request"),
    "records_not_a_list": ("records_dict", {}, 400, "invalid_request"),
    "bad_device_time": ("bad_time", {}, 400, "invalid_request"),
    "unknown_envelope_key": ("extra_key", {}, 400, "invalid_request"),
    "too_many_changes": ("too_many", {}, 413, "batch_too_large"),
    "oversized_body": ("oversized", {}, 413, None),
    "gzip_bomb": ("bomb", {"Content-Encoding": "gzip"}, 413, "body_too_large"),
    "broken_gzip": (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400,
                    "invalid_gzip"),
    "unknown_encoding": (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
    "another_devices_id": ("other_device", {}, 403, "device_mismatch"),
}


def _bad_body(kind, a):
    c = change(household(), hlc=a.clock())
    good = batch("dev-a", [c])
    if isinstance(kind, bytes):
        return kind
    body = {
        "no_records": {k: v for k, v in good.items() if k != "records"},
        "records_dict": {**good, "records": {"0": c}},
        "bad_time": {**good, "device_time": "last tuesday"},
        "extra_key": {**good, "admin": True},
        "too_many": {**good, "records": [c] * 1001},
        "other_device": {**good, "device_id": "dev-z"},
        "oversized": {**good, "padding": "x" * (17 * 1024 * 1024)},
    }.get(kind)
    if kind == "bomb":
        return _bomb()
    return json.dumps(body).encode()


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_envelopes_get_a_clear_error_and_store_nothing(server, a, name):
    kind, headers, status, code = BAD_BODIES[name]
    before = q(server, "SELECT value FROM meta WHERE key = 'seq'")[0][0]
    batches = q(server, "SELECT count(*) FROM batches")[0][0]
    resp = a.post(None, headers=headers, raw=_bad_body(kind, a))
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message", "details"} and body["message"]
    if code:
        assert body["error"] == code
    assert q(server, "SELECT value FROM meta WHERE key = 'seq'")[0][0] == before
    assert q(server, "SELECT count(*) FROM batches")[0][0] == batches


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_push_without_a_valid_token_is_401(server, header):
    c = change(household(), hlc=hlc_at(now_ms(), "dev-a"))
    resp = requests.post(server.url + "/api/v1/sync/push", json=batch("dev-a", [c]),
                         headers={"Authorization": header} if header else {}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"] in ("missing_token",
                                                                 "invalid_token")
    assert q(server, "SELECT count(*) FROM records WHERE id = ?", c["id"])[0][0] == 0


def test_logged_out_token_cannot_push(server):
    dev = Device(server, "hw", "dev-logout")
    assert requests.post(server.url + "/api/v1/auth/logout", headers=dev.headers,
                         timeout=10).status_code == 200
    resp = dev.post(batch("dev-logout", [change(household(), hlc=dev.clock())]))
    assert resp.status_code == 401 and resp.json()["error"] == "token_revoked"

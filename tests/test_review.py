"""Conflict review: listing by status and area, resolving as a new server
change that reaches every device, isolation, and invalid_merge records."""
import json
import sqlite3
import uuid

import pytest

from schemas.clock import parse
from tests.test_exports_api import Api, Device, birth, cp_report, household


@pytest.fixture
def api(client):
    return Api(client=client)


def concurrent_edit(a, b, form, area, data, field, value_a, value_b):
    """Device `a` creates a record; device `b`, which never saw it, sets
    `field` too (no base): a conflict the server must log."""
    record_id = a.create(form, area, {**data, field: value_a})
    [result] = b.push([{"id": record_id, "form": form, "form_version": 1, "area": area,
                        "data": {field: value_b}}])
    assert result["status"] in ("applied", "conflict"), result
    return record_id


@pytest.fixture
def scene(api):
    a, b = Device(api, "hw", "dev-a"), Device(api, "hw", "dev-b")
    c, d = Device(api, "hw2", "dev-c"), Device(api, "hw2", "dev-d")
    lm = concurrent_edit(a, b, "household", "QN.LM.03", household(), "head_name",
                         "Nguyễn Thị Hoa", "Nguyễn Thị Hòa")
    tb = concurrent_edit(c, d, "household", "QN.TB.01", household(), "head_name",
                         "Lý Văn Sáu", "Lý Văn Sau")
    return {"a": a, "b": b, "c": c, "d": d, "lm": lm, "tb": tb,
            "sup": api.login("sup", "dev-sup"), "admin": api.login("admin", "dev-admin")}


def conflicts(api, token, **params):
    status, body = api.json("GET", "/api/v1/conflicts", token, params=params)
    assert status == 200, body
    return body["conflicts"]


def resolve(api, token, conflict_id, body):
    return api.json("POST", f"/api/v1/conflicts/{conflict_id}/resolve", token, body)


def test_conflicts_are_listed_in_the_design_shape_for_the_supervisors_areas(api, scene):
    [entry] = conflicts(api, scene["sup"])
    assert entry["record_id"] == scene["lm"] and entry["form"] == "household"
    assert entry["area"] == "QN.LM.03" and entry["field"] == "head_name"
    assert entry["status"] == "open"
    current, losing = entry["current"], entry["losing"]
    assert current["value"] == "Nguyễn Thị Hòa" and current["device"] == "dev-b"
    assert losing["value"] == "Nguyễn Thị Hoa" and losing["device"] == "dev-a"
    assert set(entry["current"]) >= {"value", "hlc", "device", "user"}
    assert conflicts(api, scene["sup"], status="resolved") == []
    assert [c["record_id"] for c in conflicts(api, scene["admin"])] == [scene["lm"], scene["tb"]]
    assert [c["record_id"] for c in conflicts(api, scene["admin"], area="QN.TB")] == [scene["tb"]]
    # A broader area is cut down to the supervisor's own.
    assert [c["record_id"] for c in conflicts(api, scene["sup"], area="QN")] == [scene["lm"]]


def test_conflict_endpoints_are_isolated_by_area_and_role(api, scene):
    tb_id = conflicts(api, scene["admin"], area="QN.TB")[0]["id"]
    lm_id = conflicts(api, scene["sup"])[0]["id"]
    status, body = api.json("GET", "/api/v1/conflicts", scene["sup"], params={"area": "QN.TB"})
    assert (status, body["error"]) == (403, "forbidden")
    # Another area's conflict does not exist for this supervisor.
    status, body = resolve(api, scene["sup"], tb_id, {"keep": "current"})
    assert (status, body["error"]) == (404, "not_found")
    # Health workers list only the open conflicts of their areas (their
    # device shows them), and never resolve.
    hw, hw2 = scene["a"].token, scene["c"].token
    status, body = api.json("GET", "/api/v1/conflicts", hw)
    assert (status, body["error"]) == (403, "forbidden") and "status=open" in body["message"]
    assert api.json("GET", "/api/v1/conflicts", hw, params={"status": "resolved"})[0] == 403
    assert [c["record_id"] for c in conflicts(api, hw, status="open")] == [scene["lm"]]
    assert [c["record_id"] for c in conflicts(api, hw2, status="open")] == [scene["tb"]]
    status, body = api.json("GET", "/api/v1/conflicts", hw,
                            params={"status": "open", "area": "QN.TB.01"})
    assert (status, body["error"]) == (403, "forbidden")
    assert resolve(api, hw, lm_id, {"keep": "current"})[0] == 403
    assert api.json("GET", "/api/v1/invalid_merges", hw)[0] == 403
    assert api.json("GET", "/api/v1/conflicts")[0] == 401
    # Nothing was resolved by any of the refused calls.
    assert {c["status"] for c in conflicts(api, scene["admin"])} == {"open"}


def test_bad_listing_parameters_are_clear_errors(api):
    sup = api.login("sup", "dev-sup")
    for params in ({"status": "closed"}, {"limit": "0"}, {"after": "-1"},
                   {"statuss": "open"}, {"area": "qn"}):
        status, body = api.json("GET", "/api/v1/conflicts", sup, params=params)
        assert (status, body["error"]) == (400, "invalid_parameter"), params
        assert body["message"]


@pytest.mark.parametrize("path", ["/api/v1/conflicts", "/api/v1/invalid_merges"])
@pytest.mark.parametrize("params", [{"limit": "\u00b2"}, {"after": "\u00b2"},
                                    {"limit": "\u0661\u0662"}, {"after": "1" * 5000},
                                    {"limit": " 5"}, {"after": "+3"}])
def test_non_ascii_or_huge_numbers_are_a_400_not_a_500(api, path, params):
    """str.isdigit() accepts '²' (int() then raises) and Arabic-Indic digits;
    int() refuses 5000 digits. Only ASCII digits are numbers here."""
    sup = api.login("sup", "dev-sup")
    status, body = api.json("GET", path, sup, params=params)
    assert (status, body["error"]) == (400, "invalid_parameter"), body
    assert body["details"]["parameter"] == next(iter(params)) and body["message"]


def test_resolving_with_a_value_reaches_every_device_on_their_next_pull(api, scene):
    a, b = scene["a"], scene["b"]
    cursor_a, cursor_b = a.pull()["cursor"], b.pull()["cursor"]
    [entry] = conflicts(api, scene["sup"])
    status, body = resolve(api, scene["sup"], entry["id"], {"value": "Nguyễn Thị Hoà"})
    assert status == 200, body
    assert body["conflict"]["status"] == "resolved"
    assert body["conflict"]["resolved_by"] == "sup"
    assert body["conflict"]["resolution"]["value"] == "Nguyễn Thị Hoà"
    assert body["record"]["data"]["head_name"] == "Nguyễn Thị Hoà"
    new_clock = body["record"]["clocks"]["head_name"]
    assert new_clock.endswith("-server") and new_clock > entry["current"]["hlc"]
    for device, cursor in ((a, cursor_a), (b, cursor_b)):
        [pulled] = device.pull(cursor)["records"]
        assert pulled["id"] == scene["lm"]
        assert pulled["data"]["head_name"] == "Nguyễn Thị Hoà"
        assert pulled["clocks"]["head_name"] == new_clock
    # Resolved once: a second answer is refused and changes nothing.
    status, body = resolve(api, scene["sup"], entry["id"], {"value": "X"})
    assert (status, body["error"]) == (409, "already_resolved")
    assert conflicts(api, scene["sup"], status="open") == []
    assert a.pull(a.pull(cursor_a)["cursor"])["records"] == []


def test_keep_current_rewrites_the_winner_with_a_server_clock(api, scene, db_path):
    [entry] = conflicts(api, scene["sup"])
    status, body = resolve(api, scene["sup"], entry["id"], {"keep": "current"})
    assert status == 200, body
    assert body["record"]["data"]["head_name"] == "Nguyễn Thị Hòa"
    assert body["record"]["clocks"]["head_name"].endswith("-server")
    assert body["conflict"]["resolution"]["keep"] == "current"
    conn = sqlite3.connect(db_path)
    actions = [json.loads(d) for a, d in conn.execute(
        "SELECT action, details FROM audit WHERE action = 'conflict_resolve'")]
    conn.close()
    assert actions == [{"conflict": entry["id"], "record_id": scene["lm"],
                        "field": "head_name", "choice": "keep", "settled": []}]


def test_an_invalid_value_writes_nothing(api, scene):
    [entry] = conflicts(api, scene["sup"])
    for bad in ({"value": ""}, {"value": 12}, {}, {"keep": "losing"},
                {"value": "x", "keep": "current"}):
        status, body = resolve(api, scene["sup"], entry["id"], bad)
        assert status == 400, (bad, body)
        assert body["error"] in ("invalid_value", "invalid_resolution")
    assert conflicts(api, scene["sup"])[0]["status"] == "open"
    status, _, data = api.call("POST", f"/api/v1/conflicts/{entry['id']}/resolve",
                               scene["sup"])
    assert status == 400 and json.loads(data)["error"] == "invalid_json"
    assert resolve(api, scene["sup"], 999999, {"keep": "current"})[0] == 404


def test_three_way_conflict_is_settled_by_one_resolution(api, scene):
    e = Device(api, "hw", "dev-e")
    [result] = e.push([{"id": scene["lm"], "form": "household", "form_version": 1,
                        "area": "QN.LM.03", "data": {"head_name": "Hoa Nguyễn"}}])
    assert result["status"] in ("applied", "conflict")
    open_ = conflicts(api, scene["sup"], status="open")
    assert len(open_) == 2
    status, body = resolve(api, scene["sup"], open_[0]["id"], {"value": "Nguyễn Thị Hoa"})
    assert status == 200 and body["settled"] == [open_[1]["id"]]
    assert conflicts(api, scene["sup"], status="open") == []


def test_keep_current_never_revives_a_deleted_record(api, scene):
    a, b = scene["a"], scene["b"]
    record_id = a.create("household", "QN.LM.03", household("Đặng Thị Lan"))
    # b edits without having seen a's record; then a deletes without seeing
    # b's edit, with a later clock (the devices share an ordered wall clock:
    # with two real clocks both could fall in one millisecond, and the tie
    # goes to "dev-b", the edit).
    [edit] = b.push([{"id": record_id, "form": "household", "form_version": 1,
                      "area": "QN.LM.03", "data": {"phone": "0987654321"}}])
    [gone] = a.push([{"id": record_id, "form": "household", "form_version": 1,
                      "area": "QN.LM.03", "data": {}, "deleted": True}])
    assert gone["status"] in ("applied", "conflict")
    assert parse(a.clock.last).millis > parse(b.clock.last).millis
    entry = [c for c in conflicts(api, scene["sup"]) if c["record_id"] == record_id][0]
    status, body = resolve(api, scene["sup"], entry["id"], {"keep": "current"})
    assert status == 200, body
    assert body["record"]["deleted"] is True
    # Choosing the edit instead brings the record back, for every device.
    record2 = a.create("household", "QN.LM.03", household("Chu Thị Nga"))
    b.push([{"id": record2, "form": "household", "form_version": 1, "area": "QN.LM.03",
             "data": {"phone": "0987654321"}}])
    a.push([{"id": record2, "form": "household", "form_version": 1, "area": "QN.LM.03",
             "data": {}, "deleted": True}])
    assert parse(a.clock.last).millis > parse(b.clock.last).millis
    entry = [c for c in conflicts(api, scene["sup"]) if c["record_id"] == record2][0]
    status, body = resolve(api, scene["sup"], entry["id"], {"value": entry["losing"]["value"]})
    assert status == 200, body
    assert body["record"]["deleted"] is False
    assert body["record"]["data"]["phone"] == "0987654321"


def test_invalid_merges_are_listed_with_the_rules_they_break(api, scene):
    a = scene["a"]
    record_id = a.create("pregnancy_outcome", "QN.LM.03", birth())
    # Each change is valid alone; the merged record has lmp after the outcome.
    [result] = scene["b"].push([{"id": record_id, "form": "pregnancy_outcome",
                                 "form_version": 1, "area": "QN.LM.03",
                                 "data": {"lmp_date": "2025-03-05"}}])
    assert result["status"] in ("applied", "conflict"), result
    status, body = api.json("GET", "/api/v1/invalid_merges", scene["sup"])
    assert status == 200, body
    [flagged] = body["records"]
    assert flagged["id"] == record_id and "invalid_merge" in flagged["flags"]
    assert flagged["errors"] and flagged["data"]["lmp_date"] == "2025-03-05"
    status, body = api.json("GET", "/api/v1/invalid_merges", scene["admin"],
                            params={"area": "QN.TB"})
    assert body["records"] == []
    # Exports carry the flag too.
    status, _, data = api.call("GET", "/api/v1/exports/pregnancy_outcome.csv", scene["sup"])
    assert "invalid_merge" in data.decode("utf-8")


def test_restricted_form_conflicts_are_audited_reads(api, scene, db_path):
    a, b = scene["a"], scene["b"]
    record_id = a.create("cp_report", "QN.LM.03", cp_report())
    b.push([{"id": record_id, "form": "cp_report", "form_version": 1, "area": "QN.LM.03",
             "data": {"source": "school"}}])
    listed = conflicts(api, scene["sup"])
    assert record_id in [c["record_id"] for c in listed]
    conn = sqlite3.connect(db_path)
    reads = [json.loads(d) for (d,) in conn.execute(
        "SELECT details FROM audit WHERE action = 'restricted_read' AND username = 'sup'")]
    conn.close()
    assert reads and reads[-1]["forms"] == ["cp_report"] and reads[-1]["via"] == "conflicts"


def test_resolved_conflict_reaches_a_second_device_through_the_real_server(server_process):
    api = Api(url=server_process.url)
    a, b = Device(api, "hw", "dev-real-a"), Device(api, "hw", "dev-real-b")
    record_id = concurrent_edit(a, b, "household", "QN.LM.03", household(), "head_name",
                                "Hoàng Thị Thu", "Hoàng Thị Thủy")
    cursor = b.pull()["cursor"]
    sup = api.login("sup", "dev-real-sup")
    [entry] = conflicts(api, sup)
    status, body = resolve(api, sup, entry["id"], {"value": "Hoàng Thị Thu"})
    assert status == 200, body
    page = b.pull(cursor)
    assert [(r["id"], r["data"]["head_name"]) for r in page["records"]] == [
        (record_id, "Hoàng Thị Thu")]


def test_devices_view_shows_who_is_behind_in_the_supervisors_areas(api, scene):
    """Issue 5's devices view: user, app version, last push and pull,
    outstanding rejections, clock skew; only devices of the supervisor's areas."""
    a = scene["a"]
    [bad] = a.push([{"id": str(uuid.uuid4()), "form": "household", "form_version": 1,
                     "area": "QN.LM.03", "data": {"head_name": "X"}}])   # incomplete
    assert bad["status"] == "rejected"
    a.pull()
    status, body = api.json("GET", "/api/v1/devices", scene["sup"])
    assert status == 200, body
    devices = {d["device_id"]: d for d in body["devices"]}
    assert {"dev-a", "dev-b"} <= set(devices)
    assert not {"dev-c", "dev-d"} & set(devices)             # QN.TB's devices
    dev_a = devices["dev-a"]
    assert dev_a["user"] == "hw" and dev_a["app_version"] == "test"
    assert dev_a["last_push"] and dev_a["last_pull"]
    assert dev_a["records_rejected"] == 1
    assert isinstance(dev_a["clock_skew_seconds"], (int, float))
    assert devices["dev-b"]["records_rejected"] == 0
    assert devices["dev-b"]["last_pull"] is None             # never pulled: behind
    assert api.json("GET", "/api/v1/devices", a.token)[0] == 403


def test_an_id_beyond_sqlite_integers_is_simply_not_found(api):
    sup = api.login("sup", "dev-sup")
    status, body = resolve(api, sup, 2 ** 64, {"keep": "current"})
    assert (status, body["error"]) == (404, "not_found")

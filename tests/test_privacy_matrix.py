"""Privacy of push answers and conflict resolution over the whole matrix:
role × area × restricted form (issue 18 item 3).

Push answers carry the merged record when an edit lost or a clock was
re-stamped (DESIGN.md "Push"); that record must reach only users who may read
its form (`scope.can_read_form`) in their areas (`scope.covers`). Resolving
a conflict is for supervisors and admins, in their areas, of forms they may
read; anything else is a 403/404 that writes nothing and shows nothing.

Users (conftest.USERS): hw (QN.LM.03), hw2 (QN.TB.01), sup (QN.LM), admin.
Forms: household (open), cp_report (supervisors and admins), secret_note
(admins only, published by the test). Areas: QN.LM.03 and QN.TB.01.
"""
import json
import uuid

import pytest

from schemas.clock import format_hlc, parse
from tests.conftest import USERS, now_ms
from tests.test_exports_api import Api, Device, cp_report, household
from server.scope import can_read_form, covers

SECRET_NOTE = {"id": "secret_note", "version": 1, "title": "Admin only",
               "restricted_to": ["admin"],
               "fields": [{"name": "note", "type": "text", "required": True}]}
RESTRICTED_TO = {"household": None, "cp_report": ["supervisor", "admin"],
                 "secret_note": ["admin"]}
AREAS = ["QN.LM.03", "QN.TB.01"]
ROLES = ["hw", "hw2", "sup", "admin"]


def record_data(form, marker):
    """A valid record of `form` carrying the distinctive text `marker`
    somewhere the test can look for it in any answer."""
    if form == "household":
        return household(name=marker), "head_name", "Người Khác"
    if form == "cp_report":
        # report_date is the field edited; the marker is the winner's date.
        return {**cp_report(), "report_date": marker}, "report_date", "2025-02-20"
    return {"note": marker}, "note", "khác"


def markers():
    """One distinctive marker per (form, area): a date for cp_report."""
    out, day = {}, 1
    for form in RESTRICTED_TO:
        for area in AREAS:
            out[form, area] = (f"2025-02-{day + 10:02d}" if form == "cp_report"
                               else f"BÍ-MẬT-{form}-{area}")
            day += 1
    return out


@pytest.fixture
def world(client, db_path):
    from server.catalog import publish
    from server.db import connect
    db = connect(str(db_path))
    publish(db, SECRET_NOTE)
    db.conn.close()
    api = Api(client=client)
    writer = Device(api, "admin", "dev-writer")
    return api, writer


def _user(name):
    return {"username": name, "role": USERS[name]["role"], "areas": USERS[name]["areas"]}


def _may_read(name, form, area):
    user = _user(name)
    return covers(user, area) and can_read_form(user, {"restricted_to": RESTRICTED_TO[form]})


def test_the_matrix_holds_every_kind_of_cell():
    """The fixture data itself: without refused, readable and unreadable
    cells the matrix below would prove little."""
    cells = {(covers(_user(n), a), _may_read(n, f, a))
             for n in ROLES for f in RESTRICTED_TO for a in AREAS}
    assert cells == {(False, False), (True, False), (True, True)}


@pytest.mark.parametrize("name", ROLES)
def test_a_lost_edit_answers_the_record_only_to_those_who_may_read_it(world, name):
    api, writer = world
    device = Device(api, name, f"dev-matrix-{name}")
    for (form, area), marker in markers().items():
        data, field, other = record_data(form, marker)
        # The user's edit is stamped first, so the writer's create is newer:
        # the user's value loses (no base: the user never saw the record).
        early = device.clock.now()
        record_id = writer.create(form, area, data)
        status, body = api.json("POST", "/api/v1/sync/push", device.token, {
            "device_id": device.device_id, "batch_id": str(uuid.uuid4()),
            "device_time": "2025-03-01T00:00:00Z", "app_version": "test",
            "records": [{"id": record_id, "form": form, "form_version": 1, "area": area,
                         "data": {field: other}, "hlc": early}]})
        assert status == 200, body
        [result] = body["results"]
        raw = json.dumps(body, ensure_ascii=False)
        cell = (name, form, area)
        if not covers(_user(name), area):
            assert result["status"] == "forbidden", cell
            assert "record" not in result and marker not in raw, cell
        elif _may_read(name, form, area):
            assert result["status"] == "conflict", cell
            assert result["record"]["data"][field] == marker, cell
        else:
            assert result["status"] == "conflict", cell
            assert "record" not in result, cell
            assert marker not in raw, cell


@pytest.mark.parametrize("name", ROLES)
def test_a_restamped_create_answers_the_record_only_to_those_who_may_read_it(world, name):
    api, _ = world
    device = Device(api, name, f"dev-ahead-{name}")
    ahead = format_hlc(now_ms() + 24 * 3600 * 1000, 0, device.device_id)  # a day ahead
    for (form, area), marker in markers().items():
        data, _, _ = record_data(form, marker)
        record_id = str(uuid.uuid4())
        [result] = device.push([{"id": record_id, "form": form, "form_version": 1,
                                 "area": area, "data": data, "hlc": ahead}])
        cell = (name, form, area)
        if not covers(_user(name), area):
            assert result["status"] == "forbidden" and "record" not in result, cell
        elif _may_read(name, form, area):
            assert result["status"] == "applied", cell
            # Re-stamped with a server clock: the answer says so, with the record.
            assert parse(result["record"]["hlc"]).node == "server", cell
            assert result["record"]["data"] == {**data, **result["record"]["data"]}, cell
        else:
            assert result["status"] == "applied", cell
            assert "record" not in result, cell


@pytest.fixture
def conflicts_everywhere(world):
    """An open conflict on each (form, area): two admin devices edit one
    record concurrently; its id, the record's and the values it holds."""
    api, writer = world
    other = Device(api, "admin", "dev-writer-2")
    out = {}
    for (form, area), marker in markers().items():
        data, field, value = record_data(form, marker)
        early = other.clock.now()
        record_id = writer.create(form, area, data)
        [result] = other.push([{"id": record_id, "form": form, "form_version": 1,
                                "area": area, "data": {field: value}, "hlc": early}])
        assert result["status"] == "conflict", result
        out[form, area] = record_id
    admin = api.login("admin", "dev-admin")
    status, body = api.json("GET", "/api/v1/conflicts", admin)
    assert status == 200
    by_record = {c["record_id"]: c["id"] for c in body["conflicts"]}
    assert set(by_record) == set(out.values())
    return {key: (by_record[rid], rid) for key, rid in out.items()}


def test_conflicts_are_listed_only_where_the_user_may_read(world, conflicts_everywhere):
    api, _ = world
    for name in ROLES:
        token = api.login(name, f"dev-list-{name}")
        status, body = api.json("GET", "/api/v1/conflicts", token)
        if USERS[name]["role"] == "health_worker":
            assert status == 403 and "conflicts" not in body
            assert not any(m in json.dumps(body, ensure_ascii=False)
                           for m in markers().values())
            continue
        assert status == 200
        listed = {(c["form"], c["area"]) for c in body["conflicts"]}
        assert listed == {(f, a) for f, a in conflicts_everywhere if _may_read(name, f, a)}
        raw = json.dumps(body, ensure_ascii=False)
        for (form, area), marker in markers().items():
            assert (marker in raw) == _may_read(name, form, area), (name, form, area)


def test_resolving_is_refused_and_silent_outside_role_area_and_form(world,
                                                                      conflicts_everywhere):
    api, _ = world
    tokens = {name: api.login(name, f"dev-resolve-{name}") for name in ROLES}
    admin = tokens["admin"]
    marks = markers()
    for (form, area), (conflict_id, record_id) in conflicts_everywhere.items():
        before = api.json("GET", "/api/v1/conflicts", admin)[1]["conflicts"]
        allowed = None
        for name in ROLES:
            cell = (name, form, area)
            if USERS[name]["role"] != "health_worker" and _may_read(name, form, area):
                allowed = allowed or name
                continue
            status, body = api.json("POST", f"/api/v1/conflicts/{conflict_id}/resolve",
                                    tokens[name], {"keep": "current"})
            expected = 403 if USERS[name]["role"] == "health_worker" else 404
            assert status == expected, (cell, status, body)
            assert "record" not in body and marks[form, area] not in json.dumps(
                body, ensure_ascii=False), cell
        # Nothing written by the refused calls: the log and the record as they were.
        assert api.json("GET", "/api/v1/conflicts", admin)[1]["conflicts"] == before
        # The first user allowed resolves, and gets the record.
        assert allowed is not None
        status, body = api.json("POST", f"/api/v1/conflicts/{conflict_id}/resolve",
                                tokens[allowed], {"keep": "current"})
        assert status == 200, body
        assert body["record"]["id"] == record_id
        assert marks[form, area] in json.dumps(body["record"], ensure_ascii=False)

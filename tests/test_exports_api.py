"""Exports through the API: records pushed for real, exports read back by
independent readers (csv, openpyxl, json, zipfile), area and role isolation,
the audit log, and a consistent snapshot while pushes go on."""
import csv
import io
import json
import sqlite3
import uuid
import zipfile

import openpyxl
import pytest
import requests
from openpyxl.utils.escape import unescape

from schemas.clock import Clock, time_ms
from tests.conftest import USERS

UTF8_BOM = "\ufeff"


class Api:
    """One call shape over Flask's test client or a real server (requests)."""

    def __init__(self, client=None, url=None):
        self.client, self.url = client, url

    def call(self, method, path, token=None, body=None, params=None, stream=False):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.client is not None:
            resp = self.client.open(path, method=method, headers=headers, json=body,
                                    query_string=params)
            return resp.status_code, resp.headers, resp.get_data()
        resp = requests.request(method, self.url + path, headers=headers, json=body,
                                params=params, timeout=60, stream=stream)
        if stream:
            return resp
        return resp.status_code, resp.headers, resp.content

    def json(self, method, path, token=None, body=None, params=None):
        status, _, data = self.call(method, path, token, body, params)
        return status, json.loads(data)

    def login(self, name, device_id):
        status, answer = self.json("POST", "/api/v1/auth/login", body={
            "username": name, "password": USERS[name]["password"], "device_id": device_id,
            "app_version": "test"})
        assert status == 200, answer
        return answer["token"]


class OrderedWall:
    """A wall clock shared by the test's devices: the real time, but never the
    same millisecond twice. A change stamped later in the test then has the
    later clock whichever device stamps it; two devices reading the real
    clock could share a millisecond, and the HLC would order their changes by
    device id instead (a test about "the later edit" then a coin toss)."""

    def __init__(self):
        self.last = 0

    def __call__(self):
        self.last = max(time_ms(), self.last + 1)
        return self.last


ORDERED_WALL = OrderedWall()


class Device:
    """A device signed in as `user`: its own HLC, pushes and pulls. Every
    device stamps from `ORDERED_WALL`: the order of the test's calls is the
    order of the clocks."""

    def __init__(self, api, user, device_id):
        self.api, self.device_id = api, device_id
        self.token = api.login(user, device_id)
        self.clock = Clock(device_id, wall=ORDERED_WALL)

    def push(self, changes):
        for change in changes:
            change.setdefault("hlc", self.clock.now())
        status, answer = self.api.json("POST", "/api/v1/sync/push", self.token, {
            "device_id": self.device_id, "batch_id": str(uuid.uuid4()),
            "device_time": "2025-03-01T00:00:00Z", "app_version": "test",
            "records": changes})
        assert status == 200, answer
        return answer["results"]

    def create(self, form, area, data, record_id=None):
        record_id = record_id or str(uuid.uuid4())
        [result] = self.push([{"id": record_id, "form": form, "form_version": 1,
                               "area": area, "data": data}])
        assert result["status"] == "applied", result
        return record_id

    def pull(self, cursor=None):
        params = {"cursor": cursor} if cursor else {}
        status, answer = self.api.json("GET", "/api/v1/sync/pull", self.token, params=params)
        assert status == 200, answer
        return answer


def household(name="Nguyễn Thị Hoa", **extra):
    data = {"head_name": name, "poverty_status": "poor", "registered_on": "2025-01-15",
            "status": "active", "gps": {"lat": 21.2512, "lon": 107.3521, "accuracy_m": 8.5},
            "travel_minutes_to_chs": 45}
    data.update(extra)
    return data


def birth(**extra):
    data = {"pregnancy_id": str(uuid.uuid4()), "lmp_date": "2024-06-01",
            "outcome_date": "2025-03-01", "outcome_time": "10:30", "outcome_type": "live_birth",
            "ga_weeks_at_outcome": 39, "n_babies": 2, "place": "CHS", "attendant": "midwife",
            "mode": "vaginal", "mother_outcome": "alive_well",
            "baby": [{"status": "alive", "child_id": str(uuid.uuid4()), "sex": "female",
                      "birth_weight_g": 2900, "birth_length_cm": 49.5,
                      "breastfed_within_1h": "yes"},
                     {"status": "fresh_stillbirth", "sex": "male", "birth_weight_g": 2450}]}
    data.update(extra)
    return data


def anc(**extra):
    data = {"pregnancy_id": str(uuid.uuid4()), "lmp_date": "2024-09-01",
            "visit_date": "2025-02-20", "contact_type": "anc_checkup", "provider": "midwife",
            "place": "CHS", "weight_kg": 52.5, "bp_systolic": 110, "bp_diastolic": 70,
            "danger_signs": ["bleeding", "fever"], "referred_to": "district",
            "haemoglobin_g_dl": 11.2}
    data.update(extra)
    return data


def cp_report():
    return {"report_date": "2025-02-01", "case_type": ["early_marriage"],
            "union_type": "customary_ceremony", "union_date": "2025-01-10",
            "union_date_precision": "exact", "party_a_sex": "female",
            "party_a_dob": "2009-05-01", "party_a_ethnicity_code": "09",
            "party_b_sex": "male", "party_b_dob": "2005-02-02", "party_b_ethnicity_code": "09",
            "source": "home_visit", "action_taken": ["family_counselled"]}


def csv_rows(data, bom=False):
    text = data.decode("utf-8")
    assert text.startswith(UTF8_BOM) == bom
    return list(csv.DictReader(io.StringIO(text.lstrip(UTF8_BOM), newline="")))


def unquote(cell):
    return cell[1:] if cell.startswith("'") else cell


@pytest.fixture
def api(client):
    return Api(client=client)


@pytest.fixture
def world(api):
    """Records in two communes: QN.LM (sup's) and QN.TB (not sup's)."""
    hw = Device(api, "hw", "dev-hw-1")
    hw2 = Device(api, "hw2", "dev-hw2-1")
    ids = {
        "hoa": hw.create("household", "QN.LM.03", household()),
        "mai": hw.create("household", "QN.LM.03", household(
            "Triệu Thị Mai", address_detail="=HYPERLINK(\"http://x\")", phone="0912345678",
            gps=None)),
        "dao": hw.create("household", "QN.LM.03",
                         household("Bàn Thị Dao", address_detail="-x")),
        "tb": hw2.create("household", "QN.TB.01", household("Lý Văn Sáu")),
        "birth": hw.create("pregnancy_outcome", "QN.LM.03", birth()),
        "anc": hw.create("anc_visit", "QN.LM.03", anc()),
        "cp": hw.create("cp_report", "QN.LM.03", cp_report()),
    }
    return {"hw": hw, "hw2": hw2, "ids": ids,
            "sup": api.login("sup", "dev-sup-1"), "admin": api.login("admin", "dev-admin-1")}


def export(api, token, name, **params):
    status, headers, data = api.call("GET", f"/api/v1/exports/{name}", token, params=params)
    return status, headers, data


def test_csv_export_reads_back_the_records_exactly(api, world):
    status, headers, data = export(api, world["sup"], "household.csv", bom="1")
    assert status == 200, data
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="household.csv"' in headers["Content-Disposition"]
    assert headers["X-Fieldsync-Count"] == "3"
    rows = csv_rows(data, bom=True)
    assert list(rows[0])[:3] == ["id", "area", "head_name"]
    assert list(rows[0])[-6:] == ["created_by", "created_at", "updated_at", "device", "flags",
                                  "warnings"]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {world["ids"][k] for k in ("hoa", "mai", "dao")}   # not QN.TB
    hoa, mai, dao = (by_id[world["ids"][k]] for k in ("hoa", "mai", "dao"))
    assert hoa["head_name"] == "Nguyễn Thị Hoa" and hoa["area"] == "QN.LM.03"
    assert hoa["gps"] == "21.2512 107.3521 8.5" and hoa["travel_minutes_to_chs"] == "45"
    assert hoa["registered_on"] == "2025-01-15" and hoa["created_by"] == "hw"
    assert hoa["device"] == "dev-hw-1" and hoa["flags"] == ""
    assert mai["head_name"] == "Triệu Thị Mai" and mai["phone"] == "0912345678"
    assert mai["address_detail"] == "'=HYPERLINK(\"http://x\")"        # neutralised
    assert unquote(dao["address_detail"]) == "-x" and dao["address_detail"] == "'-x"


def test_xlsx_export_has_typed_cells_and_a_sheet_per_repeat(api, world, tmp_path):
    status, headers, data = export(api, world["sup"], "pregnancy_outcome.xlsx")
    assert status == 200
    assert int(headers["Content-Length"]) == len(data)
    path = tmp_path / "po.xlsx"
    path.write_bytes(data)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["pregnancy_outcome", "pregnancy_outcome.baby"]
    rows = list(book["pregnancy_outcome"].values)
    header, row = rows[0], dict(zip(rows[0], rows[1]))
    assert len(rows) == 2
    assert header[:4] == ("id", "area", "pregnancy_id", "lmp_date")
    computed_at = header.index("mother_death_days_after_outcome")
    assert header.index("baby") < computed_at < header.index("created_by")
    assert row["id"] == world["ids"]["birth"]
    assert row["outcome_date"].date().isoformat() == "2025-03-01"   # a date cell
    assert row["outcome_time"].isoformat() == "10:30:00"
    assert row["ga_weeks_at_outcome"] == 39 and row["baby"] == 2
    assert row["baby_entries"] == 2                                    # computed, a number
    babies = list(book["pregnancy_outcome.baby"].values)
    assert babies[0][:4] == ("parent_id", "index", "status", "child_id")
    first, second = (dict(zip(babies[0], b)) for b in babies[1:])
    assert first["parent_id"] == second["parent_id"] == world["ids"]["birth"]
    assert (first["index"], second["index"]) == (1, 2)
    assert first["birth_length_cm"] == 49.5 and first["birth_weight_g"] == 2900
    assert second["status"] == "fresh_stillbirth" and second["child_id"] is None


def test_xlsx_text_cells_are_never_formulas(api, world, tmp_path):
    status, _, data = export(api, world["sup"], "household.xlsx")
    path = tmp_path / "hh.xlsx"
    path.write_bytes(data)
    sheet = openpyxl.load_workbook(path)["household"]
    header = [c.value for c in sheet[1]]
    cells = {unescape(c.value): c for c in sheet.iter_cols(
        min_col=header.index("address_detail") + 1,
        max_col=header.index("address_detail") + 1, min_row=2).__next__() if c.value}
    formula = cells["=HYPERLINK(\"http://x\")"]
    assert formula.data_type == "s" and formula.quotePrefix
    travel = [c.value for c in sheet.iter_cols(min_col=header.index("travel_minutes_to_chs") + 1,
                                               max_col=header.index("travel_minutes_to_chs") + 1,
                                               min_row=2).__next__()]
    assert travel == [45, 45, 45]


def test_jsonl_export_equals_what_devices_pull(api, world):
    status, headers, data = export(api, world["sup"], "anc_visit.jsonl")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    [line] = [json.loads(x) for x in data.decode("utf-8").splitlines()]
    pulled = {r["id"]: r for r in world["hw"].pull()["records"]}
    assert line["data"] == pulled[world["ids"]["anc"]]["data"]
    assert line["data"]["weight_kg"] == 52.5
    assert line["data"]["danger_signs"] == ["bleeding", "fever"]
    assert isinstance(line["computed"].get("ga_weeks"), int)


def test_all_zip_and_all_xlsx_hold_every_readable_form(api, world, tmp_path):
    status, _, data = export(api, world["sup"], "all.zip")
    assert status == 200
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    assert "household.csv" in names and "pregnancy_outcome.baby.csv" in names
    assert "pnc_visit.baby.csv" in names and "cp_report.csv" in names   # sup may read cp
    assert len(csv_rows(archive.read("household.csv"))) == 3
    assert len(csv_rows(archive.read("pregnancy_outcome.baby.csv"))) == 2
    status, headers, data = export(api, world["sup"], "all.xlsx")
    assert status == 200 and headers["X-Fieldsync-Count"] == "6"
    path = tmp_path / "all.xlsx"
    path.write_bytes(data)
    book = openpyxl.load_workbook(path, read_only=True)
    assert book["household"].max_row == 4 and book["cp_report"].max_row == 2


def test_filters_since_until_version_deleted_and_repeat(api, world):
    status, headers, data = export(api, world["sup"], "household.csv")
    next_since = headers["X-Fieldsync-Next-Since"]     # the cp_report, pushed last
    _, headers, _ = export(api, world["sup"], "household.csv", since=next_since)
    assert headers["X-Fieldsync-Count"] == "0"
    _, headers, _ = export(api, world["sup"], "household.csv", until=next_since)
    assert headers["X-Fieldsync-Count"] == "3"
    _, headers, _ = export(api, world["sup"], "household.csv", until="2000-01-01")
    assert headers["X-Fieldsync-Count"] == "0"
    _, headers, _ = export(api, world["sup"], "household.csv", version="1")
    assert headers["X-Fieldsync-Count"] == "3"
    _, headers, _ = export(api, world["sup"], "household.csv", version="2")   # published, unused
    assert headers["X-Fieldsync-Count"] == "0"
    assert export(api, world["sup"], "household.csv", version="3")[0] == 404
    # Delete one household: gone by default, back with include_deleted.
    [result] = world["hw"].push([{"id": world["ids"]["dao"], "form": "household",
                                  "form_version": 1, "area": "QN.LM.03", "data": {},
                                  "deleted": True}])
    assert result["status"] == "applied", result
    _, headers, data = export(api, world["sup"], "household.csv")
    assert len(csv_rows(data)) == 2
    rows = csv_rows(export(api, world["sup"], "household.csv", include_deleted="1")[2])
    assert {r["id"]: r["deleted"] for r in rows}[world["ids"]["dao"]] == "yes"
    assert len(rows) == 3
    # "Everything since my last export": the deletion only.
    since = export(api, world["sup"], "household.csv", since=next_since, include_deleted="1")
    assert [r["id"] for r in csv_rows(since[2])] == [world["ids"]["dao"]]
    babies = csv_rows(export(api, world["sup"], "pregnancy_outcome.csv", repeat="baby")[2])
    assert [(b["parent_id"], b["index"]) for b in babies] == [
        (world["ids"]["birth"], "1"), (world["ids"]["birth"], "2")]


BAD_REQUESTS = [
    ("household.csv", {"aera": "QN"}, 400, "invalid_parameter"),
    ("household.csv", {"since": "yesterday"}, 400, "invalid_parameter"),
    ("household.csv", {"version": "x"}, 400, "invalid_parameter"),
    # str.isdigit() accepts these; int() refuses '²' (was a 500) and reads
    # Arabic-Indic digits: only ASCII digits are numbers.
    ("household.csv", {"version": "\u00b2"}, 400, "invalid_parameter"),
    ("household.csv", {"version": "\u0661"}, 400, "invalid_parameter"),
    ("household.csv", {"version": "1" * 5000}, 400, "invalid_parameter"),
    ("household.csv", {"bom": "maybe"}, 400, "invalid_parameter"),
    ("household.csv", {"area": "qn.lm"}, 400, "invalid_parameter"),
    ("household.pdf", {}, 400, "invalid_parameter"),
    ("all.csv", {}, 400, "invalid_parameter"),
    ("all.zip", {"version": "1"}, 400, "invalid_parameter"),
    ("household.xlsx", {"repeat": "baby"}, 400, "invalid_parameter"),
    ("household.csv", {"repeat": "baby"}, 404, "not_found"),
    ("nosuchform.csv", {}, 404, "not_found"),
    ("household", {}, 404, "not_found"),
    ("household.csv", {"area": "QN.TB"}, 403, "forbidden"),
    ("household.csv", {"area": "QN.LMX"}, 403, "forbidden"),
]


def test_bad_export_requests_get_clear_errors(api):
    sup = api.login("sup", "dev-sup-1")
    for name, params, status, code in BAD_REQUESTS:
        got, headers, data = export(api, sup, name, **params)
        body = json.loads(data)
        assert (got, body["error"]) == (status, code), (name, params, body)
        assert body["message"] and headers["Content-Type"] == "application/json"


def test_area_and_role_isolation(api, world):
    # A broader area than the supervisor's is cut down to theirs.
    rows = csv_rows(export(api, world["sup"], "household.csv", area="QN")[2])
    assert {r["area"] for r in rows} == {"QN.LM.03"}
    rows = csv_rows(export(api, world["sup"], "household.csv", area="QN.LM.03")[2])
    assert len(rows) == 3
    # The admin sees both communes; an area narrows it.
    rows = csv_rows(export(api, world["admin"], "household.csv")[2])
    assert {r["area"] for r in rows} == {"QN.LM.03", "QN.TB.01"}
    rows = csv_rows(export(api, world["admin"], "household.csv", area="QN.TB")[2])
    assert [r["head_name"] for r in rows] == ["Lý Văn Sáu"]
    # Health workers do not export at all, whatever the form.
    for name in ("household.csv", "all.zip", "cp_report.jsonl"):
        status, _, data = export(api, world["hw"].token, name)
        assert status == 403 and json.loads(data)["error"] == "forbidden"
    status, _, _ = export(api, None, "household.csv")
    assert status == 401


def test_restricted_forms_only_for_their_roles(api, world, db_path):
    """A form restricted to admins: a supervisor can neither export it nor find
    it in all.*; the admin can, and the read is audited."""
    from server.catalog import publish
    from server.db import connect
    secret = {"id": "secret_note", "version": 1, "title": "Admin only",
              "restricted_to": ["admin"],
              "fields": [{"name": "note", "type": "text", "required": True}]}
    publish(connect(str(db_path)), secret)
    world["hw"].create("secret_note", "QN.LM.03", {"note": "Bàn Thị Dao: =1+1"})
    status, _, data = export(api, world["sup"], "secret_note.csv")
    assert status == 403 and json.loads(data)["error"] == "forbidden"
    names = zipfile.ZipFile(io.BytesIO(export(api, world["sup"], "all.zip")[2])).namelist()
    assert "secret_note.csv" not in names
    status, _, data = export(api, world["admin"], "secret_note.csv")
    assert status == 200
    assert [unquote(r["note"]) for r in csv_rows(data)] == ["Bàn Thị Dao: =1+1"]
    audit = audit_rows(db_path)
    reads = [d for a, u, d in audit if a == "restricted_read" and u == "admin"]
    assert reads and reads[-1]["forms"] == ["secret_note"]


def audit_rows(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return [(a, u, json.loads(d)) for a, u, d in conn.execute(
            "SELECT action, username, details FROM audit ORDER BY id")]
    finally:
        conn.close()


def test_every_export_is_audited_with_filters_and_row_count(api, world, db_path):
    export(api, world["sup"], "household.csv", area="QN.LM", since="2025-01-01")
    export(api, world["sup"], "cp_report.csv")
    exports_ = [(u, d) for a, u, d in audit_rows(db_path) if a == "export"]
    assert exports_[-2][0] == "sup"
    details = exports_[-2][1]
    assert details["target"] == "household" and details["format"] == "csv"
    assert details["rows"] == 3
    assert details["filters"]["area"] == "QN.LM"
    assert details["filters"]["since"] == "2024-12-31T17:00:00.000Z"   # Vietnam midnight
    restricted = [d for a, u, d in audit_rows(db_path) if a == "restricted_read"]
    assert restricted[-1]["forms"] == ["cp_report"] and restricted[-1]["rows"] == 1
    # Nothing of the records themselves goes to the audit log.
    assert "Nguyễn" not in json.dumps(audit_rows(db_path), ensure_ascii=False)


def push_households(device, names):
    """Create one household per name, 1000 per batch; return their ids in order."""
    ids = []
    for start in range(0, len(names), 1000):
        changes = [{"id": str(uuid.uuid4()), "form": "household", "form_version": 1,
                    "area": "QN.LM.03", "data": household(name)}
                   for name in names[start:start + 1000]]
        ids += [c["id"] for c in changes]
        assert {r["status"] for r in device.push(changes)} == {"applied"}
    return ids


def test_export_is_a_snapshot_while_pushes_commit_mid_stream(app, client):
    """Deterministic: the export is paused after its first chunk (the test
    client runs the stream lazily), pushes commit new records and edit one the
    export has not read yet, then the export resumes: it shows neither."""
    app.config["EXPORT_CHUNK_RECORDS"] = 50
    api = Api(client=client)
    hw = Device(api, "hw", "dev-hw-snap")
    ids = push_households(hw, [f"Hộ {i:03d} Đặng Thị Mây" for i in range(400)])
    sup = api.login("sup", "dev-sup-snap")
    resp = client.get("/api/v1/exports/household.csv", buffered=False,
                      headers={"Authorization": f"Bearer {sup}"})
    assert resp.status_code == 200 and resp.headers["X-Fieldsync-Count"] == "400"
    stream = iter(resp.response)
    head = next(stream)
    assert 0 < head.count(b"\n") < 400              # paused part-way
    push_households(hw, ["Mới"] * 30)
    [edit] = hw.push([{"id": ids[-1], "form": "household", "form_version": 1,
                       "area": "QN.LM.03", "data": {"head_name": "Đã sửa"}}])
    assert edit["status"] == "applied"
    rows = csv_rows(head + b"".join(stream))
    resp.close()
    assert [r["id"] for r in rows] == ids             # in commit order, none torn
    assert rows[-1]["head_name"] == "Hộ 399 Đặng Thị Mây"
    later = csv_rows(export(api, sup, "household.csv")[2])
    assert len(later) == 430 and later[-1]["head_name"] == "Đã sửa"   # edited: last seq


def test_export_during_concurrent_pushes_through_the_real_server(server_process):
    """The same with the real server: pushes from another connection while a
    supervisor downloads; the file holds exactly the records of its start."""
    api = Api(url=server_process.url)
    hw = Device(api, "hw", "dev-hw-snap")
    ids = push_households(hw, [f"Hộ {i:04d} Đặng Thị Mây" for i in range(2000)])
    sup = api.login("sup", "dev-sup-snap")
    resp = api.call("GET", "/api/v1/exports/household.csv", sup, stream=True)
    assert resp.status_code == 200 and resp.headers["X-Fieldsync-Count"] == "2000"
    chunks = resp.iter_content(chunk_size=4096)
    head = next(chunks)
    push_households(hw, ["Mới"] * 200)
    [edit] = hw.push([{"id": ids[-1], "form": "household", "form_version": 1,
                       "area": "QN.LM.03", "data": {"head_name": "Đã sửa"}}])
    assert edit["status"] == "applied"
    rows = csv_rows(head + b"".join(chunks))
    assert [r["id"] for r in rows] == ids
    assert rows[-1]["head_name"] == "Hộ 1999 Đặng Thị Mây"
    later = csv_rows(api.call("GET", "/api/v1/exports/household.csv", sup)[2])
    assert len(later) == 2200

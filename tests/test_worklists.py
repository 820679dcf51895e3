"""Issue 15: work lists over records pushed through the API, and the report
command's files read back (csv, openpyxl, json). Expected rows and days
overdue are worked out here from the lists' definitions."""
import csv
import io
import json
from datetime import date, timedelta

import openpyxl

from tests.conftest import login, run_cli
from tests.test_indicators import AREA, PERIOD, World, uid, woman_with_birth

ON = "2026-04-20"


def worklist(world, name, token=None, **params):
    resp = world.client.get(f"/api/v1/worklists/{name}",
                            query_string={"area": AREA, "on": ON, **params},
                            headers={"Authorization": f"Bearer {token or world.sup()}"})
    return resp.status_code, resp.get_json()


def test_sam_mam_lists_children_by_latest_measurement(client):
    world = World(client)
    dob = "2025-01-01"
    sam = world.person(sex="male", dob=dob, full_name="Bé Nặng")
    world.growth(sam, dob, "male", "2026-04-01", 7.0, 75.0, muac=118)       # WHZ < -3: SAM
    recovered = world.person(sex="male", dob=dob)
    world.growth(recovered, dob, "male", "2026-01-10", 7.0, 75.0, muac=118)
    world.growth(recovered, dob, "male", "2026-03-10", 9.6, 76.0, muac=140)  # latest normal
    mam = world.person(sex="female", dob=dob)
    world.growth(mam, dob, "female", "2026-04-15", 8.6, 73.0, muac=120)
    status, body = worklist(world, "sam_mam")
    assert status == 200
    rows = {r["person"]["id"]: r for r in body["rows"]}
    assert set(rows) == {sam, mam}
    assert rows[sam]["fact"] == "sam" and rows[mam]["fact"] == "mam"
    assert rows[sam]["person"]["name"] == "Bé Nặng"
    # Follow-up due 14 days after the assessment.
    assert rows[sam]["days_overdue"] == (date.fromisoformat(ON) - date(2026, 4, 1)).days - 14
    assert rows[mam]["days_overdue"] == 0
    assert rows[sam]["details"]["referred_to"] == "district"


def test_past_edd_and_home_visit_lists(client):
    world = World(client)
    woman = world.person()
    lmp = "2025-06-01"
    edd = date.fromisoformat(lmp) + timedelta(days=280)
    world.pregnancy(woman, lmp=lmp)     # ongoing, no outcome
    on = date.fromisoformat(ON)
    status, body = worklist(world, "past_edd_no_outcome")
    assert [r["person"]["id"] for r in body["rows"]] == [woman]
    assert body["rows"][0]["days_overdue"] == (on - edd).days - 14
    # A home birth 20 days before ON with no visit: overdue for day 7 by 13 days.
    mother, preg = woman_with_birth(world, (on - timedelta(days=20)).isoformat(), 4,
                                    place="home", attendant="relative")
    status, body = worklist(world, "no_home_visit_day7")
    assert [(r["person"]["id"], r["days_overdue"]) for r in body["rows"]] == [(mother, 13)]
    status, body = worklist(world, "no_home_visit_day42")
    assert body["rows"] == []   # day 42 not reached yet


def test_growth_overdue_and_hi_expiring(client):
    world = World(client)
    on = date.fromisoformat(ON)
    baby = world.person(sex="female", dob="2025-10-01")          # under 2, never weighed
    toddler = world.person(sex="male", dob="2023-06-01")         # 2–5 y
    world.growth(toddler, "2023-06-01", "male", "2026-01-01", 13.0, 92.0)
    card = world.person(hi_has_card="yes", hi_number="2212345678", hi_object_code="DT",
                        hi_valid_from="2026-01-01",
                        hi_valid_to=(on + timedelta(days=10)).isoformat())
    status, body = worklist(world, "growth_overdue")
    rows = {r["person"]["id"]: r["days_overdue"] for r in body["rows"]}
    assert rows[baby] == (on - date(2025, 10, 1)).days - 60
    assert toddler not in rows     # weighed 109 days ago, due every 180
    status, body = worklist(world, "hi_expiring_30d")
    assert [(r["person"]["id"], r["days_overdue"]) for r in body["rows"]] == [(card, -10)]


def test_worklist_access_and_unknown_names(client):
    world = World(client)
    assert worklist(world, "sam_mam", token=world.token)[0] == 403
    assert worklist(world, "sam_mam", area="QN.TB")[0] == 403
    assert worklist(world, "nope")[0] == 404
    status, body = worklist(world, "sam_mam", on="2026-02-30")
    assert status == 400 and body["details"]["parameter"] == "on"


def test_report_command_files_read_back(client, db_path, tmp_path):
    world = World(client)
    woman_with_birth(world, "2026-02-01", 4)
    woman_with_birth(world, "2026-02-01", 2, place="home", eth="01")
    args = ["report", "indicators", "--area", AREA, "--from", PERIOD["from"],
            "--to", PERIOD["to"]]
    as_json = json.loads(run_cli(db_path, *args, "--format", "json").stdout)
    fac = {i["id"]: i for i in as_json["indicators"]}["facility_delivery"]
    assert (fac["numerator"], fac["denominator"]) == (1, 2)
    out = tmp_path / "q1.csv"
    run_cli(db_path, *args, "--format", "csv", "--out", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8"))))
    head = [r for r in rows if r["id"] == "facility_delivery" and not r["breakdown"]]
    assert head[0]["numerator"] == "1" and head[0]["denominator"] == "2"
    out = tmp_path / "q1.xlsx"
    run_cli(db_path, *args, "--format", "xlsx", "--out", str(out))
    book = openpyxl.load_workbook(out)
    assert {"indicators", "ethnicity", "mother_age", "sex", "area"} <= set(book.sheetnames)
    eth = [r for r in book["ethnicity"].iter_rows(values_only=True)
           if r[1] == "facility_delivery"]
    assert {(r[0], r[3], r[4]) for r in eth} == {("kinh", 0, 1), ("ethnic_minority", 1, 1)}
    out = tmp_path / "sam.csv"
    run_cli(db_path, "report", "worklist", "sam_mam", "--area", AREA, "--format", "csv",
            "--out", str(out))
    assert out.read_text("utf-8").splitlines()[0].startswith("person_id,name,area,fact")
    bad = run_cli(db_path, *args[:-2], "--to", "2026-02-31", check=False)
    assert bad.returncode != 0 and "to" in bad.stderr


def test_openapi_documents_indicators_and_worklists(client):
    doc = client.get("/api/openapi.json").get_json()
    params = {p["name"] for p in doc["paths"]["/api/v1/indicators"]["get"]["parameters"]}
    assert {"area", "from", "to", "lang"} <= params
    names = doc["paths"]["/api/v1/worklists/{name}"]["get"]["parameters"][0]["schema"]["enum"]
    assert "sam_mam" in names and "growth_overdue" in names
    assert "IndicatorReport" in doc["components"]["schemas"]


def test_migration_backfills_facts_of_stored_records(client, db_path):
    import sqlite3
    world = World(client)
    woman_with_birth(world, "2026-02-01", 4)
    conn = sqlite3.connect(db_path)
    before = conn.execute("SELECT id, form, area, subject, day, f FROM facts ORDER BY id").fetchall()
    assert len(before) == 7   # person, pregnancy, 4 ANC contacts, outcome
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    from server import migrations
    position = [fn.__name__ for fn in migrations.MIGRATIONS].index("m009_indicator_facts") + 1
    conn.execute("DROP TABLE facts")
    conn.execute(f"PRAGMA user_version = {position - 1}")
    conn.commit()
    conn.close()
    run_cli(db_path, "init")
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    after = conn.execute("SELECT id, form, area, subject, day, f FROM facts ORDER BY id").fetchall()
    assert after == before

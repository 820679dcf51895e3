"""The `facts` table (server/indicators/facts.py) follows each record through
pushes: a create writes its row, an edit rewrites it in place, a delete
removes it; what is kept equals a rebuild from the records. Migration 12's
partial index serves the one query that finds facts by subject."""
import sqlite3

from server import migrations
from server.db import connect
from server.indicators import facts
from tests.conftest import hlc_at, now_ms, run_cli
from tests.test_indicators import AREA, World, uid, woman_with_birth
from tests.test_indicators_more import pnc

COLUMNS = "id, form, area, subject, day, f"


def change(world, record_id, form, data, version=2, **extra):
    """Push one change of an existing record; return its result."""
    world.counter += 1
    resp = world.client.post("/api/v1/sync/push", headers=world.auth(), json={
        "device_id": world.device, "batch_id": uid(), "device_time": "2026-12-01T00:00:00Z",
        "app_version": "test", "records": [{
            "id": record_id, "form": form, "form_version": version, "area": AREA,
            "data": data, "hlc": hlc_at(now_ms(), world.device, world.counter), **extra}]})
    assert resp.status_code == 200, resp.get_json()
    [result] = resp.get_json()["results"]
    return result


def rows(conn):
    return conn.execute(f"SELECT {COLUMNS} FROM facts ORDER BY id").fetchall()


def rebuilt(db_path):
    """The facts a rebuild from the stored records gives (as migration 10 does)."""
    db = connect(str(db_path))
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM facts")
        facts.backfill(db)
        out = rows(db.conn)
        db.execute("ROLLBACK")
        return out
    finally:
        db.conn.close()


def test_edits_rewrite_the_row_and_a_delete_removes_it(client, db_path):
    world = World(client)
    mother, preg = woman_with_birth(world, "2026-02-01", 1)
    other = world.pregnancy(mother, lmp="2025-06-01")
    child = world.person(sex="male", dob="2025-01-01")
    growth = world.growth(child, "2025-01-01", "male", "2026-03-01", 9.0, 75.0)
    visit = pnc(world, preg, "2026-02-01", "2026-02-03")
    conn = sqlite3.connect(db_path)
    [(_, form, area, subject, day, _)] = conn.execute(
        f"SELECT {COLUMNS} FROM facts WHERE id = ?", [growth]).fetchall()
    assert (form, area, subject, day) == ("growth", AREA, child, "2026-03-01")
    # An edit of the event date and a value: same row, new day and values.
    assert change(world, growth, "growth", {"measured_on": "2026-03-05",
                                            "weight_kg": 9.4})["status"] == "applied"
    [(subject, day, f)] = conn.execute("SELECT subject, day, f FROM facts WHERE id = ?",
                                       [growth]).fetchall()
    assert (subject, day) == (child, "2026-03-05") and '"age":428' in f
    # An edit that moves a PNC visit to another pregnancy: found under the
    # new subject only, through the index the indicators use.
    assert change(world, visit, "pnc_visit", {"pregnancy_id": other})["status"] == "applied"
    by_subject = ("SELECT id FROM facts INDEXED BY idx_facts_pnc_subject "
                  "WHERE form = 'pnc_visit' AND subject = ?")
    assert conn.execute(by_subject, [other]).fetchall() == [(visit,)]
    assert conn.execute(by_subject, [preg]).fetchall() == []
    # A delete removes the row; the others stay.
    assert change(world, growth, "growth", {}, deleted=True)["status"] == "applied"
    assert conn.execute("SELECT count(*) FROM facts WHERE id = ?", [growth]).fetchone()[0] == 0
    kept = rows(conn)
    assert {r[0] for r in kept} >= {mother, preg, other, child, visit}
    assert kept == rebuilt(db_path)


def test_migration_12_keeps_the_facts_and_indexes_only_pnc_visits(client, db_path):
    # A database at version 11 (every form's subject indexed): `init` drops
    # that index for the partial one; facts and figures are unchanged.
    world = World(client)
    mother, preg = woman_with_birth(world, "2026-02-01", 4)
    pnc(world, preg, "2026-02-01", "2026-02-02", role="CHS_staff")
    before = world.indicators()
    conn = sqlite3.connect(db_path)
    facts_before = rows(conn)
    conn.execute("DROP INDEX idx_facts_pnc_subject")
    conn.execute("CREATE INDEX idx_facts_subject ON facts (subject, form, day)")
    conn.execute("PRAGMA user_version = 11")
    conn.commit()
    conn.close()
    run_cli(db_path, "init")
    db = connect(str(db_path))
    assert migrations.current_version(db) == migrations.latest_version()
    indexes = {name: sql for name, sql in db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'facts'")}
    assert "idx_facts_subject" not in indexes
    assert "WHERE form = 'pnc_visit'" in indexes["idx_facts_pnc_subject"]
    assert rows(db.conn) == facts_before
    assert world.indicators() == before
    # A birth's PNC visits are still found by subject, not by a scan.
    sql = ("EXPLAIN QUERY PLAN SELECT id FROM facts AS v "
           "WHERE v.form = 'pnc_visit' AND v.subject = ?")
    plan = " ".join(r[3] for r in db.execute(sql, [preg]))
    assert "idx_facts_pnc_subject" in plan, plan

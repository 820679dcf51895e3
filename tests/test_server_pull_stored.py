"""Pull from stored JSON (`records.wire`) and per-area walks: same answers as before.

Pull joins each record's stored wire JSON instead of decoding and re-encoding
its state, and walks a small scope's own areas along (area, seq) instead of
every later seq. These tests pin that neither changes a byte of what devices
receive, whatever path wrote the row.
"""
import json
import random

import orjson
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import batch, change, hlc_at, household, login, now_ms
from schemas import merge as merging
from server.storage import decode_state


def _auth(client, name, device):
    return {"Authorization": "Bearer " + login(client, name, device)}


def _push(client, headers, device, *records):
    resp = client.post("/api/v1/sync/push", json=batch(device, list(records)), headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["results"]


def _expected(db_path, ids_in_order, clocks="all"):
    conn = sqlite3.connect(db_path)
    rows = {rid: (decode_state(state), seq) for rid, state, seq in
            conn.execute("SELECT id, state, seq FROM records")}
    conn.close()
    return [merging.to_wire(*rows[rid], clocks=clocks) for rid in ids_in_order]


def _every_clock(record):
    """Each field's clock, read as `merge.from_wire` reads a pulled record."""
    base = record.get("common_hlc") or record["hlc"]
    return {name: record["clocks"].get(name, base) for name in record["data"]}


def test_a_page_joined_from_stored_json_is_each_record_to_wire(client):
    h = _auth(client, "hw", "dev-a")
    t = now_ms() - 60_000
    a = change(household(head_name="Nguyễn Thị Ánh \"Út\""), hlc=hlc_at(t, "dev-a"))
    b = change(household(), hlc=hlc_at(t + 1, "dev-a"))
    _push(client, h, "dev-a", a, b)
    _push(client, h, "dev-a", change({"phone": "0911111111"}, hlc=hlc_at(t + 2, "dev-a"),
                                     record_id=a["id"]))
    _push(client, h, "dev-a", change({}, hlc=hlc_at(t + 3, "dev-a"), record_id=b["id"],
                                     deleted=True))
    resp = client.get("/api/v1/sync/pull", headers=h)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    page = resp.get_json()
    assert [r["id"] for r in page["records"]] == [a["id"], b["id"]]
    assert page["records"] == _expected(client.application.config["DB"], [a["id"], b["id"]])
    assert page["records"][1]["deleted"] is True and page["records"][1]["tombstone"]
    assert "Nguyễn Thị Ánh \\\"Út\\\"".encode() in resp.get_data()  # UTF-8, escaped quotes
    # Every field's clock by default; with clocks=sparse only those that
    # differ from hlc (a's phone was edited later: the other fields differ).
    assert set(page["records"][0]["clocks"]) == set(page["records"][0]["data"])
    sparse = client.get("/api/v1/sync/pull?clocks=sparse", headers=h).get_json()
    assert sparse["records"] == _expected(client.application.config["DB"],
                                          [a["id"], b["id"]], clocks="sparse")
    assert "phone" not in sparse["records"][0]["clocks"]
    assert set(sparse["records"][0]["clocks"]) == set(page["records"][0]["data"]) - {"phone"}
    assert (sparse["cursor"], sparse["more"]) == (page["cursor"], page["more"])
    # With clocks=common, against the clock the other fields share: only phone.
    common = client.get("/api/v1/sync/pull?clocks=common", headers=h).get_json()
    assert common["records"] == _expected(client.application.config["DB"],
                                          [a["id"], b["id"]], clocks="common")
    edited = common["records"][0]
    assert edited["common_hlc"] == a["hlc"] and edited["clocks"] == {"phone": edited["hlc"]}
    deleted = common["records"][1]  # its hlc is the tombstone's, no field's
    assert deleted["common_hlc"] == b["hlc"] and deleted["clocks"] == {}
    for mode in (sparse, common):  # every mode says the same clocks
        assert [_every_clock(r) for r in mode["records"]] == \
            [r["clocks"] for r in page["records"]]
    bad = client.get("/api/v1/sync/pull?clocks=some", headers=h)
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_clocks"


def test_rows_without_stored_wire_or_with_a_stale_one_are_served_from_state(client):
    h = _auth(client, "hw", "dev-a")
    t = now_ms() - 60_000
    a, b = (change(household(), hlc=hlc_at(t + i, "dev-a")) for i in range(2))
    _push(client, h, "dev-a", a, b)
    db_file = client.application.config["DB"]
    conn = sqlite3.connect(db_file, isolation_level=None)
    assert conn.execute("SELECT count(*) FROM records WHERE wire IS NULL").fetchone()[0] == 0
    conn.execute("UPDATE records SET wire = NULL WHERE id = ?", [a["id"]])
    # Another writer changes a state and forgets `wire`: the trigger clears it.
    state = decode_state(conn.execute("SELECT state FROM records WHERE id = ?",
                                      [b["id"]]).fetchone()[0])
    state["fields"]["head_name"]["value"] = "Changed Elsewhere"  # stored unpacked: also read
    conn.execute("UPDATE records SET state = ? WHERE id = ?", [json.dumps(state), b["id"]])
    assert conn.execute("SELECT wire FROM records WHERE id = ?", [b["id"]]).fetchone()[0] is None
    conn.close()
    page = client.get("/api/v1/sync/pull", headers=h).get_json()
    assert page["records"] == _expected(db_file, [a["id"], b["id"]])
    assert page["records"][1]["data"]["head_name"] == "Changed Elsewhere"


def test_a_small_scope_walks_its_own_areas_along_area_seq(app):
    from server.db import connect
    from server.storage import area_query, pull_query
    db = connect(app.config["DB"])
    sql, params = area_query(["QN.LM.03", "QN.LM.04", "QN.LM.05"], 0, ["cp_report"])
    plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params + [500]))
    assert plan.count("USING INDEX idx_records_area_seq (area=? AND seq>?)") == 3, plan
    assert "MERGE" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    names = {r[1] for r in db.execute("PRAGMA index_list(records)")}
    assert "idx_records_seq" not in names  # the UNIQUE seq index serves pull_query
    sql, params = pull_query({"role": "supervisor", "areas": ["QN"]}, [])
    plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql,
                                                  [0] + params + [10]))
    assert "idx_records_area_seq" not in plan, plan


# -- both plans give the same pages as a filter over every row -----------------

AREAS = ["QN", "QN.LM", "QN.LM.03", "QN.LM.03.A", "QN.LM.04", "QN.LMX", "QN.TB.01",
         "QN.TB.01.B", "QN.TB.02", "HN.01"]
FORMS = ["household", "cp_report", "growth"]


def _fill(db_path, n=240):
    """`n` rows in random areas/forms, some updated (new seq), some without wire."""
    from server.db import connect, write_transaction
    from server.storage import encode_state, wire_text
    rnd = random.Random(7)
    db = connect(str(db_path))
    with write_transaction(db):
        seq = 0
        for i in range(n):
            form, area = rnd.choice(FORMS), rnd.choice(AREAS)
            rid = f"00000000-0000-4000-8000-{i:012d}"
            seq += 1
            hlc = hlc_at(1_700_000_000_000 + i, "dev-x")
            state = {"id": rid, "form": form, "form_version": 1, "area": area,
                     "deleted": None, "fields": {"n": {"value": i, "hlc": hlc, "device": "dev-x",
                                                       "user": "u", "base": None,
                                                       "origin": None}}}
            # Older fields: a sparse pull lists their clocks; two of them
            # outnumber the newest, and a common pull lists only that one.
            for name in ("m", "k")[:(i % 2) + (i % 4 == 1)]:
                state["fields"][name] = {"value": -i, "hlc": hlc_at(1_600_000_000_000 + i,
                                                                     "dev-y"),
                                         "device": "dev-y", "user": "v", "base": None,
                                         "origin": None}
            # Some rows as Writer stores them, some as it stored them before
            # clocks=common (the sparse text), some without their pull JSON
            # (another path), some with an unpacked state (before migration 5).
            wire = (None, wire_text(state),
                    orjson.dumps(merging.to_wire(state, clocks="sparse")).decode())[i % 3]
            text = encode_state(state) if i % 5 else json.dumps(state)
            db.execute("INSERT INTO records (id, form, form_version, area, state, data, hlc, "
                       "seq, created_at, updated_at, wire) VALUES (?, ?, 1, ?, ?, '{}', ?, ?, "
                       "'x', 'x', ?)", [rid, form, area, text, hlc, seq, wire])
        for i in rnd.sample(range(n), n // 4):  # later edits move rows to new seqs
            seq += 1
            db.execute("UPDATE records SET seq = ? WHERE id = ?",
                       [seq, f"00000000-0000-4000-8000-{i:012d}"])
        db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", [str(seq)])
    return db


_FILLED = {}  # one filled database per test run, shared by the examples


def _in_scope(area, scopes):
    return any(area == s or area.startswith(s + ".") for s in scopes)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scopes=st.lists(st.sampled_from(AREAS + ["QN.XX"]), max_size=3),
       hidden=st.lists(st.sampled_from(FORMS), max_size=2, unique=True),
       limit=st.integers(1, 60), walks=st.sampled_from([0, 1, 2, 64]),
       clocks=st.sampled_from(merging.CLOCK_MODES))
def test_per_area_and_seq_walks_page_exactly_like_a_filter(db_path, monkeypatch, scopes,
                                                            hidden, limit, walks, clocks):
    from server import storage

    class Catalog:  # the hidden forms are the ones this user may not read
        def unreadable_forms(self, user):
            return sorted(hidden)

    db = _FILLED.get(str(db_path)) or _FILLED.setdefault(str(db_path), _fill(db_path))
    monkeypatch.setattr(storage, "MAX_AREA_WALKS", walks)
    user = {"role": "health_worker", "areas": scopes}
    rows = db.execute("SELECT id, form, area, seq, state FROM records ORDER BY seq").fetchall()
    want = [merging.to_wire(decode_state(state), seq, clocks=clocks)
            for rid, form, area, seq, state in rows
            if _in_scope(area, scopes) and form not in hidden]
    got, after = [], 0
    while True:
        records, after, more = storage.pull(db, user, after, limit, Catalog(), clocks=clocks)
        got += records
        assert len(records) <= limit
        if not more:
            break
    if clocks == "common":
        # A row stored before clocks=common holds its sparse text, served as
        # it is: the same clocks, listed against hlc instead of common_hlc.
        def read(r):
            return {**{k: v for k, v in r.items() if k not in ("clocks", "common_hlc")},
                    "every": _every_clock(r)}
        got, want = [read(r) for r in got], [read(r) for r in want]
    assert got == want
    assert after == storage.max_seq(db)


def test_migrations_4_and_5_store_the_pull_json_of_existing_rows(client):
    """A version-3 database: `state` packed and `wire` filled from each state
    (NULL if unreadable), the (area, seq) index made, the redundant seq index
    dropped; pulls answer as before."""
    from server.db import connect
    from server.migrations import latest_version, migrate
    from server.storage import encode_state, wire_text
    h = _auth(client, "hw", "dev-a")
    a = change(household(), hlc=hlc_at(now_ms() - 1000, "dev-a"))
    _push(client, h, "dev-a", a)
    before = client.get("/api/v1/sync/pull", headers=h).get_data()
    db_file = client.application.config["DB"]
    conn = sqlite3.connect(db_file, isolation_level=None)
    conn.execute("DROP TRIGGER records_wire_stale")
    conn.execute("DROP INDEX idx_records_area_seq")
    state = decode_state(conn.execute("SELECT state FROM records").fetchone()[0])
    conn.execute("UPDATE records SET state = ?", [json.dumps(state)])  # unpacked, as then
    conn.execute("ALTER TABLE records DROP COLUMN wire")
    conn.execute("CREATE INDEX idx_records_seq ON records (seq)")
    conn.execute("INSERT INTO records (id, form, form_version, area, state, data, hlc, seq, "
                 "created_at, updated_at) VALUES ('bad', 'household', 1, 'QN.TB.01', '{}', "
                 "'{}', 'h', 999, 'x', 'x')")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    db = connect(db_file)
    assert migrate(db) == list(range(4, latest_version() + 1))
    rows = {r[0]: r[1:] for r in db.execute("SELECT id, state, wire FROM records")}
    assert rows == {a["id"]: (encode_state(state), wire_text(state)), "bad": ("{}", None)}
    names = {r[1] for r in db.execute("PRAGMA index_list(records)")}
    assert "idx_records_area_seq" in names and "idx_records_seq" not in names
    db.conn.close()
    after = client.get("/api/v1/sync/pull", headers=h).get_data()
    assert json.loads(after)["records"] == json.loads(before)["records"]


def test_migration_5_packs_state_and_sparse_wire_of_a_version_4_database(client):
    """Version 4 stored `state` unpacked and every clock in `wire`: both rewritten."""
    from server.db import connect
    from server.migrations import migrate
    from server.storage import encode_state, wire_text
    h = _auth(client, "hw", "dev-a")
    t = now_ms() - 60_000
    a = change(household(), hlc=hlc_at(t, "dev-a"))
    _push(client, h, "dev-a", a)
    _push(client, h, "dev-a", change({"phone": "0911111111"}, hlc=hlc_at(t + 2, "dev-a"),
                                     record_id=a["id"]))
    before = client.get("/api/v1/sync/pull", headers=h).get_json()
    db_file = client.application.config["DB"]
    conn = sqlite3.connect(db_file, isolation_level=None)
    state = decode_state(conn.execute("SELECT state FROM records").fetchone()[0])
    conn.execute("UPDATE records SET state = ?, wire = ?",
                 [json.dumps(state), json.dumps(merging.to_wire(state))])
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    db = connect(db_file)
    assert migrate(db)[0] == 5
    packed, wire = db.execute("SELECT state, wire FROM records").fetchone()
    assert (packed, wire) == (encode_state(state), wire_text(state))
    assert decode_state(packed) == state and len(packed) < len(json.dumps(state)) / 2
    db.conn.close()
    assert client.get("/api/v1/sync/pull", headers=h).get_json()["records"] == before["records"]
    sparse = client.get("/api/v1/sync/pull?clocks=sparse", headers=h).get_json()["records"]
    assert sparse == [merging.to_wire(state, before["records"][0]["seq"], clocks="sparse")]
    assert set(sparse[0]["clocks"]) == set(state["fields"]) - {"phone"}

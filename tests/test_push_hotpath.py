"""The push hot path's shortcuts keep the answers of the long way (issue 6).

Form validation before the write lock is only a guess about create-or-edit;
rejections are only cleared when the device has some; a create is not
validated twice. Each test pins a case where a wrong shortcut would show.
"""
import uuid

from conftest import USERS, batch, change, hlc_at, household, login, now_ms, wait_until


def _auth(client, name, device):
    return {"Authorization": "Bearer " + login(client, name, device)}


def _rejected_count(client, device):
    h = _auth(client, "sup", "dev-sup")
    devices = client.get("/api/v1/devices", headers=h).get_json()["devices"]
    return {d["device_id"]: d["records_rejected"] for d in devices}[device]


def test_a_stale_precheck_is_validated_again_under_the_lock(app):
    """Prechecked as a create (nothing stored yet), applied after another
    device created the record: validated as the edit it now is."""
    from schemas.wire import load_change
    from server import storage
    from server.db import connect, write_transaction
    db = connect(app.config["DB"])
    t, rid, user = now_ms() - 10_000, str(uuid.uuid4()), {**USERS["hw"]}
    create, _ = load_change(change(household(), hlc=hlc_at(t, "dev-b"), record_id=rid))
    edit, _ = load_change(change({"head_name": "Tran Thi B"}, hlc=hlc_at(t + 1, "dev-a"),
                                 record_id=rid))
    [pre] = storage.precheck(db, [edit], tz_name=app.config["TIMEZONE"])
    assert pre.creating and pre.result.errors          # as a create it lacks fields
    for c, device, pc in ((create, "dev-b", None), (edit, "dev-a", pre)):
        with write_transaction(db):
            writer = storage.Writer(db, tz_name=app.config["TIMEZONE"])
            result = writer.apply(c, user=user, device=device, prechecked=pc)
            writer.finish()
        assert result["status"] == "applied", result
    stored = storage.get_record(db, rid)
    assert stored["state"]["fields"]["head_name"]["value"] == "Tran Thi B"
    assert stored["flags"] == []


def test_the_same_id_twice_in_a_batch_is_a_create_then_an_edit(client):
    h = _auth(client, "hw", "dev-a")
    t, rid = now_ms() - 10_000, str(uuid.uuid4())
    body = batch("dev-a", [change(household(), hlc=hlc_at(t, "dev-a"), record_id=rid),
                           change({"head_name": "Tran Thi B"}, hlc=hlc_at(t + 1, "dev-a"),
                                  record_id=rid)])
    results = client.post("/api/v1/sync/push", json=body, headers=h).get_json()["results"]
    assert [r["status"] for r in results] == ["applied", "applied"]
    pulled = client.get("/api/v1/sync/pull", headers=h).get_json()["records"]
    assert [r["data"]["head_name"] for r in pulled] == ["Tran Thi B"]


def test_creates_are_stored_as_the_merge_stores_them(client):
    """The create shortcut (storage.create_texts) and the merge give the same
    pulled records, including where the shortcut must not be taken: a create
    that carries `deleted: false` (a restore register of its own)."""
    from schemas.merge import merge, to_wire
    h = _auth(client, "hw", "dev-a")
    t = now_ms() - 10_000
    plain = change(household(), hlc=hlc_at(t, "dev-a"))
    own_clocks = change(household(), hlc=hlc_at(t + 2, "dev-a"),
                        clocks={"head_name": hlc_at(t + 1, "dev-a")})
    restored = change(household(), hlc=hlc_at(t + 3, "dev-a"), deleted=False)
    sent = [plain, own_clocks, restored]
    body = batch("dev-a", sent)
    results = client.post("/api/v1/sync/push", json=body, headers=h).get_json()["results"]
    assert [r["status"] for r in results] == ["applied"] * 3
    pulled = client.get("/api/v1/sync/pull", headers=h).get_json()["records"]
    by_id = {r["id"]: r for r in pulled}
    for c in sent:
        want = to_wire(merge(None, c, device="dev-a", user="hw").record)
        got = {k: v for k, v in by_id[c["id"]].items() if k != "seq"}
        # The server canonicalises values (e.g. text NFC): compare the rest.
        assert {k: v for k, v in got.items() if k != "data"} == \
            {k: v for k, v in want.items() if k != "data"}
    assert by_id[restored["id"]]["tombstone"] == {"deleted": False, "hlc": restored["hlc"]}
    assert by_id[plain["id"]]["tombstone"] is None


def test_a_rejection_is_cleared_by_the_fix_even_later_in_the_same_batch(client):
    h = _auth(client, "hw", "dev-a")
    t, rid = now_ms() - 10_000, str(uuid.uuid4())
    bad = change({"head_name": "X"}, hlc=hlc_at(t, "dev-a"), record_id=rid)  # incomplete
    good = change(household(), hlc=hlc_at(t + 1, "dev-a"), record_id=rid)
    other = change(household(), hlc=hlc_at(t + 2, "dev-a"))
    results = client.post("/api/v1/sync/push", json=batch("dev-a", [other, bad, good]),
                          headers=h).get_json()["results"]
    assert [r["status"] for r in results] == ["applied", "rejected", "applied"]
    assert _rejected_count(client, "dev-a") == 0
    client.post("/api/v1/sync/push", json=batch("dev-a", [bad]), headers=h)
    assert _rejected_count(client, "dev-a") == 1
    fixed = change(household(), hlc=hlc_at(t + 3, "dev-a"), record_id=rid)
    client.post("/api/v1/sync/push", json=batch("dev-a", [fixed]), headers=h)
    assert _rejected_count(client, "dev-a") == 0


def test_the_wal_is_checkpointed_in_the_background_not_by_a_commit(tmp_path, monkeypatch):
    """Commits below the backstop leave the WAL to the process's checkpoint
    thread: the database file takes the pages without another commit."""
    import os

    from server import db as dbmod
    monkeypatch.setattr(dbmod, "CHECKPOINT_SECONDS", 0.05)
    path = str(tmp_path / "wal.db")
    db = dbmod.connect(path)
    db.execute("CREATE TABLE t (x TEXT)")
    dbmod._keep_open(path)  # what each request does: the keeper and the thread
    size = os.path.getsize(path)
    with dbmod.write_transaction(db):
        db.conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 2000)
    # ~1 MB, far below the backstop: no commit checkpoints it.
    assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == dbmod.AUTOCHECKPOINT_PAGES
    wait_until(lambda: os.path.getsize(path) > size + 500_000,
               "the checkpoint thread copied the WAL into the file")
    db.conn.close()


def test_a_worker_freezes_the_loaded_app_and_collects_less_often(db_path):
    """What `fieldsync-server serve` does in each worker after loading the
    app (server/wsgi.py): the loaded objects leave the collector's scans."""
    import gc

    from server import wsgi
    threshold = gc.get_threshold()
    try:
        app = wsgi._Server(str(db_path), {"workers": 1}).load()
        assert app.config["DB"] == str(db_path)
        assert gc.get_threshold() == wsgi.GC_THRESHOLDS != threshold
        assert gc.get_freeze_count() > 1000  # modules, the app, its blueprints
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_computed_fields_are_stored_as_compute_gives_them(client, app):
    """A create's computed fields come from its validation (the fast path
    derives them to check the rules); they must be what `compute` answers,
    with the fast path on and off."""
    import json
    import sqlite3

    from schemas import forms
    from tests.test_shipped_forms import VALID, form
    h = _auth(client, "hw", "dev-a")
    t, ids = now_ms() - 10_000, {}
    for fast in (True, False):
        forms.FAST = fast
        try:
            for i, form_id in enumerate(("anc_visit", "growth")):
                c = change(VALID[form_id], hlc=hlc_at(t + i, "dev-a"), form=form_id)
                ids[c["id"]] = form_id
                results = client.post("/api/v1/sync/push", json=batch("dev-a", [c]),
                                      headers=h).get_json()["results"]
                assert results[0]["status"] == "applied", results
        finally:
            forms.FAST = True
        t += 10
    con = sqlite3.connect(app.config["DB"])
    rows = con.execute("SELECT id, data, computed FROM records").fetchall()
    con.close()
    assert {rid for rid, _, _ in rows} == set(ids)
    for rid, data, computed in rows:
        want = form(ids[rid]).compute(json.loads(data))
        assert json.loads(computed) == want and want  # ga_weeks, age_days

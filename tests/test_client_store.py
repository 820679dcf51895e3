"""The device store on its own: durable local changes, the coalesced outbox,
frozen batches, answers that only remove what they answer, the persisted HLC.
No server here; these are the rules the sync tests build on."""
import gzip
import json
import sqlite3

import pytest
import time_machine

from client_sync.store import Store, uuid7
from schemas.clock import parse

HH = {"form": "household", "form_version": 1, "area": "QN.LM.03"}


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "device.db")
    yield s
    s.close()


def new_record(store, **data):
    rid = uuid7()
    store.local_change(rid, user="hw", data=data or {"head_name": "A B"}, create=HH)
    return rid


def outbox(store, rid):
    return store._entry(rid)


def body_of(batch):
    return json.loads(gzip.decompress(batch[1]))


def test_device_id_is_made_once_and_kept(tmp_path):
    first = Store(tmp_path / "d.db")
    device_id = first.device_id
    first.close()
    again = Store(tmp_path / "d.db")
    assert again.device_id == device_id and device_id.startswith("dev-")


def test_local_change_is_committed_before_returning(store, tmp_path):
    rid = new_record(store, head_name="Lý A Sáng")
    # A second connection (another process) sees it at once: it is committed.
    other = sqlite3.connect(tmp_path / "device.db")
    assert other.execute("SELECT COUNT(*) FROM records WHERE id = ?", (rid,)).fetchone()[0] == 1
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_hlc_never_reused_or_lower_after_restart(tmp_path):
    s = Store(tmp_path / "d.db")
    rid = new_record(s)
    clocks = [s.local_change(rid, user="hw", data={"head_name": f"v{i}"})["hlc"] for i in range(5)]
    s.close()
    # Restart with the wall clock set back to 2000: clocks still move forward.
    with time_machine.travel("2000-01-01T00:00:00Z", tick=False):
        s = Store(tmp_path / "d.db")
        later = s.local_change(rid, user="hw", data={"head_name": "after restart"})["hlc"]
        s.close()
    assert clocks == sorted(set(clocks))
    assert later > clocks[-1]
    assert parse(later).millis >= parse(clocks[-1]).millis


def test_observe_moves_the_clock_past_the_server(store):
    store.observe("2999-01-01T00:00:00.000Z-0004-server")
    rid = new_record(store)
    assert store.get(rid)["hlc"] > "2999-01-01T00:00:00.000Z-0004-server"


def test_outbox_coalesces_edits_per_record_with_first_base(store):
    rid = new_record(store, head_name="A B", status="active")
    # Pretend the server acknowledged the create with its clock.
    server_clock = store.state(rid)["fields"]["head_name"]["hlc"]
    store.conn.execute("DELETE FROM outbox")
    store.local_change(rid, user="hw", data={"head_name": "first edit"})
    store.local_change(rid, user="hw", data={"head_name": "second edit"})
    store.local_change(rid, user="hw", data={"phone": "0912345678"})
    entry = outbox(store, rid)
    assert store.unsynced_count() == 1
    assert entry["fields"]["head_name"]["value"] == "second edit"
    # The base is the server value the chain of offline edits started from.
    assert entry["fields"]["head_name"]["base"] == server_clock
    assert entry["fields"]["phone"]["base"] is None
    change = Store.change_of(entry)
    assert change["data"] == {"head_name": "second edit", "phone": "0912345678"}
    assert change["bases"] == {"head_name": server_clock}
    assert change["hlc"] == max(entry["fields"][n]["clock"] for n in entry["fields"])


def test_sent_batch_is_frozen_and_resent_byte_for_byte(store):
    rids = [new_record(store, head_name=f"name {i}") for i in range(3)]
    batch = store.make_batch(10, 1 << 20, "test")
    assert [r["id"] for r in body_of(batch)["records"]] == rids
    # Edits after sending do not change what a retry sends.
    store.local_change(rids[0], user="hw", data={"head_name": "edited later"})
    assert store.pending_batch() == batch
    reopened = Store(store.path)
    assert reopened.pending_batch() == batch
    assert {r["sync_state"] for r in store.iter_records()} == {"sent", "pending"}


def test_batches_respect_record_and_byte_limits(store):
    for i in range(5):
        new_record(store, head_name="x" * 200 + str(i))
    first = store.make_batch(3, 1 << 20, "test")
    assert first[2] == 3
    second = store.make_batch(3, 700, "test")  # ~300 bytes per change: halved to fit
    assert second[2] == 1
    assert len(gzip.decompress(second[1])) <= 700


def test_answer_removes_only_what_was_answered(store):
    a, b = new_record(store, head_name="A A"), new_record(store, head_name="B B")
    batch_id, body, _ = store.make_batch(10, 1 << 20, "test")
    store.local_change(b, user="hw", data={"head_name": "B edited during the push"})
    counts = store.apply_answer(batch_id, {"results": [
        {"id": a, "status": "applied"}, {"id": b, "status": "applied"}],
        "hlc": "2020-01-01T00:00:00.000Z-0000-server", "skew": None})
    assert counts["applied"] == 2
    assert outbox(store, a) is None and store.get(a)["sync_state"] == "acknowledged"
    left = outbox(store, b)
    assert left["fields"] == {"head_name": left["fields"]["head_name"]}
    assert left["fields"]["head_name"]["value"] == "B edited during the push"
    assert left["batch_id"] is None and store.get(b)["sync_state"] == "pending"
    assert store.pending_batch() is None


def test_unanswered_changes_stay_queued(store):
    a, b = new_record(store), new_record(store)
    batch_id, _, _ = store.make_batch(10, 1 << 20, "test")
    counts = store.apply_answer(batch_id, {"results": [{"id": a, "status": "unchanged"}]})
    assert counts["unanswered"] == 1
    assert outbox(store, b) is not None and outbox(store, b)["batch_id"] is None


def test_rejected_record_stays_visible_and_held_until_edited(store):
    rid = new_record(store, head_name="A B")
    batch_id, _, _ = store.make_batch(10, 1 << 20, "test")
    store.apply_answer(batch_id, {"results": [
        {"id": rid, "status": "rejected", "errors": {"head_name": ["too short"]}}]})
    record = store.get(rid)
    assert record["sync_state"] == "rejected" and record["errors"] == {"head_name": ["too short"]}
    assert store.make_batch(10, 1 << 20, "test") is None  # not resent as is
    assert store.unsynced_count() == 1
    store.local_change(rid, user="hw", data={"head_name": "A fixed name"})
    batch = store.make_batch(10, 1 << 20, "test")
    change = body_of(batch)["records"][0]
    # Still a complete create: the server never stored the rejected one.
    assert change["data"] == {"head_name": "A fixed name"} and change["bases"] == {}


def test_restamped_clock_is_adopted(store):
    rid = new_record(store, head_name="A B")
    sent_clock = store.state(rid)["fields"]["head_name"]["hlc"]
    batch_id, _, _ = store.make_batch(10, 1 << 20, "test")
    server_clock = "2001-01-01T00:00:00.000Z-0000-server"  # older than ours: a plain merge keeps ours
    wire = {"id": rid, "form": "household", "form_version": 1, "area": "QN.LM.03",
            "data": {"head_name": "A B"}, "deleted": False, "hlc": server_clock,
            "clocks": {"head_name": server_clock}, "tombstone": None}
    store.apply_answer(batch_id, {"results": [{"id": rid, "status": "applied", "record": wire}],
                                  "skew": {"seconds": 3e7, "restamped": 1}})
    reg = store.state(rid)["fields"]["head_name"]
    assert reg["hlc"] == server_clock and reg["origin"] == sent_clock
    assert store.get_meta("skew")["restamped"] == 1


def test_pull_never_overwrites_newer_unsynced_edit(store):
    rid = new_record(store, head_name="local newer")
    local_clock = store.state(rid)["fields"]["head_name"]["hlc"]
    older = "2001-01-01T00:00:00.000Z-0000-dev-other"
    store.apply_pull([{"id": rid, "form": "household", "form_version": 1, "area": "QN.LM.03",
                       "data": {"head_name": "server older", "status": "active"}, "hlc": older,
                       "clocks": {"head_name": older, "status": older}, "deleted": False,
                       "tombstone": None, "seq": 1}], "c1", generation=0)
    record = store.get(rid)
    assert record["data"] == {"head_name": "local newer", "status": "active"}
    assert record["sync_state"] == "pending"
    assert store.state(rid)["fields"]["head_name"]["hlc"] == local_clock
    assert store.get_meta("cursor") == "c1"


def test_delete_sends_a_tombstone_with_seen_clocks(store):
    rid = new_record(store, head_name="A B")
    store.conn.execute("DELETE FROM outbox")  # as if acknowledged
    other = "2001-01-01T00:00:00.000Z-0000-dev-other"
    store.apply_pull([{"id": rid, "form": "household", "form_version": 1, "area": "QN.LM.03",
                       "data": {"status": "active"}, "hlc": other, "clocks": {"status": other},
                       "deleted": False, "tombstone": None}], "c", generation=0)
    store.local_change(rid, user="hw", delete=True)
    assert store.get(rid)["deleted"]
    assert list(store.iter_records()) == []
    change = Store.change_of(outbox(store, rid))
    assert change["deleted"] is True and change["data"] == {}
    assert change["bases"] == {"status": other}
    with pytest.raises(Exception, match="deleted"):
        store.local_change(rid, user="hw", data={"head_name": "x"})


def test_resync_removes_records_out_of_scope_only_when_complete(store):
    keep, gone = new_record(store), new_record(store)
    store.conn.execute("DELETE FROM outbox")
    generation = store.start_resync()
    wire = {"id": keep, "form": "household", "form_version": 1, "area": "QN.LM.03",
            "data": {"head_name": "A B"}, "hlc": "2001-01-01T00:00:00.000Z-0000-server",
            "clocks": {}, "deleted": False, "tombstone": None}
    store.apply_pull([wire], "c", generation=generation)
    assert store.get(gone) is not None  # not yet: the pull has not finished
    store.finish_pull()
    assert store.get(gone) is None and store.get(keep) is not None


def test_uuid7_is_time_ordered_version_7():
    ids = [uuid7() for _ in range(50)]
    assert all(i[14] == "7" for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_the_store_layout_is_versioned_and_a_newer_one_is_refused(tmp_path):
    from client_sync.store import MIGRATIONS, StoreTooNew
    s = Store(tmp_path / "d.db")
    rid = new_record(s, head_name="Lò Thị Mai")
    device_id = s.device_id
    s.close()
    raw = sqlite3.connect(tmp_path / "d.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    # A store made before versioning (layout 0) opens with its data and is
    # brought up to date.
    raw.execute("PRAGMA user_version = 0")
    raw.close()
    s = Store(tmp_path / "d.db")
    assert s.device_id == device_id and s.conn.execute(
        "SELECT COUNT(*) FROM records WHERE id = ?", (rid,)).fetchone()[0] == 1
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    s.close()
    # Written by a newer fieldsync: refused, and left exactly as it was.
    raw = sqlite3.connect(tmp_path / "d.db")
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(StoreTooNew, match="newer fieldsync"):
        Store(tmp_path / "d.db")
    raw = sqlite3.connect(tmp_path / "d.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert raw.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    raw.close()

"""Convergence at device level (issue 18 item 3): three real `client_sync`
devices (a health worker, a supervisor and an admin) against the real server
process over HTTP.

Each example: one device adds a few records and every device syncs; then
each device edits and deletes offline, the devices sync in a drawn order
(every permutation of the three can be drawn, and a device may sync twice),
a supervisor settles some edit-against-delete conflicts through the
resolve endpoint (restoring or deleting again), and everyone syncs until
nothing is pending. Every device then holds exactly the server's records:
the same values, the same clock on every field, the same tombstone and the
same `deleted`.

`CONVERGE_DEVICE_EXAMPLES` sets the number of examples (`make test`: 15;
`make test-converge`: 100).
"""
import collections
import os
import sqlite3

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from client_sync import Client, NetworkConfig
from schemas.merge import to_wire
from server.codec import decode_state

FAST = NetworkConfig(give_up_after=5, connect_timeout=1, read_timeout=5, backoff_factor=0,
                     backoff_jitter=0)
EXAMPLES = int(os.environ.get("CONVERGE_DEVICE_EXAMPLES", "15"))
USERS = ("hw", "sup", "admin")
NAMES = ["Lò Văn Páo", "Triệu Thị Hoa", "Đặng Văn Lộc", "Hà Thị Mai"]
PLACES = ["Thôn 1", "Thôn 2", "Bản Khe"]
PHONES = ["0912345678", "0987654321", "0911111111"]


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))


def server_records(db, ids):
    con = sqlite3.connect(db)
    try:
        rows = {rid: (decode_state(state), bool(deleted)) for rid, state, deleted in
                con.execute("SELECT id, state, deleted FROM records")}
    finally:
        con.close()
    return {rid: rows[rid] for rid in ids}


def open_delete_conflicts(db, ids):
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id, record_id FROM conflicts WHERE status = 'open' "
                           "AND field = 'deleted' ORDER BY id").fetchall()
    finally:
        con.close()
    return [cid for cid, rid in rows if rid in ids]


def wire(state):
    """What must agree everywhere: values, every clock, tombstone, deleted."""
    w = to_wire(state)
    return {k: w[k] for k in ("data", "clocks", "deleted", "tombstone", "hlc", "form_version")}


def test_three_devices_converge_in_any_sync_order(server_process, tmp_path):
    devices = []
    for n, user in enumerate(USERS):
        client = Client(tmp_path / f"dev{n}", FAST)
        creds = server_process.users[user]
        client.login(server_process.url, creds["username"], creds["password"])
        devices.append(client)
    sup = {"Authorization": "Bearer " + server_process.login("sup", "dev-resolver")}

    seen = collections.Counter()

    def sync_all():
        for client in devices:
            assert client.sync().complete

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def example(data):
        creator = data.draw(st.integers(0, 2), label="creator")
        ids = [devices[creator].add("household", {
            "head_name": data.draw(st.sampled_from(NAMES)), "poverty_status": "poor",
            "registered_on": "2025-04-01", "status": "active"}, area="QN.LM.03")
            for _ in range(data.draw(st.integers(1, 3), label="records"))]
        assert devices[creator].sync().complete
        sync_all()
        # Offline work on every device.
        for n, client in enumerate(devices):
            for _ in range(data.draw(st.integers(0, 3), label=f"dev{n} changes")):
                rid = data.draw(st.sampled_from(ids))
                record = client.get(rid)
                if record["deleted"]:
                    continue  # the device shows it deleted: no edit, no delete
                if data.draw(st.integers(0, 3)) == 0:
                    client.delete(rid)
                else:
                    field, choices = data.draw(st.sampled_from(
                        [("head_name", NAMES), ("address_detail", PLACES), ("phone", PHONES)]))
                    client.edit(rid, {field: data.draw(st.sampled_from(choices))})
        order = data.draw(st.lists(st.integers(0, 2), min_size=3, max_size=5).filter(
            lambda o: set(o) == {0, 1, 2}), label="sync order")
        for n in order:
            assert devices[n].sync().complete
        # A supervisor settles edit-against-delete conflicts: restore or delete again.
        for cid in open_delete_conflicts(server_process.db, ids):
            if data.draw(st.booleans()):
                value = data.draw(st.booleans(), label="delete (true) or restore (false)")
                resp = requests.post(f"{server_process.url}/api/v1/conflicts/{cid}/resolve",
                                     json={"value": value}, headers=sup, timeout=10)
                assert resp.status_code in (200, 409), resp.text  # 409: settled already
                seen["restored" if value is False else "deleted again"] += 1
        sync_all()
        sync_all()
        stored = server_records(server_process.db, ids)
        seen["deleted at the end"] += sum(d for _, d in stored.values())
        for rid, (state, deleted) in stored.items():
            assert wire(state)["deleted"] is deleted
            for client in devices:
                assert wire(client.store.state(rid)) == wire(state), (rid, client.device_id)
                assert client.get(rid)["deleted"] is deleted
        for client in devices:
            assert client.status()["pending"] == 0

    try:
        example()
        print(f"\ndevice convergence, {EXAMPLES} examples: {dict(seen)}")
    finally:
        for client in devices:
            client.close()

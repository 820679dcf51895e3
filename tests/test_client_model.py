"""A hypothesis state machine: N devices make random offline adds, edits and
deletes, and sync in random order, some with answers lost after the server
committed or given up on. Whenever everyone has synced, every device and the
server hold exactly the state of a simple model: per field, the value with
the largest clock; deleted while the tombstone is newer than every field.

Examples are kept modest for `make test`; raise MODEL_EXAMPLES for a long run.
"""
import json
import os
import sqlite3

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, initialize, precondition, rule,
                                 run_state_machine_as_test)

from client_sync import Client, NetworkConfig, SyncError
from faultproxy import FaultProxy

FAST = NetworkConfig(give_up_after=5, connect_timeout=1, read_timeout=5, backoff_factor=0,
                     backoff_jitter=0)
GIVE_UP = NetworkConfig(give_up_after=0.4, connect_timeout=0.2, read_timeout=0.4,
                        backoff_factor=0, backoff_jitter=0)
PUSH = b"POST /api/v1/sync/push"
FIELDS = {"head_name": ["Lò Văn Páo", "Triệu Thị Hoa", "Đặng Văn Lộc"],
          "address_detail": ["Thôn 1", "Thôn 2", "Bản Khe"],
          "phone": ["0912345678", "0987654321"]}
DEVICES = 2


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))


def test_devices_and_server_converge_to_the_model(server_process, tmp_path):
    proxy = FaultProxy(server_process.port).start()
    # Logging in is slow on purpose (argon2): the devices live across examples;
    # each example checks only the records it made, after converging them all.
    devices = []
    for n in range(DEVICES):
        client = Client(tmp_path / f"dev{n}", FAST)
        client.login(proxy.url, "hw", "hw-pass-123")
        devices.append(client)

    class Sync(RuleBasedStateMachine):
        records = Bundle("records")

        @initialize()
        def start(self):
            self.devices = devices
            self.model = {}  # record id -> {"fields": {name: (clock, value)}, "tomb": clock}

        def teardown(self):
            proxy.rules.clear()
            self.converge()

        def note(self, client, rid):
            """Record in the model the registers a local change just wrote."""
            state = client.store.state(rid)
            entry = self.model.setdefault(rid, {"fields": {}, "tomb": None})
            for name, reg in state["fields"].items():
                if reg["device"] == client.device_id:
                    old = entry["fields"].get(name)
                    if old is None or reg["hlc"] > old[0]:
                        entry["fields"][name] = (reg["hlc"], reg["value"])
            tomb = state["deleted"]
            if tomb and tomb["device"] == client.device_id:
                if entry["tomb"] is None or tomb["hlc"] > entry["tomb"]:
                    entry["tomb"] = tomb["hlc"]

        @rule(target=records, n=st.integers(0, DEVICES - 1), name=st.sampled_from(FIELDS["head_name"]))
        def add(self, n, name):
            client = self.devices[n]
            rid = client.add("household", {"head_name": name, "poverty_status": "poor",
                                           "registered_on": "2025-04-01", "status": "active"})
            self.note(client, rid)
            return rid

        @rule(rid=records, n=st.integers(0, DEVICES - 1), data=st.data())
        def edit(self, rid, n, data):
            client = self.devices[n]
            record = client.get(rid)
            if record is None or record["deleted"]:
                return  # this device has not seen it, or sees it deleted
            name = data.draw(st.sampled_from(sorted(FIELDS)))
            client.edit(rid, {name: data.draw(st.sampled_from(FIELDS[name]))})
            self.note(client, rid)

        @rule(rid=records, n=st.integers(0, DEVICES - 1))
        def delete(self, rid, n):
            client = self.devices[n]
            record = client.get(rid)
            if record is None or record["deleted"]:
                return
            client.delete(rid)
            self.note(client, rid)

        @rule(n=st.integers(0, DEVICES - 1))
        def sync(self, n):
            assert self.devices[n].sync().complete

        @rule(n=st.integers(0, DEVICES - 1))
        def sync_reply_lost_then_retried(self, n):
            proxy.add("drop_response", PUSH, count=1)
            assert self.devices[n].sync().complete
            proxy.rules.clear()

        @rule(n=st.integers(0, DEVICES - 1), data=st.data())
        def sync_gives_up_after_server_committed(self, n, data):
            """The answer never comes; the health worker goes on editing a sent record."""
            impatient = Client(self.devices[n].data_dir, GIVE_UP)
            proxy.add("drop_response", PUSH, count=10_000)
            try:
                impatient.sync()
            except SyncError:
                pass
            finally:
                proxy.rules.clear()
                impatient.close()
            sent = sorted(r["id"] for r in self.devices[n].list(sync_state="sent"))
            if sent and data.draw(st.booleans()):
                rid = data.draw(st.sampled_from(sent))
                name = data.draw(st.sampled_from(sorted(FIELDS)))
                self.devices[n].edit(rid, {name: data.draw(st.sampled_from(FIELDS[name]))})
                self.note(self.devices[n], rid)

        @precondition(lambda self: self.model)
        @rule()
        def converge(self):
            for _ in range(2):
                for client in self.devices:
                    assert client.sync().complete
            server = self.server_state()
            for rid, entry in self.model.items():
                values = {name: value for name, (_, value) in entry["fields"].items()}
                newest = max(clock for clock, _ in entry["fields"].values())
                deleted = entry["tomb"] is not None and entry["tomb"] > newest
                assert server[rid] == (values, deleted), rid
                for client in self.devices:
                    record = client.get(rid)
                    assert (record["data"], record["deleted"]) == (values, deleted), rid
                    assert record["sync_state"] in ("acknowledged", "conflict")
            for client in self.devices:
                assert client.status()["pending"] == 0

        def server_state(self):
            con = sqlite3.connect(server_process.db)
            try:
                return {rid: (json.loads(data), bool(deleted)) for rid, data, deleted in
                        con.execute("SELECT id, data, deleted FROM records")}
            finally:
                con.close()

    try:
        run_state_machine_as_test(Sync, settings=settings(
            max_examples=int(os.environ.get("MODEL_EXAMPLES", "8")), stateful_step_count=25,
            deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        proxy.stop()
        for client in devices:
            client.close()

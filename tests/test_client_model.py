"""A hypothesis state machine: N devices make random offline adds, edits and
deletes, and sync in random order, some with answers lost after the server
committed or given up on. Whenever everyone has synced, every device and the
server hold exactly the state of a simple model: per field, the value of the
latest write; deleted while the latest delete is later than every field's
latest write.

The model never reads a device's registers (issue 18): it orders the writes
itself. Before each local change the device is shown a clock ("the model's
wall clock") later than every clock issued so far, by `store.observe`, the
same call a device makes when it receives a clock; a hybrid logical clock
must then stamp the change later than that, so the order of the changes is
the order the model made them in, whatever the real clocks say.

Budget: MODEL_EXAMPLES (default 30) runs of MODEL_STEPS (default 50) steps;
`make test-converge` runs 100 x 50.
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
from schemas.clock import format_hlc, time_ms

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
            self.model = {}  # record id -> {"fields": {name: (at, value)}, "tomb": at}
            self.wall = 0    # the model's wall clock, in ms

        def teardown(self):
            proxy.rules.clear()
            self.converge()

        def stamp(self, client):
            """Move `client`'s clock past every clock issued so far; the model's
            order key for the change it is about to make."""
            self.wall = max(time_ms() + 1, self.wall + 1)
            client.store.observe(format_hlc(self.wall, 0, "model"))
            return self.wall

        def note(self, rid, at, fields=None, deleted=False):
            """Record in the model a local change made at model time `at`."""
            entry = self.model.setdefault(rid, {"fields": {}, "tomb": None})
            for name, value in (fields or {}).items():
                entry["fields"][name] = (at, value)
            if deleted:
                entry["tomb"] = at

        @rule(target=records, n=st.integers(0, DEVICES - 1), name=st.sampled_from(FIELDS["head_name"]))
        def add(self, n, name):
            client = self.devices[n]
            data = {"head_name": name, "poverty_status": "poor",
                    "registered_on": "2025-04-01", "status": "active"}
            at = self.stamp(client)
            rid = client.add("household", data)
            self.note(rid, at, data)
            return rid

        @rule(rid=records, n=st.integers(0, DEVICES - 1), data=st.data())
        def edit(self, rid, n, data):
            client = self.devices[n]
            record = client.get(rid)
            if record is None or record["deleted"]:
                return  # this device has not seen it, or sees it deleted
            name = data.draw(st.sampled_from(sorted(FIELDS)))
            self.edit_one(client, rid, name, data.draw(st.sampled_from(FIELDS[name])))

        def edit_one(self, client, rid, name, value):
            if client.get(rid)["data"].get(name) == value:
                return  # no change: the model need not guess whether it is stamped
            at = self.stamp(client)
            client.edit(rid, {name: value})
            self.note(rid, at, {name: value})

        @rule(rid=records, n=st.integers(0, DEVICES - 1))
        def delete(self, rid, n):
            client = self.devices[n]
            record = client.get(rid)
            if record is None or record["deleted"]:
                return
            at = self.stamp(client)
            client.delete(rid)
            self.note(rid, at, deleted=True)

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
                self.edit_one(self.devices[n], rid, name,
                              data.draw(st.sampled_from(FIELDS[name])))

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
            max_examples=int(os.environ.get("MODEL_EXAMPLES", "30")),
            stateful_step_count=int(os.environ.get("MODEL_STEPS", "50")),
            deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        proxy.stop()
        for client in devices:
            client.close()

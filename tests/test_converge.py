"""Convergence in every arrival order, at the server (issue 18 item 3).

Three devices work offline on several shared `household` records: creates,
edits, deletes and restores, with the clocks and `bases` a device really
sends (the clocks of the values it had seen). A history runs in rounds: in
each round every device works offline and queues one or two batches; at
the end of a round every device has synced (pushed and pulled everything),
so the next round's changes are based on the round's merged state.

Each history is pushed through the real push endpoint (Flask app, a real
SQLite file, the devices' own tokens) in every order of the three devices
(all 6 permutations, the same in each round) and in interleavings of
single batches drawn by hypothesis. Every order must store the same records
(registers: values, clocks, devices, users, bases; `data`, `deleted`,
`hlc`, `computed`, flags) and log the same conflicts (record, field,
losing clock and value): see `conflict_log` for the one part of the log
that depends on the order, the value a loser was logged against.

`CONVERGE_EXAMPLES` sets the number of histories (`make test`: 150;
`make test-converge`: 1,000, with longer histories).
"""
import itertools
import json
import os
import sqlite3
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import batch, copy_db, household, login
from schemas.clock import format_hlc
from schemas.merge import is_deleted, merge, to_wire
from server.codec import decode_state

DEVICES = {"dev-a": "hw", "dev-b": "sup", "dev-c": "admin"}
RECORDS = 3
IDS = [f"01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d1{n}" for n in range(RECORDS)]
T0 = 1_700_000_000_000  # far behind the server's clock: no clock is re-stamped
EXAMPLES = int(os.environ.get("CONVERGE_EXAMPLES", "150"))
LONG = EXAMPLES > 500  # the long run draws longer histories too


def phone(n):
    return f"09{n:08d}"


# -- histories -------------------------------------------------------------------


@st.composite
def histories(draw):
    """Rounds of offline work: [[(device, [batch, ...]), ...] per round].

    Each device keeps its own view of every record (schemas.merge, as the
    device library does) and its own clock; a change carries, as `bases`,
    the clocks of the values the device had when it made the change (for a
    delete, every field's clock it had seen).
    """
    ids = IDS[:draw(st.integers(1, RECORDS))]  # fewer records: more crossings
    clock = dict.fromkeys(DEVICES, T0)
    merged = {}                      # every change pushed so far, merged
    rounds = []
    serial = 0
    for _ in range(draw(st.integers(1, 4 if LONG else 3))):
        views = {d: {rid: dict(state) for rid, state in merged.items()} for d in DEVICES}
        work = []
        for device in DEVICES:
            batches, current = [], []
            for _ in range(draw(st.integers(0, 5 if LONG else 3))):
                rid = draw(st.sampled_from(ids))
                view = views[device].get(rid)
                clock[device] += draw(st.integers(0, 2))  # ties between devices happen
                serial += 1
                hlc = format_hlc(clock[device], serial, device)
                clock[device] += 1
                head = {"id": rid, "form": "household", "form_version": 1,
                        "area": "QN.LM.03", "hlc": hlc}
                if view is None:
                    if any(rid in v for v in views.values()) or rid in merged:
                        continue  # created by another device this round: not seen yet
                    change = {**head, "data": household(head_name=f"Chủ hộ {serial}",
                                                         phone=phone(serial))}
                else:
                    gone = is_deleted(view)
                    what = "restore" if gone else draw(st.sampled_from(
                        ["edit", "edit", "delete"]))
                    if what == "edit":
                        names = draw(st.lists(st.sampled_from(
                            ["head_name", "address_detail", "phone"]), min_size=1,
                            max_size=2, unique=True))
                        data = {n: phone(serial) if n == "phone" else f"{n} {serial}"
                                for n in names}
                        change = {**head, "data": data, "bases": {
                            n: view["fields"][n]["hlc"] for n in names if n in view["fields"]}}
                    elif what == "delete":
                        change = {**head, "data": {}, "deleted": True, "bases": {
                            n: reg["hlc"] for n, reg in view["fields"].items()}}
                    else:
                        change = {**head, "data": {}, "deleted": False}
                views[device][rid] = merge(view, change, device=device,
                                           user=DEVICES[device]).record
                current.append(change)
                if draw(st.booleans()) and len(batches) < 2:
                    batches.append(current)
                    current = []
            if current:
                batches.append(current)
            work.append((device, batches))
        rounds.append(work)
        for device, batches in work:      # everyone syncs: pushes, then pulls
            for b in batches:
                for change in b:
                    merged[change["id"]] = merge(merged.get(change["id"]), change,
                                                 device=device, user=DEVICES[device]).record
        top = max(clock.values())
        clock = dict.fromkeys(DEVICES, top + 1)  # every device has seen every clock
    return rounds


def device_orders(rounds):
    """All 6 orders of the three devices, the same in every round, each
    device's batches together."""
    for order in itertools.permutations(DEVICES):
        yield [(d, b) for work in rounds for d in order
               for d2, batches in work if d2 == d for b in batches]


@st.composite
def interleavings(draw, rounds):
    """Within each round, the devices' batches interleaved at random (each
    device's own batches stay in its order, as a device sends them)."""
    out = []
    for work in rounds:
        queues = {d: list(batches) for d, batches in work if batches}
        while queues:
            d = draw(st.sampled_from(sorted(queues)))
            out.append((d, queues[d].pop(0)))
            if not queues[d]:
                del queues[d]
    return out


# -- the server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_in_db(template_db, tmp_path_factory):
    """The template database with each device signed in once (argon2 is slow
    on purpose): each order starts from a copy of it, served by this app."""
    from server import create_app
    path = copy_db(template_db, tmp_path_factory.mktemp("converge") / "signed-in.db")
    app = create_app({"TESTING": True, "DB": str(path)})
    with app.test_client() as client:
        tokens = {d: login(client, user, d) for d, user in DEVICES.items()}
    return path, tokens, app


def run_order(signed_in_db, folder, order):
    """Push `order` ([(device, batch)]) into a fresh copy; the stored
    records and conflict log."""
    source, tokens, app = signed_in_db
    path = copy_db(source, folder / f"order-{uuid.uuid4().hex}.db")
    app.config["DB"] = str(path)  # one app (making one costs more than an order's pushes)
    with app.test_client() as client:
        for device, changes in order:
            resp = client.post("/api/v1/sync/push", json=batch(device, changes),
                               headers={"Authorization": f"Bearer {tokens[device]}"})
            assert resp.status_code == 200, resp.get_json()
            for result in resp.get_json()["results"]:
                assert result["status"] in ("applied", "unchanged", "conflict"), result
    con = sqlite3.connect(path)
    try:
        records = {row[0]: (decode_state(row[1]), json.loads(row[2]), row[3], row[4],
                            json.loads(row[5]), json.loads(row[6]), row[7])
                   for row in con.execute(
                       "SELECT id, state, data, deleted, hlc, computed, flags, form_version "
                       "FROM records")}
        log = [(rid, fld, json.loads(cur), json.loads(lose), losing_hlc) for
               rid, fld, cur, lose, losing_hlc in con.execute(
                   "SELECT record_id, field, current, losing, losing_hlc FROM conflicts")]
        seq = int(con.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        pushes = con.execute("SELECT COUNT(*) FROM audit WHERE action = 'push'").fetchone()[0]
    finally:
        con.close()
    assert pushes == len(order)  # one audit row per batch
    assert seq <= sum(len(changes) for _, changes in order)  # at most one write a change
    return records, log


def conflict_log(log, rounds):
    """The order-free part of the conflict log: which value (record, field,
    losing clock, losing value and device) lost, for every loser that was
    its device's last write of that field, on a record that got at most one
    tombstone change (one delete, or none).

    The rest depends on the arrival order, and is left out:

    - the value a loser was logged against (`current`): the one holding the
      field when the loser arrived. With three concurrent writes of one
      field a < b < c, the order a, b, c logs a against b and b against c;
      the order c, a, b both against c. It is always newer than the loser
      (checked here).
    - a value its own device replaced later (in a later batch): device a
      writes a1 then a2 while c writes c1 (a1 < c1 < a2). If c1 arrives
      first, a1 is logged as losing to c1; if a1 and a2 arrive first, a2 has
      replaced a1 when c1 arrives, and a1 is never logged.
    - the same for tombstones, on a record with two or more tombstone
      changes (a delete then a restore, or two concurrent deletes): a value
      that loses to, or wins over, a tombstone is logged only if it arrives
      while that tombstone is the record's. E.g. a deletes then restores
      (d < r) while c edits concurrently (d < e): e before d logs "the
      delete lost to e"; d, r, then e logs nothing.

    The records converge whatever the order (checked); only the log differs.
    """
    tombstones, last = {}, {}
    for work in rounds:
        for device, batches in work:
            for changes in batches:
                for c in changes:
                    if "deleted" in c:
                        tombstones[c["id"]] = tombstones.get(c["id"], 0) + 1
                        last[c["id"], "deleted", device] = c["hlc"]
                    for name in c["data"]:
                        last[c["id"], name, device] = c["hlc"]
    out = set()
    for rid, fld, current, losing, losing_hlc in log:
        assert current["hlc"] > losing_hlc, (rid, fld, current, losing)
        if tombstones.get(rid, 0) <= 1 and last[rid, fld, losing["device"]] == losing_hlc:
            out.add((rid, fld, losing_hlc, json.dumps(losing["value"]), losing["device"]))
    return out


def pure_merge(order):
    """The same order through schemas.merge alone: what the server must store."""
    state = {}
    for device, changes in order:
        for c in changes:
            state[c["id"]] = merge(state.get(c["id"]), c, device=device,
                                   user=DEVICES[device]).record
    return {rid: to_wire(s) for rid, s in state.items()}


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(rounds=histories(), data=st.data())
def test_every_arrival_order_stores_the_same_records_and_conflicts(signed_in_db, tmp_path,
                                                                   rounds, data):
    orders = list(device_orders(rounds))
    orders.append(data.draw(interleavings(rounds)))
    first_records, first_log = run_order(signed_in_db, tmp_path, orders[0])
    expected = pure_merge(orders[0])
    assert {rid: to_wire(r[0]) for rid, r in first_records.items()} == expected
    for order in orders[1:]:
        records, log = run_order(signed_in_db, tmp_path, order)
        assert records == first_records
        assert conflict_log(log, rounds) == conflict_log(first_log, rounds)

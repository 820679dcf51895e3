"""Crash safety of the sync server: SIGKILL while devices push, and cut uploads.

The real `fieldsync-server serve` (gunicorn, its own session) on a real SQLite
file is killed with SIGKILL at random instants while several devices push
batches of valid records (creates, edits, deletes and restores; shared
records edited by every device), each resending the same body under the same
batch id until it gets a 200. Afterwards the server must hold exactly what
the model of acknowledged changes says (DESIGN.md contract 1-3): nothing
acknowledged lost, nothing doubled, every field won by the largest clock,
the conflict log holding only values that were sent, `PRAGMA
integrity_check` ok, and a full pull equal to the database.

`make test` runs 20 kills (20-40 s); `make test-long` runs 200 (about 4 min:
each restart of gunicorn costs about a second). CRASH_SEED=N picks the kill
instants and batch contents (thread timing still varies); the counts and
the seed are printed.
"""
import gzip
import os
import random
import threading
import time

import pytest
import requests

import crashkit
from conftest import USERS, wait_until

AREA = "QN.LM.03"          # the health worker "hw" of conftest covers it
USER = USERS["hw"]


def login(url, device_id):
    resp = requests.post(url + "/api/v1/auth/login", json={
        "username": USER["username"], "password": USER["password"],
        "device_id": device_id, "app_version": "crash-test"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture
def sampler():
    found = crashkit.pick_form()
    assert found is not None, "crashkit.pick_form found no usable bundled form"
    return found


def run_crash(server, sampler, *, kills, devices, seed, shared=6, pause=(0.05, 0.6)):
    """Push from `devices` threads while a killer SIGKILLs the server `kills`
    times; return (stats, model batches, a token for the final pull)."""
    rng = random.Random(seed)
    stats = crashkit.Stats()
    fleet = []
    for i in range(devices):
        device_id = f"crash-{seed}-{i}"
        answer = login(server.url, device_id)   # once per device: tokens survive restarts
        fleet.append(crashkit.Device(server.url, device_id, answer["token"], answer["hlc"],
                                     AREA, sampler, random.Random(rng.random()), [], stats))
    # The shared records exist (acknowledged) before the first kill; then
    # every device edits them, the same and different fields.
    setup = fleet[0].new_batch(shared, creates_only=True)
    assert fleet[0].push_until_acked(setup)
    shared_ids = [c.id for c in setup.changes]
    for dev in fleet:
        dev.shared = shared_ids

    stop = threading.Event()

    def client(dev):
        try:
            while not stop.is_set():
                batch = dev.new_batch(dev.rng.randint(1, 8))
                acked = dev.push_until_acked(batch, stop)
                with stats.lock:
                    stats.batches += 1
                    stats.attempts += batch.attempts
                    stats.acked += acked
                    stats.changes += len(batch.changes)
                    stats.creates += sum(c.create for c in batch.changes)
                    stats.shared_edits += sum(c.id in shared_ids for c in batch.changes)
                    stats.deletes += sum(crashkit.TOMBSTONE in c.fields for c in batch.changes)
                    for r in (batch.answer or {}).get("results", []):
                        stats.statuses[r["status"]] = stats.statuses.get(r["status"], 0) + 1
                        if r["status"] not in crashkit.GOOD_STATUSES:
                            stats.errors.append(f"{batch.batch_id}: {r}")
        except Exception as exc:  # reported by the test, not lost in a thread
            stats.errors.append(f"{dev.device_id}: {exc!r}")
            stop.set()

    def killer():
        try:
            for _ in range(kills):
                # Work between kills: a batch acknowledged since the last
                # restart, however slow the machine; then a random instant.
                acked = stats.acked
                wait_until(lambda: stats.acked > acked or stop.is_set(), "a batch acked", 120)
                time.sleep(rng.uniform(*pause))
                if stop.is_set():
                    return
                server.kill()
                stats.kills += 1
                server.start(timeout=60)
        except Exception as exc:
            stats.errors.append(f"killer: {exc!r}")
        finally:
            stop.set()

    # A device that only pulls, page after page with its cursor, through the
    # kills: its replica must end equal to the server (no change skipped).
    puller = crashkit.Puller(server.url, login(server.url, f"crash-{seed}-puller")["token"])

    def pull_loop():
        try:
            while not stop.is_set():
                if not puller.page():
                    time.sleep(0.05)
        except Exception as exc:
            stats.errors.append(f"puller: {exc!r}")

    threads = [threading.Thread(target=client, args=(d,)) for d in fleet]
    threads += [threading.Thread(target=killer), threading.Thread(target=pull_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    puller.drain()
    batches = [b for dev in fleet for b in dev.batches]
    return stats, batches, fleet[0].token, puller


def check_after_crashes(server, stats, batches, token, puller):
    """The contract after the run: model, integrity, pull == db, replica == db."""
    records, pages = crashkit.full_pull(server.url, token)
    server.kill()  # and once more without warning before reading the file
    db = crashkit.read_db(server.db)
    problems = crashkit.verify(batches, db)       # the model first: the root cause
    problems += crashkit.pull_matches_db(records, db)
    replica = sorted(puller.replica.values(), key=lambda r: r["seq"])
    problems += [f"incremental puller: {p}" for p in crashkit.pull_matches_db(replica, db)]
    # Every acknowledged batch is remembered under its id (its answer is
    # what a resend gets); an unacknowledged one may or may not be.
    for b in batches:
        if b.acked and (b.device, b.batch_id) not in db["batches"]:
            problems.append(f"acknowledged batch {b.batch_id} not recorded")
    return problems + stats.errors, db, pages


def _run_and_check(server_process, sampler, capsys, *, kills, devices, seed, **kw):
    started = time.monotonic()
    stats, batches, token, puller = run_crash(server_process, sampler, kills=kills,
                                              devices=devices, seed=seed, **kw)
    problems, db, pages = check_after_crashes(server_process, stats, batches, token, puller)
    line = (f"crash seed={seed} form={sampler.id} devices={devices} "
            f"{stats.summary(len(db['rows']), len(db['conflicts']))} "
            f"pull_pages={pages} puller_pages={puller.pages} "
            f"puller_failures={puller.failures} seconds={time.monotonic() - started:.1f}")
    with capsys.disabled():
        print("\n" + line)
    assert not problems, line + "\n" + "\n".join(problems[:40])
    assert stats.kills >= kills, line
    assert stats.acked >= kills, line          # work really happened between kills
    assert stats.retries > 0, line             # and kills really hit requests
    assert stats.shared_edits > 0 and stats.deletes > 0, line


def test_sigkill_at_random_points_loses_and_doubles_nothing(server_process, sampler, capsys):
    seed = int(os.environ.get("CRASH_SEED", "20261129"))
    _run_and_check(server_process, sampler, capsys, kills=20, devices=4, seed=seed)


@pytest.mark.slow
def test_sigkill_200_times_loses_and_doubles_nothing(server_process, sampler, capsys):
    seed = int(os.environ.get("CRASH_SEED", "7"))
    _run_and_check(server_process, sampler, capsys, kills=200, devices=6, seed=seed,
                   pause=(0.02, 0.3))


# -- a push cut mid-upload -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["content-length", "gzip", "chunked"])
def test_push_cut_mid_upload_stores_nothing(server_process, sampler, mode):
    """Half the body, then the link drops: nothing of the batch is stored, the
    batch id is not taken, and the full resend is then applied normally."""
    answer = login(server_process.url, f"cut-{mode}")
    dev = crashkit.Device(server_process.url, f"cut-{mode}", answer["token"], answer["hlc"],
                          AREA, sampler, random.Random(3), [], crashkit.Stats())
    batch = dev.new_batch(8)
    body = gzip.compress(batch.body) if mode == "gzip" else batch.body
    headers = {"Authorization": f"Bearer {dev.token}", "Content-Type": "application/json"}
    if mode == "gzip":
        headers["Content-Encoding"] = "gzip"
    ids = {c.id for c in batch.changes}
    for fraction in (0.1, 0.5, 0.99):
        crashkit.send_partial("127.0.0.1", server_process.port, crashkit.PUSH, headers, body,
                              fraction=fraction, chunked=(mode == "chunked"))
    crashkit.await_ready(server_process.url)
    db = crashkit.read_db(server_process.db)
    assert not ids & set(db["rows"]), "a cut upload stored records"
    assert (dev.device_id, batch.batch_id) not in db["batches"], "a cut upload took the batch id"
    assert db["integrity"] == ["ok"]
    # The device resends the whole batch: applied now, as if first seen.
    assert dev.push_until_acked(batch)
    assert [r["status"] for r in batch.answer["results"]] == ["applied"] * len(batch.changes)
    assert ids <= set(crashkit.read_db(server_process.db)["rows"])
    log = server_process.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


# -- the same batch in flight several times at once ------------------------------------

def test_same_batch_sent_concurrently_is_applied_once(server_process, sampler):
    """A device that times out and resends while the first request is still
    being processed (F1): every copy gets the same answer, each record is
    stored once with one seq, and a different body under that id is 409."""
    from concurrent.futures import ThreadPoolExecutor
    answer = login(server_process.url, "twin")
    dev = crashkit.Device(server_process.url, "twin", answer["token"], answer["hlc"], AREA,
                          sampler, random.Random(11), [], crashkit.Stats())
    headers = {"Authorization": f"Bearer {dev.token}", "Content-Type": "application/json"}
    for round_ in range(5):
        batch = dev.new_batch(20)
        other = batch.body.replace(b'"app_version": "crash-test"', b'"app_version": "other"')
        bodies = [batch.body] * 7 + [other]

        def send(body):
            while True:  # a 503 (write lock busy on a loaded machine) stores nothing: resend
                resp = requests.post(server_process.url + crashkit.PUSH, data=body,
                                     headers=headers, timeout=30)
                if resp.status_code != 503:
                    return resp
                time.sleep(0.1)

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(send, bodies))
        statuses = [r.status_code for r in answers]
        ok = [r.json() for r, body in zip(answers, bodies) if r.status_code == 200]
        # Either the real body or the other one was first; all copies of the
        # winner agree, every loser is 409.
        assert sorted(set(statuses)) in ([200, 409], [200]), statuses
        assert all(a == ok[0] for a in ok), "copies of one batch got different answers"
        assert statuses.count(200) in (1, 7), statuses
        db = crashkit.read_db(server_process.db)
        ids = {c.id for c in batch.changes}
        if statuses.count(200) == 7:
            assert ids <= set(db["rows"])
        seqs = [db["rows"][i]["seq"] for i in ids if i in db["rows"]]
        assert len(seqs) == len(set(seqs))
        assert db["counts"][0] == db["counts"][1] == db["counts"][2]

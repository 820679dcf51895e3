"""Export parameters at the edges of their range, and appending exports.

- Dates at the ends of datetime's range (`since=0001-01-01` in UTC+7 is
  before year 1 in UTC; `until=9999-12-31T23:59:59-12:00` after 9999) were
  an OverflowError, a 500. They mean "from the start" / "to the end" and get
  the exact answer; malformed values get a 400, on every export endpoint of
  the real server and in `fieldsync-server export`.
- `after=<X-Fieldsync-Next-After>` continues an export exactly: every record
  changed since, once, in its current state; nothing the previous export
  held unless it changed since. Checked while 4 devices push at once.
"""
import json
import threading
import uuid

import pytest

from tests.conftest import run_cli
from tests.test_exports_api import Api, Device, csv_rows, household

EARLY = ["0001-01-01", "0001-01-01T00:00:00", "0001-01-01T00:00:00+14:00",
         "0001-01-01T06:59:59.999"]
LATE = ["9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59.999999-12:00", "9999-12-31"]
ENDPOINTS = ["household.csv", "household.jsonl", "household.xlsx", "all.xlsx", "all.zip"]
#: (parameter, value): each a 400 invalid_parameter naming the parameter.
MALFORMED = [
    ("since", "0000-12-31"), ("since", "10000-01-01"), ("until", "9999-12-32"),
    ("since", "2025-02-30"), ("until", "2025-03-01T24:00:01"), ("since", " "),
    ("since", "\x00"), ("until", "2025-03-01T08:00:00+25:00"), ("since", "9" * 5000),
    ("since", "2025-03-01T08:00:00[Asia/Ho_Chi_Minh]"),
    ("after", "-1"), ("after", "1e3"), ("after", "\u0661"), ("after", "\u00b2"),
    ("after", "1.0"), ("after", " "), ("after", str(2 ** 63)), ("after", "9" * 400),
    # Well-formed, but past every change of this server (a restored database).
    ("after", str(2 ** 63 - 1)), ("after", str(2 ** 62 + 1)),
    ("version", "0"), ("version", str(2 ** 64)), ("include_deleted", "2"),
]


@pytest.fixture(scope="module")
def live(template_db, tmp_path_factory):
    """One real server with 3 households and 1 birth in QN.LM.03."""
    from tests.conftest import ServerProcess, copy_db, free_port
    folder = tmp_path_factory.mktemp("after")
    server = ServerProcess(db=copy_db(template_db, folder / "fieldsync.db"),
                           port=free_port(), log=folder / "server.log")
    server.start()
    api = Api(url=server.url)
    hw = Device(api, "hw", "dev-after-hw")
    for name in ("Hộ A", "Hộ B", "Hộ C"):
        hw.create("household", "QN.LM.03", household(name))
    yield {"server": server, "api": api, "sup": api.login("sup", "dev-after-sup"),
           "db": server.db}
    server.stop()


def _count(live, name, **params):
    status, headers, data = live["api"].call("GET", f"/api/v1/exports/{name}", live["sup"],
                                             params=params)
    assert status == 200, (name, params, data[:300])
    return int(headers["X-Fieldsync-Count"])


@pytest.mark.parametrize("name", ENDPOINTS)
def test_dates_at_the_ends_of_the_calendar_are_exact_answers(live, name):
    everything = _count(live, name)
    assert everything >= 3
    for early in EARLY:
        assert _count(live, name, since=early) == everything, early
        assert _count(live, name, until=early) == 0, early
    for late in LATE:
        assert _count(live, name, until=late) == everything, late
        assert _count(live, name, since=late) == 0, late
    assert _count(live, name, since=EARLY[0], until=LATE[0]) == everything


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("param,value", MALFORMED)
def test_malformed_parameters_are_a_clear_400(live, name, param, value):
    if param == "version" and name.startswith("all."):
        value = "1"              # all.* refuses any version: still a 400 on `version`
    status, headers, data = live["api"].call("GET", f"/api/v1/exports/{name}", live["sup"],
                                             params={param: value})
    assert status == 400, (param, value, data[:300])
    body = json.loads(data)
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == "invalid_parameter" and body["details"]["parameter"] == param
    assert "Traceback" not in body["message"]


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("param", ["since", "until", "after", "area", "version", "repeat",
                                   "include_deleted", "bom"])
def test_an_empty_parameter_is_the_same_as_none(live, name, param):
    assert _count(live, name, **{param: ""}) == _count(live, name)


def test_the_cli_export_takes_the_same_edges(live, tmp_path):
    out = tmp_path / "hh.csv"
    proc = run_cli(live["db"], "export", "household", "--since", "0001-01-01",
                   "--until", "9999-12-31T23:59:59-12:00", "--out", str(out))
    assert len(csv_rows(out.read_bytes())) == _count(live, "household.csv")
    token = proc.stderr.rsplit("--after ", 1)[1].strip()
    assert token.isdigit(), proc.stderr
    proc = run_cli(live["db"], "export", "household", "--format", "jsonl", "--after", token)
    assert proc.stdout == ""
    for args in (["--since", "10000-01-01"], ["--after", "-1"], ["--after", str(2 ** 63)],
                 ["--after", str(int(token) + 1)], ["--until", "\u0661"]):
        proc = run_cli(live["db"], "export", "household", *args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "Error:" in proc.stderr, (args, proc.stderr)


# -- after: appending exports -------------------------------------------------------------

def _jsonl(api, token, **params):
    status, headers, data = api.call("GET", "/api/v1/exports/household.jsonl", token,
                                     params=params)
    assert status == 200, data[:300]
    rows = [json.loads(line) for line in data.splitlines()]
    assert int(headers["X-Fieldsync-Count"]) == len(rows)
    return rows, headers


def test_after_continues_exactly_where_next_since_repeated_the_last_batch(api):
    """The review's case: one batch of 101 households, exported; `since=` the
    Next-Since gives those 101 again (since is inclusive and a batch shares
    one commit time), `after=` the Next-After gives none. An edit afterwards
    comes back once, with its new state."""
    hw = Device(api, "hw", "dev-after-1")
    ids = [str(uuid.uuid4()) for _ in range(101)]
    assert {r["status"] for r in hw.push([
        {"id": i, "form": "household", "form_version": 1, "area": "QN.LM.03",
         "data": household(f"Hộ {n}")} for n, i in enumerate(ids)])} == {"applied"}
    sup = api.login("sup", "dev-after-sup")
    first, headers = _jsonl(api, sup)
    assert [r["id"] for r in first] == ids
    token = headers["X-Fieldsync-Next-After"]
    assert len(_jsonl(api, sup, since=headers["X-Fieldsync-Next-Since"])[0]) == 101
    assert _jsonl(api, sup, after=token)[0] == []
    assert _jsonl(api, sup, after=token)[1]["X-Fieldsync-Next-After"] == token
    # An edit of an exported record: it comes back once, as it is now.
    [edit] = hw.push([{"id": ids[5], "form": "household", "form_version": 1,
                       "area": "QN.LM.03", "data": {"head_name": "Đã sửa"}}])
    assert edit["status"] == "applied"
    again, headers2 = _jsonl(api, sup, after=token)
    assert [(r["id"], r["data"]["head_name"]) for r in again] == [(ids[5], "Đã sửa")]
    assert int(headers2["X-Fieldsync-Next-After"]) > int(token)
    assert _jsonl(api, sup, after=headers2["X-Fieldsync-Next-After"])[0] == []


def test_after_with_until_continues_where_the_window_stopped(api):
    """An export cut by `until` hands out a token that stops where it stopped:
    the next `after` export holds exactly the rest."""
    hw = Device(api, "hw", "dev-after-2")
    early = [hw.create("household", "QN.LM.03", household(f"Sớm {n}")) for n in range(3)]
    sup = api.login("sup", "dev-after-sup")
    _, headers = _jsonl(api, sup)
    cut = headers["X-Fieldsync-Next-Since"]      # the third one's commit time
    late = [hw.create("household", "QN.LM.03", household(f"Muộn {n}")) for n in range(2)]
    window, headers = _jsonl(api, sup, until=cut)
    assert [r["id"] for r in window] == early[:2]
    rest, _ = _jsonl(api, sup, after=headers["X-Fieldsync-Next-After"])
    assert [r["id"] for r in rest] == early[2:] + late


def test_after_is_declared_and_checked_like_the_other_filters(api):
    sup = api.login("sup", "dev-after-sup")
    status, _, data = api.call("GET", "/api/v1/exports/household.csv", sup,
                               params={"after": "5"})
    assert status == 400 and "restored" in json.loads(data)["message"]
    spec = json.loads(api.call("GET", "/api/openapi.json")[2])
    params = {p["name"] for p in spec["paths"]["/api/v1/exports/{name}"]["get"]["parameters"]}
    assert "after" in params


@pytest.fixture
def api(client):
    return Api(client=client)


def test_appended_exports_under_4_pushing_devices_equal_one_full_export(server_process):
    """4 devices create, edit and delete households over the real server
    while a supervisor appends `after=` exports (with deletions) in a loop.
    The union of the appends, the latest row per id, equals one full export
    afterwards: no id missing, no id extra, and no (id, state) twice (a
    record edited after an export comes back with its new state: not a
    repeat)."""
    api = Api(url=server_process.url)
    devices = [Device(api, "hw", f"dev-append-{n}") for n in range(4)]
    sup = api.login("sup", "dev-append-sup")
    errors = []
    # Every 5 steps the devices wait for the supervisor: each round of pushes
    # is appended while it lands and after it has landed, whatever the
    # threads' speed (no sleeping, no timing).
    rounds = threading.Barrier(5, timeout=300)

    def work(n, device):
        try:
            mine = []
            for step in range(25):
                changes = [{"id": str(uuid.uuid4()), "form": "household", "form_version": 1,
                            "area": "QN.LM.03", "data": household(f"d{n} s{step} r{k}")}
                           for k in range(8)]
                mine += [c["id"] for c in changes]
                # Edit two earlier records of this device (exported or not yet),
                # and delete one, every step: each a new state.
                for k, rid in enumerate(mine[-20:-18]):
                    changes.append({"id": rid, "form": "household", "form_version": 1,
                                    "area": "QN.LM.03",
                                    "data": {"head_name": f"d{n} s{step} edit{k}"}})
                if step % 5 == 4:
                    changes.append({"id": mine[step], "form": "household",
                                    "form_version": 1, "area": "QN.LM.03", "data": {},
                                    "deleted": True})
                statuses = {r["status"] for r in device.push(changes)}
                assert statuses == {"applied"}, statuses
                if step % 5 == 4:
                    rounds.wait()
        except threading.BrokenBarrierError:
            pass                      # the supervisor's side failed: reported there
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            rounds.abort()

    threads = [threading.Thread(target=work, args=(n, d)) for n, d in enumerate(devices)]
    for thread in threads:
        thread.start()
    appends, token = [], None

    def append():
        nonlocal token
        params = {"include_deleted": "1"}
        if token is not None:
            params["after"] = token
        rows, headers = _jsonl(api, sup, **params)
        appends.append(rows)
        token = headers["X-Fieldsync-Next-After"]

    try:
        for _ in range(5):
            append()
            while rounds.n_waiting < 4 and not errors:   # the round is still pushing
                append()
            rounds.wait()
    except threading.BrokenBarrierError:
        pass                                  # a device failed: its error is below
    finally:
        rounds.abort()                        # never leave a device waiting
        for thread in threads:
            thread.join()
    assert not errors, errors
    rows, _ = _jsonl(api, sup, after=token, include_deleted="1")    # the last changes
    appends.append(rows)
    full, _ = _jsonl(api, sup, include_deleted="1")

    def state(row):
        return (row["id"], row["deleted"], json.dumps(row["data"], sort_keys=True))

    seen, latest = set(), {}
    for rows in appends:
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "an id twice in one export"
        for row in rows:
            assert state(row) not in seen, f"repeated: {state(row)}"
            seen.add(state(row))
            latest[row["id"]] = state(row)
    assert latest == {r["id"]: state(r) for r in full}
    assert len(full) == 4 * 25 * 8
    assert sum(r["deleted"] for r in full) == 4 * 5
    assert len(appends) >= 6

"""Property-based HTTP fuzzing of push and pull against the in-process app.

Whatever arrives — random JSON, non-JSON, gzip that is broken or a bomb,
wrong types, huge numbers, unknown keys, forged cursors, silly limits — the
server answers without a 5xx and without a traceback, every error has the
shape {"error", "message", "details"}, every answer is strict JSON (no
NaN/Infinity), and a request that is refused as a whole changes nothing in
the database. A change rejected inside an accepted batch stores nothing
for that record, and an accepted batch sent again gets its first answer and
changes nothing.
"""
import base64
import gzip
import hashlib
import hmac
import json
import os
import random
import sqlite3
import tracemalloc
import uuid
import zlib
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

import crashkit
from conftest import copy_db, login

AREA = "QN.LM.03"
FOREIGN_AREA = "QN.TB.01"
DEVICE = "fuzz-dev"
TABLES = ["records", "conflicts", "batches", "rejections", "devices", "forms", "users",
          "tokens", "audit", "meta"]
STATUSES = {"applied", "unchanged", "conflict", "rejected", "forbidden"}
HUGE = [3.8e27, -3.8e27, 1e308, 1e400, -1e400, 10 ** 30, -(10 ** 30), 2 ** 63, 2 ** 64,
        -(2 ** 63) - 1, 9007199254740993, 0.1 + 0.2, -0.0, 1e-320]
#: FUZZ_EXAMPLES=2000 for a long hunt; the default keeps `make test` quick.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


# -- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(template_db, tmp_path_factory):
    """One app on a copy of the template database, a health worker's token."""
    from server import create_app
    path = copy_db(template_db, tmp_path_factory.mktemp("fuzz") / "fieldsync.db")
    app = create_app({"DB": str(path)})      # not TESTING: errors render as in production
    client = app.test_client()
    sampler = crashkit.pick_form()
    assert sampler is not None, "crashkit.pick_form found no usable bundled form"
    return {"app": app, "client": client, "db": path, "sampler": sampler,
            "token": login(client, "hw", DEVICE)}


def auth(env):
    return {"Authorization": "Bearer " + env["token"]}


def counts(path):
    conn = sqlite3.connect(path)
    try:
        out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        out["seq"] = conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
        out["records_state"] = conn.execute(
            "SELECT total(length(state)), max(seq) FROM records").fetchone()
        return out
    finally:
        conn.close()


def _no_constant(name):
    raise ValueError(f"{name} in an answer is not JSON")


def checked(resp):
    """The decoded answer, after the checks every answer must pass."""
    text = resp.get_data(as_text=True)
    assert resp.status_code < 500, f"{resp.status_code}: {text[:1000]}"
    assert "Traceback" not in text and 'File "' not in text, text[:1000]
    assert resp.mimetype == "application/json", (resp.status_code, resp.mimetype, text[:300])
    body = json.loads(text, parse_constant=_no_constant)
    if resp.status_code >= 400:
        assert isinstance(body, dict) and set(body) == {"error", "message", "details"}, body
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]
        assert isinstance(body["details"], dict)
    return body


def post_push(env, raw, headers=None):
    return env["client"].post(crashkit.PUSH, data=raw, headers={
        **auth(env), "Content-Type": "application/json", **(headers or {})})


# -- strategies ---------------------------------------------------------------------

# Text includes lone surrogates now and then: "\ud800" is valid JSON that
# SQLite cannot store as UTF-8.
texts = st.one_of(st.text(max_size=20),
                  st.text(st.characters(categories=["Cs", "Ll", "Nd", "Zs"]), max_size=6))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
odd_values = st.one_of(json_values, st.sampled_from(HUGE),
                       st.sampled_from(["", "x", "1", "QN.LM.03\n", "../../etc", "\u0000",
                                        "\ud800", "a\udfffb", "\U0001f600", "e\u0301",
                                        "2025-03-01T02:03:04.123Z-0000-dev-7f3a",
                                        "9999-12-31T23:59:59.999Z-ffff-zzz", "Infinity"]))


def valid_push(env, rng, n):
    """A valid push of `n` creates with fresh ids and fresh device clocks."""
    sampler = env["sampler"]
    now = datetime.now(timezone.utc)
    clock = crashkit.Clock(DEVICE)
    records = []
    for _ in range(n):
        # Fresh ids every call (not from the seed): hypothesis replays seeds.
        records.append({"id": str(uuid.uuid4()),
                        "form": sampler.id, "form_version": sampler.version, "area": AREA,
                        "data": sampler.create(rng), "hlc": clock.now()})
    return {"device_id": DEVICE, "batch_id": f"fz-{uuid.uuid4().hex}",
            "device_time": now.isoformat(), "app_version": "fuzz", "records": records}


@st.composite
def mutated_pushes(draw):
    """A valid push, then 1-4 mutations of the envelope or of its changes."""
    seed = draw(st.integers(0, 2 ** 32))
    n = draw(st.integers(1, 4))
    mutations = draw(st.lists(st.tuples(
        st.sampled_from(["env_set", "env_del", "env_extra", "rec_set", "rec_del", "rec_extra",
                         "rec_not_dict", "data_set", "data_extra", "data_del", "form",
                         "version", "area", "clock", "id_dup"]),
        st.integers(0, 10), odd_values, st.text(min_size=1, max_size=12)), min_size=1,
        max_size=4))
    return seed, n, mutations


ENV_KEYS = ["device_id", "batch_id", "device_time", "app_version", "records"]
REC_KEYS = ["id", "form", "form_version", "area", "data", "hlc", "clocks", "bases", "deleted"]


def apply_mutations(env, push, mutations):
    sampler = env["sampler"]
    fields = [f["name"] for f in sampler.fields]
    for kind, i, value, name in mutations:
        recs = push.get("records")
        recs = recs if isinstance(recs, list) else []
        rec = recs[i % len(recs)] if recs else None
        if kind == "env_set":
            push[ENV_KEYS[i % len(ENV_KEYS)]] = value
        elif kind == "env_del":
            push.pop(ENV_KEYS[i % len(ENV_KEYS)], None)
        elif kind == "env_extra":
            push[name] = value
        elif not isinstance(rec, dict):
            continue
        elif kind == "rec_set":
            rec[REC_KEYS[i % len(REC_KEYS)]] = value
        elif kind == "rec_del":
            rec.pop(REC_KEYS[i % len(REC_KEYS)], None)
        elif kind == "rec_extra":
            rec[name] = value
        elif kind == "rec_not_dict":
            recs[i % len(recs)] = value
        elif kind == "data_set" and isinstance(rec.get("data"), dict):
            rec["data"][fields[i % len(fields)]] = value
        elif kind == "data_extra" and isinstance(rec.get("data"), dict):
            rec["data"][name] = value
        elif kind == "data_del" and isinstance(rec.get("data"), dict):
            rec["data"].pop(fields[i % len(fields)], None)
        elif kind == "form":
            rec["form"] = ["nope", "cp_report", "household", name][i % 4]
        elif kind == "version":
            rec["form_version"] = [0, 2, 99, 10 ** 30, 3.8e27, -1, "1", 1.0][i % 8]
        elif kind == "area":
            rec["area"] = [FOREIGN_AREA, "QN.LM", "QN.LM.03.X", "QN.LMX", "qn.lm.03",
                           "QN..LM", "A" * 300, ""][i % 8]
        elif kind == "clock":
            rec["hlc"] = ["9999-12-31T23:59:59.999Z-ffff-zzz",
                          "1970-01-01T00:00:00.000Z-0000-dev",
                          "2025-02-30T00:00:00.000Z-0000-dev", "2025-03-01T02:03:04.123Z-0000-DEV",
                          name][i % 5]
        elif kind == "id_dup" and len(recs) > 1:
            other = recs[(i + 1) % len(recs)]
            if isinstance(other, dict) and "id" in other:
                rec["id"] = other["id"]
    return push


def stored_ids(path):
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM records")}
    finally:
        conn.close()


# -- push ------------------------------------------------------------------------------

@FUZZ
@given(body=json_values, gz=st.booleans())
@example(body={"records": [{}] * 2}, gz=False)
@example(body={"device_id": DEVICE, "batch_id": "x", "device_time": 3.8e27,
               "app_version": "1", "records": []}, gz=False)
def test_random_json_push_is_a_clear_4xx_and_stores_nothing(env, body, gz):
    before = counts(env["db"])
    raw = json.dumps(body).encode()
    resp = post_push(env, gzip.compress(raw) if gz else raw,
                     {"Content-Encoding": "gzip"} if gz else None)
    checked(resp)
    assert 400 <= resp.status_code < 500
    assert counts(env["db"]) == before


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300),
                     json_values.map(lambda v: json.dumps(v).encode())),
       wrap=st.sampled_from(["plain", "gzip", "truncated_gzip", "gzip_no_header"]),
       cut=st.floats(0.0, 1.0))
def test_random_bytes_plain_or_gzipped_are_a_clear_4xx(env, raw, wrap, cut):
    """Not a push at all, or a gzip stream cut anywhere: 4xx, nothing stored."""
    headers = {}
    if wrap != "plain":
        headers["Content-Encoding"] = "gzip"
        packed = gzip.compress(raw)
        raw = {"gzip": packed, "truncated_gzip": packed[: int(len(packed) * cut)],
               "gzip_no_header": raw}[wrap]
    before = counts(env["db"])
    resp = post_push(env, raw, headers)
    checked(resp)
    assert 400 <= resp.status_code < 500
    assert counts(env["db"]) == before


@FUZZ
@given(case=mutated_pushes())
def test_mutated_push_never_fails_and_rejected_changes_store_nothing(env, case):
    seed, n, mutations = case
    rng = random.Random(seed)
    push = apply_mutations(env, valid_push(env, rng, n), mutations)
    ids_before = stored_ids(env["db"])
    before = counts(env["db"])
    resp = post_push(env, json.dumps(push).encode())
    body = checked(resp)
    after = counts(env["db"])
    event(f"HTTP {resp.status_code}")
    for result in body.get("results", []) if resp.status_code == 200 else []:
        event(f"status {result.get('status')}")
    if resp.status_code != 200:
        assert after == before, (resp.status_code, body)
        return
    records = push["records"]
    assert len(body["results"]) == len(records)
    stored = stored_ids(env["db"])
    new_ids = stored - ids_before
    good = set()
    for raw, result in zip(records, body["results"]):
        assert result["status"] in STATUSES, result
        if result["status"] in ("rejected", "forbidden"):
            assert result.get("errors"), result
        else:
            good.add(result["id"])
    rejected = {r["id"] for r in body["results"] if r["status"] in ("rejected", "forbidden")}
    # A rejected change stores nothing: its id is new only if another change
    # in the same batch (same id) was accepted.
    assert not (rejected - good) & new_ids, (push, body)
    assert new_ids <= good
    assert after["records"] - before["records"] == len(new_ids)
    # The same batch again (here gzipped): the first answer, nothing changes.
    again = post_push(env, gzip.compress(json.dumps(push).encode()),
                      {"Content-Encoding": "gzip"})
    assert again.status_code == 200 and checked(again) == body
    assert counts(env["db"]) == after


def stored_state(path, record_id):
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT state, data, seq FROM records WHERE id = ?",
                           [record_id]).fetchone()
        return row
    finally:
        conn.close()


@FUZZ
@given(seed=st.integers(0, 2 ** 32),
       edit=st.dictionaries(texts.filter(bool), odd_values, min_size=1,
                            max_size=3),
       known=st.dictionaries(st.integers(0, 20), odd_values, max_size=3))
def test_a_rejected_edit_leaves_the_stored_record_untouched(env, seed, edit, known):
    """An edit of a stored record with random values (for real and unknown
    fields): `rejected` leaves the row byte-identical; `applied` stores the
    edited values and a new seq; never a 5xx."""
    rng = random.Random(seed)
    sampler = env["sampler"]
    push = valid_push(env, rng, 1)
    first = checked(post_push(env, json.dumps(push).encode()))
    assert first.get("results", [{}])[0].get("status") == "applied", first
    rec = push["records"][0]
    names = [f["name"] for f in sampler.fields]
    data = {**edit, **{names[i % len(names)]: v for i, v in known.items()}}
    change = {**rec, "data": data, "hlc": crashkit.Clock(DEVICE, rec["hlc"]).now()}
    before = stored_state(env["db"], rec["id"])
    resp = post_push(env, json.dumps({**push, "batch_id": push["batch_id"] + "-e",
                                      "records": [change]}).encode())
    body = checked(resp)
    after = stored_state(env["db"], rec["id"])
    if resp.status_code != 200:   # e.g. 1e400 sent as Infinity: not JSON
        assert after == before
        return
    status = body["results"][0]["status"]
    if status == "rejected":
        assert body["results"][0]["errors"]
        assert after == before
    else:
        assert status == "applied", body
        assert after[2] > before[2]
        stored = json.loads(after[1])
        assert set(data) <= set(stored)


LATIN1 = st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f\x85")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(header=st.one_of(st.text(alphabet=LATIN1, max_size=80),
                        st.text(alphabet=LATIN1, max_size=60).map(lambda t: "Bearer " + t)),
       path=st.sampled_from([crashkit.PUSH, crashkit.PULL]))
def test_a_bad_token_is_401_and_stores_nothing(env, header, path):
    before = counts(env["db"])
    if path == crashkit.PUSH:
        resp = env["client"].post(path, data=json.dumps(valid_push(env, random.Random(5), 1)),
                                  headers={"Authorization": header,
                                           "Content-Type": "application/json"})
    else:
        resp = env["client"].get(path, headers={"Authorization": header})
    body = checked(resp)
    assert resp.status_code == 401, body
    assert counts(env["db"]) == before


BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)   # 64 MiB inflated


def _truncated_gzip(env):
    raw = gzip.compress(json.dumps(valid_push(env, random.Random(1), 2)).encode())
    return raw[: len(raw) // 2]


@pytest.mark.parametrize("name", ["bomb", "truncated", "garbage_gzip", "gzip_of_garbage",
                                  "double_gzip", "deflate", "brotli", "empty", "not_json",
                                  "nan", "deep", "huge_int"])
def test_bodies_that_are_not_a_push_store_nothing(env, name):
    valid = json.dumps(valid_push(env, random.Random(2), 1)).encode()
    raw, headers = {
        "bomb": (BOMB, {"Content-Encoding": "gzip"}),
        "truncated": (_truncated_gzip(env), {"Content-Encoding": "gzip"}),
        "garbage_gzip": (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}),
        "gzip_of_garbage": (gzip.compress(b"\xff\xfe{not json"), {"Content-Encoding": "gzip"}),
        "double_gzip": (gzip.compress(gzip.compress(valid)), {"Content-Encoding": "gzip"}),
        "deflate": (zlib.compress(valid), {"Content-Encoding": "deflate"}),
        "brotli": (valid, {"Content-Encoding": "br"}),
        "empty": (b"", {}),
        "not_json": (b"device_id=x&records=1",
                     {"Content-Type": "application/x-www-form-urlencoded"}),
        "nan": (valid.replace(b'"records"', b'"nan": NaN, "records"'), {}),
        "deep": (b"[" * 100_000 + b"]" * 100_000, {}),
        "huge_int": (b'{"device_id": ' + b"9" * 5000 + b"}", {}),
    }[name]
    before = counts(env["db"])
    tracemalloc.start()
    try:
        resp = post_push(env, raw, headers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    checked(resp)
    assert 400 <= resp.status_code < 500
    if name == "bomb":  # refused while inflating, at the limit: cheap
        limit = env["app"].config["MAX_BATCH_BYTES"]
        assert resp.status_code == 413 and resp.get_json()["details"]["max_batch_bytes"] == limit
        # About two limits at most (the last piece is 16 MiB, zlib's buffer as
        # much); inflating it all would take 64 MiB and more (148 MB measured).
        assert peak < 3 * limit < len(zlib.decompress(raw, 31)), peak
    assert counts(env["db"]) == before


def test_oversized_plain_body_is_413(env):
    limit = env["app"].config["MAX_BATCH_BYTES"]
    before = counts(env["db"])
    resp = post_push(env, b" " * (limit + 1) + b"{}")
    checked(resp)
    assert resp.status_code == 413
    assert counts(env["db"]) == before


@pytest.mark.parametrize("value", HUGE + [float("nan"), float("inf")])
def test_huge_and_non_finite_numbers_in_data_are_rejected_not_stored(env, value):
    """3.8e27 must not reach SQLite as an integer; 1e400 (JSON parses it to
    infinity) must not come back as the non-JSON `Infinity`."""
    push = valid_push(env, random.Random(str(value)), 1)
    rec = push["records"][0]
    rec["data"]["attendees_total" if "attendees_total" in rec["data"] else
                next(iter(rec["data"]))] = value
    raw = json.dumps(push, allow_nan=True).encode()   # NaN/Infinity literals: must be 400
    if value in (1e400, -1e400):
        raw = raw.replace(b"Infinity", b"1e400")     # valid JSON that overflows a float
    before = counts(env["db"])
    resp = post_push(env, raw)
    body = checked(resp)
    if resp.status_code == 200:
        # attendees_total is an integer from 1 to 300: every one of these is out.
        assert body["results"][0]["status"] == "rejected", body
        assert rec["id"] not in stored_ids(env["db"])
        assert counts(env["db"])["records"] == before["records"]
    else:
        assert counts(env["db"]) == before


# -- pull ------------------------------------------------------------------------------

def _sign(env, payload):
    conn = sqlite3.connect(env["db"])
    secret = conn.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()[0]
    conn.close()
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]


def forged_cursor(env, obj):
    """A cursor signed with the server's own key (as an insider could): the
    checks after the signature must hold too."""
    payload = base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{payload}.{_sign(env, payload)}"


def pull_cursors(env):
    first = checked(env["client"].get(crashkit.PULL + "?limit=1", headers=auth(env)))["cursor"]
    scope = json.loads(base64.urlsafe_b64decode(first.split(".")[0] + "=="))["h"]
    return [first, first[:-1] + ("0" if first[-1] != "0" else "1"), first + "x",
            first.replace(".", ""), "." + first, first * 5,
            forged_cursor(env, {"s": 10 ** 30, "h": scope}),
            forged_cursor(env, {"s": 3.8e27, "h": scope}),
            forged_cursor(env, {"s": -1, "h": scope}),
            forged_cursor(env, {"s": 2 ** 63, "h": scope}),
            forged_cursor(env, {"s": True, "h": scope}),
            forged_cursor(env, {"s": "1", "h": scope}),
            forged_cursor(env, {"s": 1}),
            forged_cursor(env, {"s": 1, "h": "0" * 16}),
            forged_cursor(env, [1, 2]),
            forged_cursor(env, None)]


LIMITS = ["-1", "0", "99999", "x", "3.8e27", "1e3", "", " 5", "5 ", "０", "²", "5001",
          "1.0", "+5", "0x10", "9" * 400, "NaN"]


@FUZZ
@given(limit=st.one_of(st.none(), st.sampled_from(LIMITS), st.integers().map(str),
                       st.text(max_size=12)),
       cursor=st.one_of(st.none(), st.integers(0, 15), st.text(max_size=300)),
       extra=st.dictionaries(st.sampled_from(["since", "form", "area", "cursor", "limit", "x"]),
                             st.text(max_size=10), max_size=2))
def test_pull_with_any_cursor_and_limit_never_fails(env, limit, cursor, extra):
    if isinstance(cursor, int):
        cursor = pull_cursors(env)[cursor]
    params = dict(extra)
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    before = counts(env["db"])
    resp = env["client"].get(crashkit.PULL, query_string=params, headers=auth(env))
    body = checked(resp)
    if resp.status_code == 200:
        assert set(body) >= {"records", "cursor", "more"}
        assert isinstance(body["records"], list) and isinstance(body["more"], bool)
        limit_used = int(params["limit"]) if "limit" in params else 500
        assert len(body["records"]) <= limit_used
    else:
        assert resp.status_code in (400, 409), body
        after = counts(env["db"])
        assert after == before


@pytest.mark.parametrize("limit", ["-1", "0", "99999", "x", "3.8e27", "5001", ""])
def test_out_of_range_limits_are_a_clear_400(env, limit):
    resp = env["client"].get(crashkit.PULL, query_string={"limit": limit}, headers=auth(env))
    assert resp.status_code == 400 and checked(resp)["error"]


@pytest.mark.parametrize("limit", ["²", "5²", "①", "٣", "０"])
def test_non_ascii_digit_limit_is_a_400(env, limit):
    """Found by the fuzz above: `str.isdigit()` accepts '²' and int() then
    raised, a 500; now every limit but ASCII digits is a clear 400."""
    resp = env["client"].get(crashkit.PULL, query_string={"limit": limit}, headers=auth(env))
    assert resp.status_code == 400 and checked(resp)["error"] == "invalid_limit"


def test_pull_pages_hold_the_database_exactly(env):
    """With what the fuzzing stored (if it ran first, in a shuffled order)
    and 30 records of its own, paging through with small limits returns
    every record once, each at its stored state."""
    push = valid_push(env, random.Random(5), 30)
    resp = post_push(env, json.dumps(push).encode())
    assert resp.status_code == 200, resp.get_data()
    records, cursor = [], None
    while True:
        q = {"limit": "7"} | ({"cursor": cursor} if cursor else {})
        page = checked(env["client"].get(crashkit.PULL, query_string=q, headers=auth(env)))
        records += page["records"]
        cursor = page["cursor"]
        if not page["more"]:
            break
    db = crashkit.read_db(env["db"])
    assert crashkit.pull_matches_db(records, db) == []
    assert {r["id"] for r in push["records"]} <= {r["id"] for r in records}


# -- schemathesis on push and pull, negative data ---------------------------------------

def test_schemathesis_negative_push_and_pull_gets_no_5xx(env):
    """Complements tests/test_server_openapi.py (positive data, every
    operation): schema-violating push and pull requests from the OpenAPI
    document itself get a 4xx in our error shape and store nothing."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import given as h_given
    from schemathesis.generation import GenerationMode
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", env["app"])
    ops = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in ops if op.path in (crashkit.PUSH, crashkit.PULL)]
    assert len(ops) == 2
    for op in ops:
        @h_given(case=op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            before = counts(env["db"])
            resp = case.call(headers=auth(env))
            assert resp.status_code < 500, (case.as_curl_command(), resp.text[:500])
            if resp.status_code >= 400:
                body = json.loads(resp.text, parse_constant=_no_constant)
                assert set(body) == {"error", "message", "details"}, body
                if op.path == crashkit.PUSH:
                    assert counts(env["db"]) == before, case.as_curl_command()

        check()


# -- the real server: requests that never reach the app ----------------------------------

@pytest.fixture(scope="module")
def live_server(template_db, tmp_path_factory):
    """One real server process for the raw-socket cases below."""
    from conftest import ServerProcess, free_port
    folder = tmp_path_factory.mktemp("live")
    server = ServerProcess(db=copy_db(template_db, folder / "fieldsync.db"), port=free_port(),
                           log=folder / "server.log")
    server.start()
    yield server
    server.stop()


def _raw_status(port, request):
    with crashkit.socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        head = sock.recv(4096).split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head


@pytest.mark.parametrize("request_bytes", [
    (b"POST /api/v1/sync/push HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n"
     b"Authorization: Bearer x\r\n\r\n{}"),
    (b"POST /api/v1/sync/push HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}"),
    (b"GET /api/v1/sync/pull?cursor=" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n"
     b"Authorization: Bearer x\r\n\r\n"),
    # Up to 16 KiB of request line and headers the app answers (JSON) ...
    (b"GET /api/v1/sync/pull?cursor=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    # ... past it waitress itself does (431), in the same shape (server/wsgi.py).
    (b"GET /api/v1/sync/pull?cursor=" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    (b"GARBAGE\r\n\r\n"),
    (b"GET /api/v1/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n"),
])
def test_real_server_answers_protocol_garbage_with_a_4xx(live_server, request_bytes):
    """Every refusal is a 4xx in the JSON error shape, whether the app or
    waitress itself (before Flask sees it) gives it. The server keeps
    serving and stores nothing."""
    before = counts(live_server.db)
    status, head = _raw_status(live_server.port, request_bytes)
    assert 400 <= status < 500, head
    assert "application/json" in head.lower(), head
    crashkit.await_ready(live_server.url, timeout=60)
    assert counts(live_server.db) == before


# -- schemathesis over the whole document, against the real server ------------------------

#: Examples per operation and mode; `make fuzz` runs FUZZ_API_EXAMPLES=500.
API_EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "15"))


def test_schemathesis_whole_api_against_the_real_server(live_server):
    """Every operation of /api/openapi.json, schema-valid and schema-violating
    requests, sent over HTTP to the real server process (waitress in its
    workers): never a 5xx, every error in the {"error","message","details"}
    shape, and schema-valid requests answered within the document (status
    codes, content types, bodies and headers as declared)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import given as h_given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance
    schema = schemathesis.openapi.from_url(live_server.url + "/api/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 11, [op.path for op in ops]
    tokens = {"sup": live_server.login("sup", "dev-fuzz-whole"),
              "logout": live_server.login("sup", "dev-fuzz-logout")}
    failures = []
    for op in ops:
        token = tokens["logout" if op.path.endswith("/logout") else "sup"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @h_given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=API_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                headers = {"Authorization": "Bearer " + token, **(case.headers or {})}
                if mode is GenerationMode.POSITIVE:
                    # A schema-valid but unknown cursor, id or device is rightly a 4xx.
                    resp = case.call_and_validate(base_url=live_server.url, headers=headers,
                                                  excluded_checks=[positive_data_acceptance],
                                                  timeout=60)
                else:
                    resp = case.call(base_url=live_server.url, headers=headers, timeout=60)
                assert resp.status_code < 500, (case.as_curl_command(), resp.text[:500])
                if resp.status_code >= 400 and op.path.startswith("/api/"):
                    body = json.loads(resp.text, parse_constant=_no_constant)
                    assert set(body) == {"error", "message", "details"}, \
                        (case.as_curl_command(), body)

            try:
                check()
            except Unsatisfiable:
                pass                      # nothing to violate: GET /api/v1/ takes nothing
            except Exception as exc:          # every operation runs; all reported at once
                failures.append(f"{op.method.upper()} {op.path} {mode.value}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    crashkit.await_ready(live_server.url, timeout=60)


def test_the_document_declares_what_the_review_found_undeclared(env):
    """Empty `area=` (the same as none), paging `after` up to 2^62 (and no
    further), a 200-character pull cursor, the export's `after` token, the
    pull limit's maximum: each declared as the server treats it."""
    import re
    spec = json.loads(env["client"].get("/api/openapi.json").get_data())

    def param(path, name):
        [p] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
        return p["schema"]

    for path in ("/api/v1/exports/{name}", "/api/v1/conflicts", "/api/v1/invalid_merges"):
        assert re.search(param(path, "area")["pattern"], "")
        assert re.search(param(path, "area")["pattern"], "QN.LM.03")
        assert not re.search(param(path, "area")["pattern"], "qn")
    for path in ("/api/v1/conflicts", "/api/v1/invalid_merges"):
        assert param(path, "after")["maximum"] == 2 ** 62
    assert param("/api/v1/exports/{name}", "after")["maximum"] == 2 ** 63 - 1
    assert param("/api/v1/sync/pull", "cursor")["maxLength"] == 200
    limits = json.loads(env["client"].get("/api/v1/").get_data())["limits"]
    assert param("/api/v1/sync/pull", "limit")["maximum"] == limits["pull_limit_max"]

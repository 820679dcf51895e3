"""Pull: commit order, scope, cursors, limits, the query plan (in-process app)."""
import gzip
import json
import sqlite3
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server import compress
from server.compress import zstd

from conftest import batch, change, hlc_at, household, login, now_ms


def auth(client, name, device):
    return {"Authorization": "Bearer " + login(client, name, device)}


def push(client, headers, device, *records):
    resp = client.post("/api/v1/sync/push", json=batch(device, list(records)), headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["results"]


def pull_all(client, headers, limit=None, cursor=None):
    """Every page; returns (records, last cursor)."""
    out = []
    while True:
        args = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
        resp = client.get("/api/v1/sync/pull", query_string=args, headers=headers)
        assert resp.status_code == 200, resp.get_json()
        page = resp.get_json()
        out += page["records"]
        cursor = page["cursor"]
        if not page["more"]:
            return out, cursor


def test_pull_returns_each_record_once_at_its_latest_state_in_commit_order(client):
    h = auth(client, "hw", "dev-a")
    t0 = now_ms() - 60_000
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for i, rid in enumerate(ids):
        push(client, h, "dev-a", change(household(), hlc=hlc_at(t0 + i, "dev-a"),
                                        record_id=rid))
    push(client, h, "dev-a", change({"phone": "0911111111"}, hlc=hlc_at(t0 + 100, "dev-a"),
                                    record_id=ids[1]))
    records, _ = pull_all(client, h, limit=2)
    assert [r["id"] for r in records] == ids[:1] + ids[2:] + ids[1:2]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    latest = records[-1]
    assert latest["data"]["phone"] == "0911111111"
    assert set(latest["clocks"]) == set(latest["data"])


def test_a_cursor_resumes_after_the_last_record_seen(client):
    h = auth(client, "hw", "dev-a")
    push(client, h, "dev-a", change(household(), hlc=hlc_at(now_ms(), "dev-a")))
    first, cursor = pull_all(client, h)
    assert len(first) == 1
    c = change(household(), hlc=hlc_at(now_ms(), "dev-a"))
    push(client, h, "dev-a", c)
    more, _ = pull_all(client, h, cursor=cursor)
    assert [r["id"] for r in more] == [c["id"]]


def test_last_pull_is_recorded_only_when_a_pull_completes(client):
    """A device stuck mid-pull shows as behind; pages before the last take no
    write lock."""
    h = auth(client, "hw", "dev-a")
    push(client, h, "dev-a", *(change(household(), hlc=hlc_at(now_ms(), "dev-a", i))
                                for i in range(3)))

    def last_pull():
        conn = sqlite3.connect(client.application.config["DB"])
        row = conn.execute("SELECT last_pull FROM devices WHERE device_id = 'dev-a'").fetchone()
        conn.close()
        return row[0]

    page = client.get("/api/v1/sync/pull", query_string={"limit": 1}, headers=h).get_json()
    assert page["more"] and last_pull() is None
    pull_all(client, h, cursor=page["cursor"])
    assert last_pull() is not None


def test_pull_is_limited_to_the_users_areas_and_readable_forms(client):
    hw, hw2, sup = (auth(client, n, "dev-" + n) for n in ("hw", "hw2", "sup"))
    t = now_ms()
    mine = change(household(), hlc=hlc_at(t, "dev-hw"))
    theirs = change(household(), hlc=hlc_at(t, "dev-hw2"), area="QN.TB.01")
    report = change({"report_date": "2025-03-01"}, hlc=hlc_at(t, "dev-hw"), form="cp_report")
    push(client, hw, "dev-hw", mine)
    push(client, hw2, "dev-hw2", theirs)
    # Write the cp_report straight through storage: a complete one is long,
    # and what matters here is who may read it.
    from server.db import connect, write_transaction
    from server.storage import _dumps
    db = connect(client.application.config["DB"])
    with write_transaction(db):
        seq = int(db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]) + 1
        state = {"id": report["id"], "form": "cp_report", "form_version": 1,
                 "area": "QN.LM.03", "deleted": None,
                 "fields": {"report_date": {"value": "2025-03-01", "hlc": report["hlc"],
                                            "device": "dev-hw", "user": "hw", "base": None,
                                            "origin": None}}}
        db.execute("INSERT INTO records (id, form, form_version, area, state, data, hlc, seq, "
                   "created_at, updated_at) VALUES (?, 'cp_report', 1, 'QN.LM.03', ?, '{}', "
                   "?, ?, 'x', 'x')", [report["id"], _dumps(state), report["hlc"], seq])
        db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", [str(seq)])
    db.conn.close()
    seen = {name: {r["id"] for r in pull_all(client, h)[0]}
            for name, h in (("hw", hw), ("hw2", hw2), ("sup", sup))}
    assert seen["hw"] == {mine["id"]}                      # no cp_report, no QN.TB
    assert seen["hw2"] == {theirs["id"]}
    assert seen["sup"] == {mine["id"], report["id"]}       # supervisors read cp_report
    audit = sqlite3.connect(client.application.config["DB"]).execute(
        "SELECT username, details FROM audit WHERE action = 'restricted_read'").fetchall()
    assert [(u, json.loads(d)["records"]) for u, d in audit] == [("sup", [report["id"]])]


@pytest.mark.parametrize("args,status,code", [
    ({"limit": "0"}, 400, "invalid_limit"),
    ({"limit": "5001"}, 400, "invalid_limit"),
    ({"limit": "-3"}, 400, "invalid_limit"),
    ({"limit": "ten"}, 400, "invalid_limit"),
    ({"limit": "5\u00b2"}, 400, "invalid_limit"),
    ({"limit": "9" * 40}, 400, "invalid_limit"),
    ({"cursor": "garbage"}, 400, "invalid_cursor"),
    ({"cursor": "x" * 5000}, 400, "invalid_cursor"),
    ({"cursor": "eyJzIjotMSwiaCI6IngifQ.00"}, 400, "invalid_cursor"),
])
def test_bad_pull_parameters_get_a_clear_400(client, args, status, code):
    resp = client.get("/api/v1/sync/pull", query_string=args,
                      headers=auth(client, "hw", "dev-a"))
    assert resp.status_code == status
    assert resp.get_json()["error"] == code


def test_a_forged_or_edited_cursor_is_refused(client):
    import base64
    h = auth(client, "hw", "dev-a")
    _, cursor = pull_all(client, h)
    payload, mac = cursor.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"s": 10**30, "h": "x"}).encode()).decode()
    for bad in (forged.rstrip("=") + "." + mac, payload + "." + "0" * len(mac)):
        resp = client.get("/api/v1/sync/pull", query_string={"cursor": bad}, headers=h)
        assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_cursor"


def test_another_users_cursor_or_a_scope_change_needs_a_resync(client):
    h = auth(client, "hw", "dev-a")
    _, cursor = pull_all(client, h)
    other = auth(client, "hw2", "dev-b")
    resp = client.get("/api/v1/sync/pull", query_string={"cursor": cursor}, headers=other)
    assert resp.status_code == 409 and resp.get_json()["error"] == "resync_required"
    conn = sqlite3.connect(client.application.config["DB"])
    conn.execute("UPDATE users SET areas = ? WHERE username = 'hw'",
                 [json.dumps(["QN.LM.03", "QN.LM.04"])])
    conn.commit()
    conn.close()
    resp = client.get("/api/v1/sync/pull", query_string={"cursor": cursor}, headers=h)
    assert resp.status_code == 409 and resp.get_json()["error"] == "resync_required"
    assert client.get("/api/v1/sync/pull", headers=h).status_code == 200


def test_pull_query_walks_the_sequence_index(app):
    from server.db import connect
    from server.storage import pull_query
    db = connect(app.config["DB"])
    for user, hidden in (({"role": "health_worker", "areas": ["QN.LM.03", "QN.TB"]},
                          ["cp_report"]), ({"role": "admin", "areas": []}, [])):
        sql, params = pull_query(user, hidden)
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql,
                                                      [0] + params + [500]))
        assert "USING INDEX idx_records_seq (seq>?)" in plan or \
            "USING INDEX sqlite_autoindex_records_2 (seq>?)" in plan, plan
        assert "SCAN records" not in plan.replace("USING INDEX", ""), plan
        assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order


def test_records_committed_while_a_device_pages_are_never_skipped(app):
    """Writers and a pager run together; the pager ends with every record."""
    from concurrent.futures import ThreadPoolExecutor
    client = app.test_client()
    writers = [(auth(client, "hw", f"dev-w{i}"), f"dev-w{i}") for i in range(3)]
    reader = auth(client, "sup", "dev-r")
    pushed = set()

    def write(h, device):
        c = app.test_client()
        for _ in range(15):
            ch = change(household(), hlc=hlc_at(now_ms(), device))
            push(c, h, device, ch)
            pushed.add(ch["id"])

    seen, cursor = set(), None
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(write, h, d) for h, d in writers]
        while not all(f.done() for f in futures):
            records, cursor = pull_all(client, reader, limit=3, cursor=cursor)
            seen |= {r["id"] for r in records}
        for f in futures:
            f.result()
    records, cursor = pull_all(client, reader, limit=3, cursor=cursor)
    seen |= {r["id"] for r in records}
    assert len(pushed) == 45 and seen == pushed


@pytest.mark.parametrize("accept, coding", [
    ("gzip", "gzip"), ("x-gzip", "gzip"), ("zstd", "zstd"), ("gzip, deflate, zstd", "zstd"),
    ("zstd;q=0, gzip", "gzip"), ("gzip;q=1.0, zstd;q=0.5", "gzip"), ("*", "zstd"),
    ("*;q=0, gzip;q=0.2", "gzip"), ("identity", None), ("deflate, br", None), ("", None),
    ("gzip;q=0", None), ("zstd;q=oops", "zstd")])
def test_answers_are_compressed_as_the_client_asks(client, accept, coding):
    h = auth(client, "hw", "dev-a")
    for _ in range(5):
        push(client, h, "dev-a", change(household(), hlc=hlc_at(now_ms(), "dev-a")))
    plain = client.get("/api/v1/sync/pull", headers={**h, "Accept-Encoding": "identity"})
    packed = client.get("/api/v1/sync/pull", headers={**h, "Accept-Encoding": accept})
    assert "Content-Encoding" not in plain.headers
    assert packed.headers.get("Content-Encoding") == coding
    assert "Accept-Encoding" in packed.headers["Vary"]
    body = {"gzip": gzip.decompress, "zstd": zstd.decompress, None: bytes}[coding](packed.data)
    if coding:
        assert len(packed.data) < len(plain.data)
    assert json.loads(body)["records"] == plain.get_json()["records"]


CODING = st.sampled_from(["gzip", "x-gzip", "zstd", "deflate", "br", "identity", "*", "GZIP"])


@given(st.lists(st.tuples(CODING, st.one_of(st.none(), st.sampled_from(
    ["0", "0.0", "0.001", "0.5", "1", "1.000"]))), max_size=5))
def test_the_chosen_coding_is_one_the_client_accepts_at_its_highest_q(parts):
    header = ", ".join(c + (f";q={q}" if q is not None else "") for c, q in parts)
    q = {}  # the last mention of a coding counts, as in compress._accepted
    for c, value in parts:
        q["gzip" if c.lower() in ("gzip", "x-gzip") else c.lower()] = (
            1.0 if value is None else float(value))
    ours = {c: q.get(c, q.get("*", 0.0)) for c in ("zstd", "gzip")}
    chosen = compress.choose(header)
    if max(ours.values()) == 0:
        assert chosen is None
    else:
        assert ours[chosen] == max(ours.values())
        assert chosen == "zstd" or ours["zstd"] < ours["gzip"]  # zstd on a tie


@given(st.text())
def test_any_accept_encoding_header_gets_an_answer_not_an_error(header):
    """A header is client input: whatever it holds (q=nan, q=inf, stray
    semicolons, any text) it picks one of our codings or none, never raises."""
    assert compress.choose(header) in (None, "zstd", "gzip")

"""Index, forms, devices, and the role-and-area matrix over every endpoint (real server)."""
import sqlite3

import requests

from conftest import batch, change, cp_report, hlc_at, household, now_ms


def get(server, path, token=None, **kw):
    headers = {"Authorization": "Bearer " + token} if token else {}
    return requests.get(server.url + path, headers=headers, timeout=30, **kw)


def push(server, token, device, *records):
    resp = requests.post(server.url + "/api/v1/sync/push", json=batch(device, list(records)),
                         headers={"Authorization": "Bearer " + token}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def test_index_needs_no_auth_and_publishes_limits_and_the_server_clock(server_process):
    body = get(server_process, "/api/v1/").json()
    assert body["limits"] == {"max_records_per_batch": 1000,
                              "max_batch_bytes": 16 * 1024 * 1024,
                              "pull_limit_default": 500, "pull_limit_max": 5000}
    assert body["hlc"].endswith("-server") and body["server_time"].endswith("Z")


def test_errors_have_one_json_shape_even_for_unknown_paths(server_process):
    for resp in (get(server_process, "/api/v1/nowhere"),
                 requests.put(server_process.url + "/api/v1/sync/push", timeout=10)):
        assert resp.status_code in (404, 405)
        assert set(resp.json()) == {"error", "message", "details"}


def test_forms_are_listed_whole_for_every_role(server_process):
    token = server_process.login("hw", "dev-a")
    forms = get(server_process, "/api/v1/forms", token).json()["forms"]
    ids = {f["id"] for f in forms}
    # Health workers may write cp_report (restricted_to limits reads only).
    assert len(ids) == 11 and "cp_report" in ids and "club" in ids
    assert all(f["fields"] for f in forms)


def test_unchanged_forms_cost_a_304_and_a_new_version_changes_the_tag(server_process,
                                                                       tmp_path):
    import json

    from conftest import run_cli
    from schemas.forms import bundled_definitions
    token = server_process.login("hw", "dev-a")
    auth = {"Authorization": "Bearer " + token}
    url = server_process.url + "/api/v1/forms"
    first = requests.get(url, headers=auth, timeout=30)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('W/"')
    assert {"private", "no-cache"} <= {d.strip() for d in first.headers["Cache-Control"].split(",")}
    same = requests.get(url, headers={**auth, "If-None-Match": tag}, timeout=30)
    assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == tag
    other = requests.get(url, headers={**auth, "If-None-Match": 'W/"0"'}, timeout=30)
    assert other.status_code == 200 and other.json() == first.json()
    # The tag says nothing without a token.
    assert requests.get(url, headers={"If-None-Match": tag}, timeout=30).status_code == 401
    household = max((d for d in bundled_definitions() if d["id"] == "household"),
                    key=lambda d: d["version"])
    newer = household["version"] + 1   # a version nobody has published yet
    path = tmp_path / "household-next.json"
    path.write_text(json.dumps(dict(household, version=newer, title="Household (next)")))
    run_cli(server_process.db, "forms", "publish", str(path))
    changed = requests.get(url, headers={**auth, "If-None-Match": tag}, timeout=30)
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert ("household", newer) in {(f["id"], f["version"]) for f in changed.json()["forms"]}


def test_devices_shows_syncs_rejections_and_skew_within_the_supervisors_areas(server_process):
    hw = server_process.login("hw", "dev-hw")
    hw2 = server_process.login("hw2", "dev-hw2")
    push(server_process, hw, "dev-hw", change(household(), hlc=hlc_at(now_ms(), "dev-hw")),
         change({"nope": 1}, hlc=hlc_at(now_ms(), "dev-hw")))
    get(server_process, "/api/v1/sync/pull", hw)
    sup = server_process.login("sup", "dev-sup")
    devices = {d["device_id"]: d for d in get(server_process, "/api/v1/devices",
                                              sup).json()["devices"]}
    assert "dev-hw" in devices and "dev-hw2" not in devices
    mine = devices["dev-hw"]
    assert mine["user"] == "hw" and mine["records_rejected"] == 1
    assert mine["last_push"] and mine["last_pull"] and mine["app_version"] == "test"
    assert abs(mine["clock_skew_seconds"]) < 60
    admin = server_process.login("admin", "dev-admin")
    every = {d["device_id"] for d in get(server_process, "/api/v1/devices",
                                         admin).json()["devices"]}
    assert {"dev-hw", "dev-hw2", "dev-sup"} <= every
    resp = get(server_process, "/api/v1/devices", hw2)
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"


def _get_paths(server):
    """Every GET endpoint of the API (exports and review included when installed);
    the console's pages have their own scope tests (test_console*.py)."""
    from server import create_app
    app = create_app({"DB": str(server.db)})
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule == "/api/openapi.json" \
                or not rule.rule.startswith("/api/"):
            continue
        if not rule.arguments:
            paths.append(rule.rule)
        elif rule.arguments == {"name"}:  # /api/v1/exports/<name>
            paths += [rule.rule.replace("<name>", f"{form}.{fmt}")
                      for form in ("household", "cp_report", "all") for fmt in ("csv", "jsonl")]
    return paths


def test_role_and_area_matrix_leaks_nothing_and_stores_no_foreign_write(server_process):
    s = server_process
    tokens = {name: s.login(name, f"dev-{name}") for name in ("hw", "hw2", "sup", "admin")}
    marker_lm, marker_tb, marker_cp = "MARKER LM ONE", "MARKER TB TWO", "2009-05-17"
    lm = change(household(head_name=marker_lm), hlc=hlc_at(now_ms(), "dev-hw"))
    tb = change(household(head_name=marker_tb), hlc=hlc_at(now_ms(), "dev-hw2"),
                area="QN.TB.01")
    cp = change(cp_report(party_a_dob=marker_cp), hlc=hlc_at(now_ms(), "dev-hw"),
                form="cp_report")
    assert [r["status"] for r in push(s, tokens["hw"], "dev-hw", lm, cp)] == ["applied"] * 2
    assert push(s, tokens["hw2"], "dev-hw2", tb)[0]["status"] == "applied"
    # A conflict in each area, so the conflict list has something to leak.
    for rec, dev, tok in ((lm, "dev-sup", "sup"), (tb, "dev-admin", "admin")):
        push(s, tokens[tok], dev, change({"head_name": rec["data"]["head_name"] + " X"},
                                         hlc=hlc_at(now_ms(), dev), record_id=rec["id"],
                                         area=rec["area"]))
    revoked = s.login("hw", "dev-revoked")
    requests.post(s.url + "/api/v1/auth/logout", timeout=10,
                  headers={"Authorization": "Bearer " + revoked})

    # Who may see what: (ids, markers) that must never appear in their answers.
    must_not_see = {
        "hw": [tb["id"], marker_tb, cp["id"], marker_cp],
        "hw2": [lm["id"], marker_lm, cp["id"], marker_cp],
        "sup": [tb["id"], marker_tb],
        "admin": [],
    }
    paths = _get_paths(s)
    assert "/api/v1/sync/pull" in paths and "/api/v1/devices" in paths
    for name, secrets in must_not_see.items():
        for path in paths:
            resp = get(s, path, tokens[name])
            assert resp.status_code < 500, (name, path, resp.text)
            for secret in secrets:
                assert secret not in resp.text, (name, path, secret)
    for path in paths:
        if path == "/api/v1/":
            continue
        for token in (None, revoked):
            resp = get(s, path, token)
            assert resp.status_code == 401, (path, token, resp.status_code)
            assert lm["id"] not in resp.text and tb["id"] not in resp.text
    # Supervisors and admins do read the restricted form; health workers don't.
    pulled = {n: get(s, "/api/v1/sync/pull", tokens[n]).text for n in tokens}
    assert cp["id"] in pulled["sup"] and cp["id"] in pulled["admin"]
    assert lm["id"] in pulled["hw"] and tb["id"] in pulled["hw2"]
    # Writes outside one's areas: forbidden and not stored, whatever the role.
    for name, target in (("hw", tb), ("hw2", lm), ("sup", tb)):
        edit = change({"phone": "0999999999"}, hlc=hlc_at(now_ms(), f"dev-{name}"),
                      record_id=target["id"], area=target["area"])
        fresh = change(household(), hlc=hlc_at(now_ms(), f"dev-{name}"), area=target["area"])
        results = push(s, tokens[name], f"dev-{name}", edit, fresh)
        assert [r["status"] for r in results] == ["forbidden", "forbidden"], (name, results)
        assert not any("record" in r for r in results)
    conn = sqlite3.connect(s.db)
    assert conn.execute("SELECT count(*) FROM records WHERE data LIKE '%0999999999%'"
                        ).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 3

"""Every query parameter parser at the edges, against the real server process.

The kind of bug the review found in exports (`since=0001-01-01`: an
OverflowError, a 500) looked for in every other parser: pull `cursor` and
`limit`, conflicts and invalid_merges paging (`after` over 2^62, `limit`,
empty `area=`), resolve's path id, devices, and the console's query strings
and path ids. Each value is a clear 4xx in the `{"error","message","details"}`
shape (an HTML page on the console), or a 200 where the value means
something (an empty parameter is the same as none), and never a 5xx.
"""
import re

import pytest
import requests

from tests.conftest import USERS, ServerProcess, copy_db, free_port

BIG = [str(2 ** 62), str(2 ** 62 + 1), str(2 ** 63 - 1), str(2 ** 63), str(2 ** 64),
       "9" * 400]
ODD = ["", " ", "-1", "1e3", "1.5", "\u0661", "\u00b2", "\x00", "0x10", "+1"]

# (path, parameter, value, the statuses allowed): the API.
API_CASES = (
    [("/api/v1/sync/pull", "cursor", v, {200, 400}) for v in
     ["", "a" * 199, "a" * 200, "a" * 201, "\x00", "0", "-1", "9" * 400, str(2 ** 63),
      "eyJ9", "%ff"]]
    + [("/api/v1/sync/pull", "limit", v, {400}) for v in BIG + ODD[1:]]
    + [("/api/v1/sync/pull", "limit", "", {400, 200}), ("/api/v1/sync/pull", "clocks", "", {400})]
    + [(p, "after", v, {200} if v in (str(2 ** 62),) else {400})
       for p in ("/api/v1/conflicts", "/api/v1/invalid_merges") for v in BIG]
    + [(p, "after", v, {200} if v == "" else {400})
       for p in ("/api/v1/conflicts", "/api/v1/invalid_merges") for v in ODD]
    + [(p, "limit", v, {200} if v == "" else {400})
       for p in ("/api/v1/conflicts", "/api/v1/invalid_merges") for v in BIG + ODD]
    + [(p, "area", v, ok)
       for p in ("/api/v1/conflicts", "/api/v1/invalid_merges")
       for v, ok in (("", {200}), (" ", {400}), ("qn", {400}), ("QN." * 40, {400, 403}),
                     ("\x00", {400}), ("QN.TB", {403}))]
    + [(p, "form", v, {200}) for p in ("/api/v1/conflicts", "/api/v1/invalid_merges")
       for v in ("", "x" * 5000, "\x00")]
    + [("/api/v1/conflicts", "status", v, {200} if v == "" else {400})
       for v in ("", "OPEN", "\x00")]
    + [("/api/v1/devices", "x", "1", {200})]
)


@pytest.fixture(scope="module")
def live(template_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    server = ServerProcess(db=copy_db(template_db, folder / "fieldsync.db"), port=free_port(),
                           log=folder / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sup(live):
    return live.login("sup", "dev-edges-sup")


def _shape(resp):
    body = resp.json()
    assert set(body) == {"error", "message", "details"}, body
    assert body["message"] and "Traceback" not in body["message"]


@pytest.mark.parametrize("path,param,value,ok", API_CASES,
                         ids=[f"{p} {n}={v[:12]!r}" for p, n, v, _ in API_CASES])
def test_api_parameter_edges(live, sup, path, param, value, ok):
    resp = requests.get(live.url + path, params={param: value}, timeout=30,
                        headers={"Authorization": f"Bearer {sup}"})
    assert resp.status_code in ok, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        _shape(resp)


@pytest.mark.parametrize("conflict_id", ["0", str(2 ** 62), str(2 ** 63 - 1), str(2 ** 63),
                                         str(2 ** 64), "9" * 400, "-1", "x", "%00"])
def test_resolve_ids_at_the_edges_are_a_clear_4xx(live, sup, conflict_id):
    resp = requests.post(f"{live.url}/api/v1/conflicts/{conflict_id}/resolve",
                         json={"choice": "keep"}, timeout=30,
                         headers={"Authorization": f"Bearer {sup}"})
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    _shape(resp)


# -- the console -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def console(live):
    """A signed-in console session (a supervisor) on the real server."""
    session = requests.Session()
    page = session.get(live.url + "/sign-in", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    resp = session.post(live.url + "/sign-in", timeout=30, allow_redirects=False, data={
        "username": "sup", "password": USERS["sup"]["password"], "csrf_token": token})
    assert resp.status_code == 302, resp.text[:300]
    return session


CONSOLE_CASES = (
    [("/conflicts", {"after": v}) for v in BIG + ODD]
    + [("/conflicts", {"form": v}) for v in ("", "x" * 5000, "\x00")]
    + [("/records", {"area": v}) for v in ("", " ", "qn", "QN." * 40, "\x00", "%")]
    + [("/records", {"q": v}) for v in ("", "%", "_", "\x00", "x" * 5000, "'\"")]
    + [("/records", {"form": v}) for v in ("", "x" * 5000)]
    + [(f"/records/{v}", {}) for v in ("x" * 65, "x" * 64, "%00", "..", "a%2Fb")]
    + [("/downloads/household.csv", {"since": "0001-01-01"}),
       ("/downloads/household.csv", {"until": "9999-12-31T23:59:59-12:00"}),
       ("/downloads/household.csv", {"after": str(2 ** 63)}),
       ("/downloads/household.csv", {"after": "-1"}),
       ("/downloads/all.zip", {"since": "10000-01-01"}),
       ("/sign-in", {"next": "//evil.example"}), ("/sign-in", {"expired": "\x00"})]
)


@pytest.mark.parametrize("path,params", CONSOLE_CASES,
                         ids=[f"{p[:30]} {sorted(q.items())!r:.40}" for p, q in CONSOLE_CASES])
def test_console_query_strings_never_fail(live, console, path, params):
    resp = console.get(live.url + path, params=params, timeout=30, allow_redirects=False)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("conflict_id", [str(2 ** 63), str(2 ** 64), "9" * 400])
@pytest.mark.parametrize("action", ["keep", "losing", "value"])
def test_console_resolve_of_an_impossible_id_is_a_4xx(live, console, conflict_id, action):
    page = console.get(live.url + "/", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    resp = console.post(f"{live.url}/conflicts/{conflict_id}/resolve", timeout=30,
                        allow_redirects=False,
                        data={"action": action, "value": "1", "csrf_token": token})
    # 404 (no such conflict), not 400: the CSRF token was taken, the id refused.
    assert resp.status_code == 404, (resp.status_code, resp.text[:300])

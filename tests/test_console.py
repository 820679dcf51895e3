"""The console's rules through Flask's test client (fast); the stories in a real
browser are in test_console_browser.py."""
import re
import sqlite3
import uuid
from datetime import timedelta

import pytest
import time_machine
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from conftest import USERS, batch, change, household, hlc_at, login, now_ms


def csrf(client, path="/sign-in"):
    page = client.get(path)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(client, name, password=None):
    return client.post("/sign-in", data={
        "username": USERS[name]["username"], "password": password or USERS[name]["password"],
        "csrf_token": csrf(client)})


def push(client, token, device, records):
    resp = client.post("/api/v1/sync/push", json=batch(device, records),
                       headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["results"]


PAGES = ["/", "/conflicts", "/records", "/downloads", "/records?q=ly"]


def test_pages_need_a_sign_in_and_carry_a_strict_csp(client):
    for path in PAGES + ["/users"]:
        resp = client.get(path)
        assert resp.status_code == 302 and "/sign-in" in resp.headers["Location"]
    assert sign_in(client, "admin").status_code == 302
    for path in PAGES + ["/users", "/users/sup"]:
        resp = client.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert len(resp.data) < 100_000
        assert not re.search(r"<script>|\son[a-z]+=", resp.text)  # no inline script/handler


def test_session_cookie_is_httponly_lax_and_secure_over_tls(client):
    plain = sign_in(client, "sup").headers["Set-Cookie"]
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    tls = client.post("/sign-in", base_url="https://localhost", data={
        "username": "sup", "password": USERS["sup"]["password"],
        "csrf_token": csrf(client)}, headers={"Referer": "https://localhost/sign-in"})
    assert tls.status_code == 302 and "Secure" in tls.headers["Set-Cookie"]


def test_health_worker_is_refused_with_a_page_and_no_session(client):
    resp = sign_in(client, "hw")
    assert resp.status_code == 403 and "giám sát viên" in resp.text
    assert client.get("/").status_code == 302


def test_console_failures_count_against_the_api_login_limit(client, app):
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_USER"]):
        assert sign_in(client, "sup", password="wrong-password").status_code == 401
    refused = sign_in(client, "sup")       # the right password, but locked out
    assert refused.status_code == 429 and "quá nhiều" in refused.text
    api = client.post("/api/v1/auth/login", json={
        "username": "sup", "password": USERS["sup"]["password"], "device_id": "dev-x",
        "app_version": "t"})
    assert api.status_code == 429


def test_sign_out_ends_the_session_even_for_a_copied_cookie(client):
    sign_in(client, "sup")
    cookie = client.get_cookie("fieldsync_session").value
    assert client.get("/").status_code == 200
    assert client.post("/sign-out", data={"csrf_token": csrf(client, "/")}).status_code == 302
    client.set_cookie("fieldsync_session", cookie)
    resp = client.get("/")
    assert resp.status_code == 302 and "expired=1" in resp.headers["Location"]


def test_an_idle_session_expires(client, app):
    with time_machine.travel(0, tick=False) as traveller:
        sign_in(client, "sup")
        assert client.get("/").status_code == 200
        traveller.shift(timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"] - 1))
        assert client.get("/").status_code == 200     # use restarts the idle time
        traveller.shift(timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"] + 1))
        assert client.get("/").status_code == 302


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(client, app):
    sign_in(client, "admin")
    resp = client.post("/users/sup", data={"action": "disable"})
    assert resp.status_code == 400 and "text/html" in resp.content_type
    with app.app_context():
        from server import auth
        from server.db import get_db
        assert auth.get_user(get_db(), "sup")["disabled"] is False


def test_supervisor_manages_no_users_and_sees_only_their_areas(client):
    admin = login(client, "admin", device_id="dev-admin")
    inside, outside = str(uuid.uuid4()), str(uuid.uuid4())
    t = now_ms()
    push(client, admin, "dev-admin", [
        change(household(head_name="Inside"), record_id=inside, hlc=hlc_at(t, "dev-admin")),
        change(household(head_name="Outside"), record_id=outside, area="QN.LMX.01",
               hlc=hlc_at(t, "dev-admin", 1))])
    sign_in(client, "sup")
    assert client.get("/users").status_code == 403
    token = csrf(client, "/")
    assert client.post("/users/hw", data={"action": "disable", "csrf_token": token}) \
        .status_code == 403
    assert client.get(f"/records/{inside}").status_code == 200
    refused = client.get(f"/records/{outside}")
    assert refused.status_code == 404 and "Outside" not in refused.text
    assert "Outside" not in client.get("/records").text
    assert client.get("/records/" + "x" * 500).status_code == 404


def _conflict(client):
    """Two devices edit one field from the same base: one conflict entry."""
    hw = login(client, "hw", device_id="dev-a")
    hw_b = login(client, "hw", device_id="dev-b")
    rid, t = str(uuid.uuid4()), now_ms()
    push(client, hw, "dev-a", [change(household(head_name="Base"), record_id=rid,
                                      hlc=hlc_at(t, "dev-a"))])
    base = hlc_at(t, "dev-a")
    push(client, hw, "dev-a", [change({"head_name": "From A"}, record_id=rid,
                                      hlc=hlc_at(t + 10, "dev-a"), bases={"head_name": base})])
    push(client, hw_b, "dev-b", [change({"head_name": "From B"}, record_id=rid,
                                        hlc=hlc_at(t + 20, "dev-b"), bases={"head_name": base})])
    return rid


def test_taking_the_losing_value_writes_it_through_the_api_path(client, app):
    rid = _conflict(client)
    sign_in(client, "sup")
    page = client.get("/conflicts")
    conflict_id = int(re.search(r'/conflicts/(\d+)/resolve', page.text).group(1))
    assert "From A" in page.text and "From B" in page.text
    resp = client.post(f"/conflicts/{conflict_id}/resolve",
                       data={"action": "losing", "csrf_token": csrf(client, "/")})
    assert resp.status_code == 302
    with app.app_context():
        from server.db import get_db
        from server.storage import get_record
        db = get_db()
        state = get_record(db, rid)["state"]
        status, by = db.execute("SELECT status, resolved_by FROM conflicts WHERE id = ?",
                                [conflict_id]).fetchone()
    assert state["fields"]["head_name"]["value"] == "From A"
    assert state["fields"]["head_name"]["device"] == "server"   # a fresh server change
    assert (status, by) == ("resolved", "sup")
    again = client.post(f"/conflicts/{conflict_id}/resolve",
                        data={"action": "keep", "csrf_token": csrf(client, "/")})
    assert again.status_code == 409                 # already resolved, as in the API


def test_a_conflict_outside_the_area_cannot_be_resolved(client, app):
    _conflict(client)
    with app.app_context():
        from server.db import get_db
        get_db().execute("UPDATE conflicts SET area = 'QN.LMX.01'")
    sign_in(client, "sup")
    assert "From A" not in client.get("/conflicts").text
    for action in ("keep", "losing", "value"):
        resp = client.post("/conflicts/1/resolve",
                           data={"action": action, "value": "x", "csrf_token": csrf(client, "/")})
        assert resp.status_code == 404


def test_admin_manages_a_user_in_the_browser_pages(client, app):
    from server import auth
    from server.db import get_db
    login(client, "hw", device_id="dev-hw-9")
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_USER"]):
        client.post("/api/v1/auth/login", json={"username": "hw", "password": "nope-nope",
                                                 "device_id": "dev-hw-9", "app_version": "t"})
    sign_in(client, "admin")
    token = csrf(client, "/")
    page = client.get("/users/hw")
    assert "dev-hw-9" in page.text and "bị khóa" in page.text

    def act(**data):
        resp = client.post("/users/hw", data={"csrf_token": token, **data})
        assert resp.status_code == 302
        return client.get(resp.headers["Location"]).text

    act(action="unlock")
    act(action="revoke", device_id="dev-hw-9")
    act(action="scope", role="supervisor", areas="QN.LM.03, QN.LM.04")
    act(action="disable")
    with app.app_context():
        db = get_db()
        user = auth.get_user(db, "hw")
        assert user["disabled"] and user["role"] == "supervisor"
        assert user["areas"] == ["QN.LM.03", "QN.LM.04"] and not auth.is_locked(db, "hw")
        live = db.execute("SELECT count(*) FROM tokens WHERE device_id = 'dev-hw-9' AND "
                          "revoked_at IS NULL").fetchone()[0]
        assert live == 0
    act(action="enable")
    assert "ít nhất 8" in act(action="password", password="short")
    act(action="password", password="a-new-password")
    client.post("/users", data={"csrf_token": token, "username": "sup2", "role": "supervisor",
                                "areas": "QN.TB", "password": "sup2-pass-123"})
    with app.app_context():
        db = get_db()
        assert not auth.get_user(db, "hw")["disabled"]
        assert auth.check_credentials(db, "hw", "a-new-password", "127.0.0.1")
        assert auth.get_user(db, "sup2")["areas"] == ["QN.TB"]


def test_language_setting_and_switch(db_path):
    from server import create_app
    app = create_app({"TESTING": True, "DB": str(db_path), "CONSOLE_LANGUAGE": "en"})
    client = app.test_client()
    page = client.get("/sign-in")
    assert '<html lang="en">' in page.text and "Sign in to the supervisor console" in page.text
    resp = client.post("/language", data={"lang": "vi", "next": "//evil.example/",
                                          "csrf_token": csrf(client)})
    assert resp.headers["Location"] == "/"           # never an open redirect
    assert "Đăng nhập bảng điều khiển giám sát" in client.get("/sign-in").text


def test_label_picks_the_page_language_with_english_fallback(app):
    from server.console.text import label
    assert label("Household") == "Household"
    assert label({"vi": "Hộ gia đình", "en": "Household"}, "vi") == "Hộ gia đình"
    assert label({"vi": "Hộ gia đình", "en": "Household"}, "en") == "Household"
    assert label({"en": "Household"}, "vi") == "Household"
    assert label(None) == ""


@pytest.mark.parametrize("name,typed", [("Lý A Sáng", "Ly A Sang"),
                                        ("Đinh Văn Đức", "dinh van duc"),
                                        ("Nguyễn  Thị Ánh", "nguyen thi anh")])
def test_fold_ignores_vietnamese_diacritics(name, typed):
    from server.console.text import fold
    assert fold(name) == fold(typed)


@given(st.text())
def test_fold_is_idempotent_and_keeps_no_combining_marks(text):
    import unicodedata
    from server.console.text import fold
    once = fold(text)
    assert fold(once) == once
    assert not any(unicodedata.combining(c) for c in unicodedata.normalize("NFD", once))


def test_committed_catalogs_match_their_po_files():
    """The shipped .mo files are compiled from the current .po (`make translations`)."""
    import gettext
    from pathlib import Path
    from babel.messages.pofile import read_po
    root = Path(__file__).resolve().parent.parent / "server/console/translations"
    for po in root.glob("*/LC_MESSAGES/messages.po"):
        with open(po, "rb") as f:
            catalog = read_po(f)
        with open(po.with_suffix(".mo"), "rb") as f:
            compiled = gettext.GNUTranslations(f)
        for message in catalog:
            if message.id and message.string and "fuzzy" not in message.flags:
                assert compiled.gettext(message.id) == message.string, message.id


def test_cli_enable_and_unlock(db_path):
    from server.cli import cli
    runner = CliRunner()
    db = str(db_path)
    assert runner.invoke(cli, ["--db", db, "user", "disable", "hw"]).exit_code == 0
    out = runner.invoke(cli, ["--db", db, "user", "enable", "hw"], catch_exceptions=False)
    assert out.exit_code == 0 and "Enabled hw" in out.output
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT disabled FROM users WHERE username = 'hw'").fetchone()[0] == 0
    conn.executemany("INSERT INTO login_failures (key, at) VALUES ('user:hw', ?)",
                     [(9e9,)] * 3)
    conn.commit()
    out = runner.invoke(cli, ["--db", db, "user", "unlock", "hw"], catch_exceptions=False)
    assert out.exit_code == 0 and "3 recent failed sign-ins forgotten" in out.output
    assert conn.execute("SELECT count(*) FROM login_failures WHERE key = 'user:hw'") \
        .fetchone()[0] == 0
    missing = runner.invoke(cli, ["--db", db, "user", "unlock", "nobody"])
    assert missing.exit_code == 1 and "No user 'nobody'" in missing.output


def test_vietnamese_names_sort_in_dictionary_order():
    from server.console.text import sort_key
    names = ["Lý", "Đinh", "Ánh", "Dương", "Ấn", "An", "Lê", "Ă"]
    assert sorted(names, key=sort_key) == ["An", "Ánh", "Ă", "Ấn", "Dương", "Đinh", "Lê", "Lý"]


def test_opening_a_cp_report_is_an_audited_restricted_read(client, app):
    from conftest import cp_report
    admin = login(client, "admin", device_id="dev-admin")
    rid = str(uuid.uuid4())
    push(client, admin, "dev-admin", [change(cp_report(), record_id=rid, form="cp_report",
                                             hlc=hlc_at(now_ms(), "dev-admin"))])
    sign_in(client, "sup")
    assert client.get(f"/records/{rid}").status_code == 200
    with app.app_context():
        from server.db import get_db
        rows = get_db().execute("SELECT username, details FROM audit WHERE action = "
                                "'restricted_read'").fetchall()
    assert [(u, rid in d) for u, d in rows] == [("sup", True)]
    # Restricted to supervisors and admins: were it restricted to admins, a
    # supervisor would get the 404 of a record that does not exist.
    with app.app_context():
        from server.db import get_db
        import json
        db = get_db()
        definition = json.loads(db.execute("SELECT definition FROM forms WHERE id = "
                                           "'cp_report' ORDER BY version DESC").fetchone()[0])
        definition["restricted_to"] = ["admin"]
        definition["version"] += 1      # a newer version than the bundled ones
        from server import catalog
        catalog.publish(db, definition)
    assert client.get(f"/records/{rid}").status_code == 404
    assert "cp_report" not in client.get("/downloads").text


def test_downloads_stream_the_api_exports_with_since_and_area(client):
    hw = login(client, "hw", device_id="dev-hw")
    push(client, hw, "dev-hw", [change(household(head_name="Lò Văn Páo"),
                                       hlc=hlc_at(now_ms(), "dev-hw"))])
    sign_in(client, "sup")
    page = client.get("/downloads")
    for name in ("all.xlsx", "all.zip", "household.csv", "household.xlsx", "household.jsonl"):
        assert f"/downloads/{name}" in page.text
    today = client.get("/downloads/household.csv?since=2000-01-01&area=")
    assert today.status_code == 200 and "Lò Văn Páo" in today.get_data(as_text=True)
    assert today.headers["X-Fieldsync-Count"] == "1"
    later = client.get("/downloads/household.csv?since=2999-01-01&area=")
    assert later.headers["X-Fieldsync-Count"] == "0"
    outside = client.get("/downloads/household.csv?since=&area=QN.TB")
    assert outside.status_code == 403 and "text/html" in outside.content_type
    bad = client.get("/downloads/household.csv?since=yesterday")
    assert bad.status_code == 400 and "ISO 8601" in bad.text


# -- indicators and work lists (issue 16) -------------------------------------

def _indicator_cells(page, ident):
    """(numerator, denominator, value) as shown in the indicator's row."""
    seg = page.split(f'data-indicator="{ident}"', 1)[1].split("data-indicator=", 1)[0]
    seg = seg.split("</details>")[-1]
    return [c.strip() for c in re.findall(r'<td class="num[^"]*">([^<]*)</td>', seg)[:3]]


def _shown(ind):
    num = str(ind["numerator"]) if ind["numerator"] is not None else "—"
    den = str(ind["denominator"]) if ind["denominator"] is not None else ""
    val = "—" if ind["value"] is None else (
        f"{ind['value']} %" if ind["denominator"] is not None else str(ind["value"]))
    return [num, den, val]


@pytest.fixture
def figures_world(client):
    """Births in QN.LM.03 (February 2026) and one in QN.LMX.01, a SAM child."""
    from tests.test_indicators import World, woman_with_birth

    class Outside(World):
        def push(self, form, data, version=2, area=None, record_id=None):
            return super().push(form, data, version, "QN.LMX.01", record_id)

    world = World(client)
    woman_with_birth(world, "2026-02-10", 4)
    woman_with_birth(world, "2026-02-20", 1, place="home", attendant="relative")
    woman_with_birth(Outside(client, user="admin", device="dev-ind-x"), "2026-02-12", 4)
    child = world.person(sex="male", dob="2025-01-01", full_name="Bé Nặng")
    world.growth(child, "2025-01-01", "male", "2026-03-01", 7.0, 75.0, muac=118)  # SAM
    world.child = child
    return world


def test_indicators_page_shows_the_apis_figures_and_refuses_other_areas(client, figures_world):
    api = figures_world.indicators(area="QN.LM")
    assert api["anc4"]["numerator"] == 1 and api["anc4"]["denominator"] == 2
    sign_in(client, "sup")
    page = client.get("/indicators", query_string={"area": "QN.LM", "period": "2026-Q1"})
    assert page.status_code == 200
    assert not re.search(r"<script>|\son[a-z]+=|style=", page.text)
    for ident, ind in api.items():
        assert _indicator_cells(page.text, ident) == _shown(ind), ident
    assert ind["label"] in page.text                 # Vietnamese labels by default
    # The monthly chart: births only in February.
    title = re.search(r'data-indicator="anc4".*?<title>([^<]*)</title>', page.text, re.S)[1]
    assert title == "2026-01: —; 2026-02: 50.0; 2026-03: —"
    # The same figures for typed dates.
    typed = client.get("/indicators", query_string={"area": "QN.LM", "from": "2026-01-01",
                                                    "to": "2026-03-31"})
    assert _indicator_cells(typed.text, "anc4") == _shown(api["anc4"])
    for path in ("/indicators?area=QN.LMX&period=2026-Q1", "/worklists?area=QN.LMX",
                 "/worklists/sam_mam?area=QN.LMX", "/worklists/sam_mam?area=QN.LMX&format=csv",
                 "/indicators/download?area=QN.LMX&period=2026-Q1&format=csv"):
        resp = client.get(path)
        assert resp.status_code == 403 and "text/html" in resp.content_type, path
        assert "QN.LMX.01" not in resp.text
    assert client.get("/indicators?area=QN..X").status_code == 400
    assert client.get("/indicators?period=2026-Q7").status_code == 400
    # An admin sees the other commune's birth.
    client.post("/sign-out", data={"csrf_token": csrf(client, "/")})
    sign_in(client, "admin")
    other = client.get("/indicators", query_string={"area": "QN.LMX", "period": "2026-Q1"})
    assert _indicator_cells(other.text, "anc4") == ["1", "1", "100.0 %"]


def test_health_worker_gets_no_figures_page(client):
    assert sign_in(client, "hw").status_code == 403
    for path in ("/indicators", "/worklists", "/worklists/sam_mam"):
        assert client.get(path).status_code == 302


def test_indicator_downloads_are_report_files_of_the_same_figures(client, figures_world):
    import csv
    import io

    import openpyxl

    api = figures_world.indicators(area="QN.LM")
    sign_in(client, "sup")
    q = {"area": "QN.LM", "from": "2026-01-01", "to": "2026-03-31"}
    xlsx = client.get("/indicators/download", query_string={**q, "format": "xlsx"})
    assert xlsx.status_code == 200 and "attachment" in xlsx.headers["Content-Disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.data))["indicators"]
    rows = {r[0]: r for r in sheet.iter_rows(min_row=2, values_only=True)}
    assert set(rows) == set(api)
    assert rows["anc4"][2:5] == (1, 2, 50)
    text = client.get("/indicators/download", query_string={**q, "format": "csv"}).data
    head = [r for r in csv.DictReader(io.StringIO(text.decode())) if not r["breakdown"]]
    assert {r["id"]: r["numerator"] for r in head} == {
        k: "" if v["numerator"] is None else str(v["numerator"]) for k, v in api.items()}
    assert client.get("/indicators/download", query_string={**q, "format": "pdf"}) \
        .status_code == 400


def test_worklists_pages_counts_rows_links_and_csv(client, figures_world):
    sup = figures_world.sup()
    api = client.get("/api/v1/worklists/sam_mam", query_string={"area": "QN.LM"},
                     headers={"Authorization": f"Bearer {sup}"}).get_json()
    assert [r["person"]["id"] for r in api["rows"]] == [figures_world.child]
    sign_in(client, "sup")
    lists = client.get("/worklists?area=QN.LM")
    assert lists.status_code == 200 and lists.text.count('data-list="') == 9
    count = re.search(r'data-list="sam_mam">.*?<td class="num">(\d+)</td>', lists.text)[1]
    assert count == "1"
    page = client.get("/worklists/sam_mam?area=QN.LM")
    assert f'href="/records/{figures_world.child}">Bé Nặng</a>' in page.text
    assert str(api["rows"][0]["days_overdue"]) in page.text
    data = client.get("/worklists/sam_mam?area=QN.LM&format=csv")
    assert data.status_code == 200 and data.mimetype == "text/csv"
    assert figures_world.child in data.data.decode() and "Bé Nặng" in data.data.decode()
    assert client.get("/worklists/nope").status_code == 404
    dash = client.get("/")
    assert re.search(r'data-list="sam_mam"><a [^>]*><strong>1</strong>', dash.text)
    assert 'data-indicator="anc4"' in dash.text

"""The supervisor console in a real browser: Debian's chromium driven by
Playwright against the real server process, one story per test.

Cost: one chromium for the module and one server process with seeded data,
shared; each test opens a fresh browser context (cookies) in it. About 15-25 s
for the module on a 2-core machine.

Each test saves a screenshot: under pytest's temporary folder, or under
$FIELDSYNC_SCREENSHOTS (`make screenshots` writes the README's, in
docs/screenshots/).
"""
import os
import shutil
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from conftest import ServerProcess, batch, change, copy_db, free_port, household, now_ms, \
    hlc_at

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("FIELDSYNC_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module (no browser download, ever)."""
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        pytest.fail("The console's browser tests need Debian's chromium at /usr/bin/chromium:"
                    " apt-get install -y chromium fonts-noto-core (`make test` does this "
                    "when run as root).")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _push(server, token, device, records):
    resp = requests.post(server.url + "/api/v1/sync/push", json=batch(device, records),
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert all(r["status"] == "applied" for r in resp.json()["results"]), resp.text


@pytest.fixture(scope="module")
def site(template_db, tmp_path_factory):
    """The real server with records pushed over HTTP: a household named with
    diacritics, one named `<script>…`, one in QN.LMX (outside the supervisor's
    QN.LM), and a device whose last sync was a day ago."""
    folder = tmp_path_factory.mktemp("console")
    db = copy_db(template_db, folder / "fieldsync.db")
    server = ServerProcess(db=db, port=free_port(), log=folder / "server.log", workers=1)
    server.start()
    hw = server.login("hw", device_id="dev-hw-1")
    ids = {"sang": str(uuid.uuid4()), "script": str(uuid.uuid4()), "lmx": str(uuid.uuid4())}
    t = now_ms()
    _push(server, hw, "dev-hw-1", [
        change(household(head_name="Lý A Sáng"), record_id=ids["sang"],
               hlc=hlc_at(t, "dev-hw-1")),
        change(household(head_name="<script>window.__xss=1</script>"),
               record_id=ids["script"], hlc=hlc_at(t, "dev-hw-1", 1))])
    admin = server.login("admin", device_id="dev-admin")
    _push(server, admin, "dev-admin", [
        change(household(head_name="Đinh Văn Đức"), record_id=ids["lmx"], area="QN.LMX.01",
               hlc=hlc_at(t, "dev-admin"))])
    server.login("hw", device_id="dev-old")
    day_ago = (datetime.now(timezone.utc) - timedelta(hours=26)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    # A device a day behind: its last sync is set back, as a day of silence would leave it.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE devices SET last_push = ?, last_pull = ?, app_version = '0.9.1', "
                     "skew_seconds = -42 WHERE device_id = 'dev-old'", [day_ago, day_ago])
    server.ids = ids
    yield server
    server.stop()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport=LAPTOP, locale="vi-VN")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append("dialog: " + dialog.message))
    page.errors = errors
    yield page
    context.close()


def submit(page, selector):
    """Click a button that sends a form, and wait for the page it answers with."""
    with page.expect_navigation():
        page.click(selector)


def sign_in(page, site, name="sup", password=None):
    from conftest import USERS
    page.goto(site.url + "/sign-in")
    page.fill("input[name=username]", USERS[name]["username"])
    page.fill("input[name=password]", password or USERS[name]["password"])
    submit(page, "button.primary")


def test_supervisor_signs_in_and_sees_the_dashboard(page, site, shots):
    page.goto(site.url + "/")
    assert "/sign-in" in page.url            # not signed in: sent to the sign-in page
    page.screenshot(path=shots / "sign-in.png")
    sign_in(page, site)
    assert page.url.rstrip("/") == site.url
    assert page.locator("h1").inner_text() == "Tổng quan"
    assert page.locator(".who").inner_text() == "sup"
    cookie = next(c for c in page.context.cookies() if c["name"] == "fieldsync_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert not page.errors


def test_dashboard_shows_a_device_a_day_behind(page, site, shots):
    sign_in(page, site)
    row = page.locator("tr[data-device='dev-old']")
    assert "behind" in row.get_attribute("class")
    text = row.inner_text()
    assert "bị chậm" in text and "26 tiếng trước" in text and "0.9.1" in text and "-42 s" in text
    fresh = page.locator("tr[data-device='dev-hw-1']")
    assert "behind" not in (fresh.get_attribute("class") or "")
    assert page.locator("svg.chart rect").count() >= 1   # records per form and area
    page.screenshot(path=shots / "dashboard.png", full_page=True)


def test_supervisor_resolves_a_conflict_and_the_device_sees_it(page, site, shots, tmp_path,
                                                               monkeypatch):
    from client_sync import Client, NetworkConfig
    from schemas.clock import parse, time_ms
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))
    net = NetworkConfig(give_up_after=5, connect_timeout=1, read_timeout=10,
                        backoff_factor=0, backoff_jitter=0)
    a, b = Client(tmp_path / "a", net), Client(tmp_path / "b", net)
    try:
        for device in (a, b):
            device.login(site.url, "hw", "hw-pass-123")
        rid = a.add("household", household(head_name="Vàng Thị Mai"))
        a.sync()
        b.sync()
        a.edit(rid, {"head_name": "Vàng Thị Mai (A)"})
        while time_ms() <= parse(a.store.hlc).millis:   # B's edit gets a later clock
            pass
        b.edit(rid, {"head_name": "Vàng Thị Mai (B)"})
        a.sync()
        b.sync()
        sign_in(page, site)
        page.goto(site.url + "/conflicts")
        card = page.locator("article.conflict", has_text=rid[:8])
        assert "Vàng Thị Mai (A)" in card.inner_text() and "Vàng Thị Mai (B)" in card.inner_text()
        page.screenshot(path=shots / "conflicts.png", full_page=True)
        card.locator("input[name=value]").fill("Vàng Thị Mai")
        with page.expect_navigation():
            card.locator("button[value=value]").click()
        assert "Đã giải quyết xung đột" in page.locator(".flash").inner_text()
        a.sync()
        assert a.get(rid)["data"]["head_name"] == "Vàng Thị Mai"
        b.sync()
        assert b.get(rid)["data"]["head_name"] == "Vàng Thị Mai"
    finally:
        a.close()
        b.close()


def test_supervisor_downloads_an_xlsx_that_opens(page, site, shots, tmp_path):
    import openpyxl
    sign_in(page, site)
    page.goto(site.url + "/downloads")
    page.screenshot(path=shots / "downloads.png", full_page=True)
    with page.expect_download() as info:
        page.click("button[data-file='household.xlsx']")
    path = tmp_path / "household.xlsx"
    info.value.save_as(path)
    sheet = openpyxl.load_workbook(path, read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    names = {r[header.index("head_name")] for r in rows[1:]}
    assert "Lý A Sáng" in names
    assert "Đinh Văn Đức" not in names        # QN.LMX is outside the supervisor's areas


def test_search_without_diacritics_finds_the_record(page, site, shots):
    sign_in(page, site)
    page.goto(site.url + "/records")
    page.fill("input[name=q]", "Ly A Sang")
    submit(page, "form[role=search] button")
    links = page.locator("table.records tbody a").all_inner_texts()
    assert links == ["Lý A Sáng"]
    page.screenshot(path=shots / "search.png", full_page=True)
    page.click("table.records tbody a")
    page.wait_for_url("**/records/" + site.ids["sang"])
    assert "/records/" + site.ids["sang"] in page.url
    assert "Lý A Sáng" in page.locator("table.fields").inner_text()
    page.screenshot(path=shots / "record.png", full_page=True)


def test_supervisor_of_qn_lm_is_refused_a_qn_lmx_record_by_url(page, site, shots):
    sign_in(page, site)
    response = page.goto(site.url + "/records/" + site.ids["lmx"])
    assert response.status == 404
    assert "Đinh Văn Đức" not in page.content()
    page.screenshot(path=shots / "refused-other-area.png")
    page.set_viewport_size(PHONE)   # a record of their own area still opens
    assert page.goto(site.url + "/records/" + site.ids["sang"]).status == 200


def test_post_without_csrf_token_is_refused(page, site, shots):
    sign_in(page, site)
    page.goto(site.url + "/records")
    response = page.request.post(site.url + "/sign-out", form={"x": "1"})
    assert response.status == 400
    page.goto(site.url + "/")
    assert page.locator(".who").inner_text() == "sup"   # still signed in: nothing was done
    # The page's own form with its token removed is refused the same way.
    page.evaluate("document.querySelector('header form input[name=csrf_token]').remove()")
    submit(page, "header button[name=lang]")
    assert page.locator("h1").inner_text().startswith("Không thực hiện được")
    page.screenshot(path=shots / "csrf-refused.png")


def test_script_in_a_field_is_not_executed(page, site, shots):
    sign_in(page, site)
    page.goto(site.url + "/records/" + site.ids["script"])
    assert "<script>window.__xss=1</script>" in page.locator("table.fields").inner_text()
    assert page.evaluate("window.__xss") is None
    page.screenshot(path=shots / "script-as-text.png")
    page.goto(site.url + "/records?q=script")
    assert page.locator("table.records tbody a").all_inner_texts() == [
        "<script>window.__xss=1</script>"]
    assert page.evaluate("window.__xss") is None
    assert not page.errors


def test_pages_are_vietnamese_first_and_switch_to_english(page, site, shots):
    sign_in(page, site)
    assert page.locator("html").get_attribute("lang") == "vi"
    assert page.locator("nav").inner_text().split() == [
        "Tổng", "quan", "Xung", "đột", "Chỉ", "số", "Danh", "sách", "công", "việc",
        "Hồ", "sơ", "Tải", "xuống"]
    assert "Asia/Ho_Chi_Minh (UTC+07:00)" in page.locator("footer").inner_text()
    page.set_viewport_size(PHONE)
    page.screenshot(path=shots / "dashboard-phone-vi.png", full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]          # no sideways scrolling on a phone
    submit(page, "header button[name=lang]")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Dashboard"
    page.screenshot(path=shots / "dashboard-phone-en.png", full_page=True)
    page.set_viewport_size(LAPTOP)
    page.screenshot(path=shots / "dashboard-en.png", full_page=True)
    submit(page, "header button[name=lang]")
    assert page.locator("h1").inner_text() == "Tổng quan"


def test_indicators_page_and_a_work_list(page, site, shots):
    """A SAM child measured this week: the indicators table with its monthly
    charts, then the SAM/MAM work list linking to the child's record."""
    from datetime import date
    hw = site.login("hw", device_id="dev-hw-ind")
    child, dob = str(uuid.uuid4()), date.today() - timedelta(days=500)
    on = date.today() - timedelta(days=3)
    t = now_ms()
    _push(site, hw, "dev-hw-ind", [
        change({"household_id": str(uuid.uuid4()), "full_name": "Bé Nặng", "sex": "male",
                "dob": dob.isoformat(), "dob_precision": "exact", "ethnicity_code": "09",
                "relationship_to_head": "child", "recorded_on": on.isoformat(),
                "hi_has_card": "no", "vital_status": "alive"},
               form="person", version=2, record_id=child, hlc=hlc_at(t, "dev-hw-ind")),
        change({"child_id": child, "child_dob": dob.isoformat(), "child_sex": "male",
                "child_dob_precision": "exact", "measured_on": on.isoformat(),
                "weight_kg": 7.0, "lenhei_cm": 75.0, "position": "lying", "muac_mm": 118,
                "oedema_bilateral": False, "referred_to": "district", "counselled": True},
               form="growth", version=2, hlc=hlc_at(t, "dev-hw-ind", 1))])
    sign_in(page, site)
    page.click("nav >> text=Chỉ số")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Chỉ số"
    sam = page.locator("tr[data-indicator=sam]")
    assert sam.locator("td.value").inner_text() != "—"
    assert page.locator("svg.spark").count() >= 1
    page.locator("tr[data-indicator=sam] summary").click()    # breakdowns, no script
    page.screenshot(path=shots / "indicators.png", full_page=True)
    page.goto(site.url + "/worklists/sam_mam")
    link = page.locator("a", has_text="Bé Nặng")
    assert link.get_attribute("href") == f"/records/{child}"
    page.screenshot(path=shots / "worklist.png", full_page=True)
    assert not page.errors

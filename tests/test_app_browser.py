"""The health worker's app (`fieldsync app`) in a real browser: Debian's
chromium driven by Playwright, the app served on 127.0.0.1 over the device's
data folder, syncing with the real server process. One story per test.

Fixtures and patterns are the console's (tests/test_console_browser.py): one
chromium and one server for the module, a fresh data folder and app per test.
Each test saves a screenshot under pytest's temporary folder, or under
$FIELDSYNC_SCREENSHOTS (`make screenshots` writes the README's).
"""
import sqlite3
import threading
from datetime import date, timedelta

import pytest

from conftest import USERS, ServerProcess, copy_db, free_port, household
from test_console_browser import LAPTOP, PHONE, browser, shots  # noqa: F401  (fixtures)

HW = USERS["hw"]


@pytest.fixture(scope="module")
def site(template_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("appserver")
    db = copy_db(template_db, folder / "fieldsync.db")
    server = ServerProcess(db=db, port=free_port(), log=folder / "server.log", workers=1)
    server.start()
    yield server
    server.stop()


class LocalApp:
    """`fieldsync app` in a thread of the test process, on a free port."""

    def __init__(self, data_dir):
        from werkzeug.serving import make_server

        from client_sync.app import create_app
        self.data_dir = data_dir
        self.app = create_app(data_dir)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.app.extensions["fieldsync_sync"].wait(30)


def device(data_dir):
    from client_sync import Client, NetworkConfig
    return Client(data_dir, NetworkConfig(give_up_after=5, connect_timeout=1, read_timeout=10,
                                          backoff_factor=0, backoff_jitter=0))


@pytest.fixture
def home(tmp_path, monkeypatch):
    # The session key of an encrypted folder goes to a private runtime
    # folder of the test's own, never the machine's.
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("FIELDSYNC_PASSPHRASE", raising=False)
    return tmp_path / "device"


@pytest.fixture
def app(home):
    local = LocalApp(home)
    yield local
    local.stop()


@pytest.fixture
def signed_in(home, site):
    with device(home) as d:
        d.login(site.url, HW["username"], HW["password"])
    return home


@pytest.fixture
def page(browser, app):  # noqa: F811
    context = browser.new_context(viewport=LAPTOP, locale="vi-VN")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.errors = errors
    yield page
    context.close()


def submit(page, selector):
    with page.expect_navigation():
        page.click(selector)


def wait_checked(page):
    """Wait for the live check's answer to the last change."""
    page.wait_for_selector("form[data-live][data-checked]", state="attached")


def sync_and_wait(page):
    page.click("[data-sync-button]")
    page.wait_for_selector(", ".join(f"body[data-sync={s}]" for s in ("ok", "offline", "error")),
                           state="attached", timeout=30000)


def add_woman_and_pregnancy(home, lmp):
    """A household, a woman of 24 and her pregnancy, saved on the device as the app would."""
    today = date.today()
    with device(home) as d:
        hid = d.add("household", household(head_name="Giàng A Dơ"))
        wid = d.add("person", {
            "household_id": hid, "full_name": "Giàng Thị Mỷ", "sex": "female",
            "dob": (today - timedelta(days=24 * 365)).isoformat(), "dob_precision": "exact",
            "ethnicity_code": "04", "relationship_to_head": "spouse",
            "recorded_on": today.isoformat(), "hi_has_card": "no", "vital_status": "alive"})
        pid = d.add("pregnancy", {
            "woman_id": wid, "woman_dob": (today - timedelta(days=24 * 365)).isoformat(),
            "woman_sex": "female", "registration_date": today.isoformat(), "lmp_known": "yes",
            "lmp_date": lmp.isoformat(), "edd": (lmp + timedelta(days=280)).isoformat(),
            "edd_source": "lmp", "prev_term_births": 1, "prev_preterm_births": 0,
            "prev_abortions_miscarriages": 0, "living_children": 1,
            "planned_delivery_place": "commune_health_station", "mch_handbook_issued": True,
            "status": "ongoing"})
    return hid, wid, pid


def fill_check_up(page, systolic, diastolic):
    """An ANC check-up today at the commune health station by a midwife, no danger sign
    ticked and no referral: the blood pressure decides whether a warning shows."""
    page.fill("#f-visit_date", date.today().isoformat())
    page.select_option("#f-contact_type", "anc_checkup")
    page.select_option("#f-provider", "midwife")
    page.select_option("#f-place", "CHS")
    page.fill("#f-bp_systolic", str(systolic))
    page.fill("#f-bp_diastolic", str(diastolic))
    page.check("[data-path=danger_signs] input[value=none]")
    page.select_option("#f-referred_to", "none")


def test_health_worker_signs_in_and_adds_a_household_and_a_member_without_an_id(
        page, app, site, shots):
    page.goto(app.url + "/")
    assert page.url.endswith("/sign-in")
    page.fill("input[name=server]", site.url)
    page.fill("input[name=username]", HW["username"])
    page.fill("input[name=password]", HW["password"])
    # A new device's data is encrypted with a passphrase chosen here.
    page.fill("input[name=passphrase]", "mây trắng bay 2026")
    page.fill("input[name=passphrase2]", "mây trắng bay 2026")
    page.screenshot(path=shots / "app-sign-in.png")
    submit(page, "button.primary")
    assert page.locator("h1").inner_text() == "Hộ gia đình"
    submit(page, "text=Đăng ký hộ gia đình")
    page.fill("#f-head_name", "Lý A Sáng")
    page.select_option("#f-poverty_status", "poor")
    page.fill("#f-registered_on", date.today().isoformat())
    page.select_option("#f-status", "active")
    wait_checked(page)
    page.screenshot(path=shots / "app-household-form.png", full_page=True)
    submit(page, "[data-save]")
    assert "Đã lưu trên máy" in page.locator(".flash.ok").inner_text()
    assert page.locator("[data-state]").first.inner_text() == "Chưa gửi"
    # A member, from the household's page: the household is filled in, no id typed.
    submit(page, "[data-add=person]")
    assert page.locator("#f-household_id option:checked").inner_text() == "Lý A Sáng"
    page.fill("#f-full_name", "Lý Thị Mai")
    page.select_option("#f-sex", "female")
    page.fill("#f-dob", "2000-03-02")
    page.select_option("#f-dob_precision", "exact")
    page.select_option("#f-ethnicity_code", "04")
    page.select_option("#f-relationship_to_head", "spouse")
    page.fill("#f-recorded_on", date.today().isoformat())
    page.select_option("#f-vital_status", "alive")
    # Skip logic as she types: the card number is asked only with a card.
    page.select_option("#f-hi_has_card", "yes")
    page.wait_for_selector("[data-path=hi_number]:not([hidden])")
    page.select_option("#f-hi_has_card", "no")
    page.wait_for_selector("[data-path=hi_number]", state="hidden")
    wait_checked(page)
    page.screenshot(path=shots / "app-member-form.png", full_page=True)
    submit(page, "[data-save]")
    assert page.locator("h1").inner_text().startswith("Lý Thị Mai")
    assert "Lý A Sáng" in page.locator("nav.trail").inner_text()
    page.click("nav.trail >> text=Lý A Sáng")
    page.wait_for_selector("[data-kids=person] li")
    assert "Lý Thị Mai" in page.locator("[data-kids=person]").inner_text()
    page.screenshot(path=shots / "app-household.png", full_page=True)
    # Search without accents (đ as d) finds her.
    page.goto(app.url + "/?q=ly thi mai")
    assert page.locator("[data-results] a").all_inner_texts() == ["Lý Thị Mai"]
    assert not page.errors


def test_the_next_working_day_the_passphrase_unlocks_the_records(page, app, site, home,
                                                                  shots):
    """Signed in with a data passphrase; the session key is gone (a reboot,
    `fieldsync lock`): every page goes to the unlock page, a wrong passphrase
    opens nothing, the right one goes back to the page asked for."""
    from client_sync.store import keys
    page.goto(app.url + "/sign-in")
    page.fill("input[name=server]", site.url)
    page.fill("input[name=username]", HW["username"])
    page.fill("input[name=password]", HW["password"])
    page.fill("input[name=passphrase]", "suối đá xanh 2026")
    page.fill("input[name=passphrase2]", "suối đá xanh 2026")
    submit(page, "button.primary")
    assert page.locator("h1").inner_text() == "Hộ gia đình"
    keys.forget(home)
    page.goto(app.url + "/?q=ly")
    assert "/unlock?next=" in page.url
    assert page.locator("h1").inner_text() == "Mở khóa dữ liệu của máy này"
    page.screenshot(path=shots / "app-unlock.png")
    page.fill("input[name=passphrase]", "suoi da xanh 2026")      # no accents: wrong
    submit(page, "button.primary")
    assert "Sai mật khẩu dữ liệu" in page.locator(".flash.error").inner_text()
    assert "/unlock" in page.url
    page.fill("input[name=passphrase]", "suối đá xanh 2026")
    submit(page, "button.primary")
    assert page.url == app.url + "/?q=ly"
    # The only console error is the wrong passphrase's 401 answer.
    assert all("401" in error for error in page.errors), page.errors


def test_a_pregnancy_and_a_check_up_are_registered_and_synced_without_an_id(
        page, app, signed_in, site, shots):
    """Issue 17's whole errand in the browser: from the woman's page a pregnancy, from the
    pregnancy's page an ANC check-up, then Sync; no id and no field name is typed."""
    today = date.today()
    dob = (today - timedelta(days=27 * 365)).isoformat()
    with device(app.data_dir) as d:
        hid = d.add("household", household(head_name="Sùng A Páo"))
        wid = d.add("person", {
            "household_id": hid, "full_name": "Sùng Thị Dua", "sex": "female", "dob": dob,
            "dob_precision": "exact", "ethnicity_code": "04", "relationship_to_head": "spouse",
            "recorded_on": today.isoformat(), "hi_has_card": "no", "vital_status": "alive"})
    page.goto(app.url + f"/r/{wid}")
    submit(page, "[data-add=pregnancy]")
    # The woman is chosen by name, and her date of birth and sex come with her.
    assert page.locator("#f-woman_id option:checked").inner_text() == "Sùng Thị Dua"
    assert page.locator("#f-woman_dob").input_value() == dob
    assert page.locator("#f-woman_sex").input_value() == "female"
    lmp = today - timedelta(weeks=10)
    page.fill("#f-registration_date", today.isoformat())
    page.select_option("#f-lmp_known", "yes")
    page.wait_for_selector("[data-path=lmp_date]:not([hidden])")
    page.fill("#f-lmp_date", lmp.isoformat())
    page.fill("#f-edd", (lmp + timedelta(days=280)).isoformat())
    page.select_option("#f-edd_source", "lmp")
    for name in ("prev_term_births", "prev_preterm_births", "prev_abortions_miscarriages",
                 "living_children"):
        page.fill(f"#f-{name}", "0")
    page.select_option("#f-planned_delivery_place", "commune_health_station")
    page.select_option("#f-mch_handbook_issued", "true")
    page.select_option("#f-status", "ongoing")
    wait_checked(page)
    submit(page, "[data-save]")
    assert "Đã lưu trên máy" in page.locator(".flash.ok").inner_text()
    # Now on the pregnancy's page: its check-up takes the pregnancy and its LMP along.
    submit(page, "[data-add=anc_visit]")
    assert page.locator("#f-lmp_date").input_value() == lmp.isoformat()
    fill_check_up(page, 110, 70)
    wait_checked(page)
    assert page.locator("#f-ga_weeks").inner_text() == "10"
    submit(page, "[data-save]")
    assert "Đã lưu trên máy" in page.locator(".flash.ok").inner_text()
    with device(app.data_dir) as d:
        (pregnancy,) = d.list("pregnancy")
        (visit,) = d.list("anc_visit")
    assert pregnancy["data"]["woman_id"] == wid and visit["data"]["pregnancy_id"] == pregnancy["id"]
    page.goto(app.url + "/")
    sync_and_wait(page)
    assert "Đồng bộ xong" in page.locator("[data-sync-text]").inner_text()
    with sqlite3.connect(site.db) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM records")}
    assert {hid, wid, pregnancy["id"], visit["id"]} <= stored
    assert not page.errors


def test_danger_sign_on_an_anc_visit_is_shown_before_saving_and_stays_on_the_record(
        page, app, signed_in, shots):
    lmp = date.today() - timedelta(weeks=20)
    _hid, _wid, pid = add_woman_and_pregnancy(app.data_dir, lmp)
    page.goto(app.url + f"/r/{pid}")
    submit(page, "[data-add=anc_visit]")
    assert page.locator("#f-lmp_date").input_value() == lmp.isoformat()  # from the pregnancy
    fill_check_up(page, 165, 110)
    warning = page.locator("[data-msgs-for=bp_systolic] li.danger")
    warning.wait_for()
    assert "chuyển tuyến" in warning.inner_text()       # the form's own words: refer
    assert page.locator("#f-ga_weeks").inner_text() == "20"
    submit(page, "[data-save]")
    box = page.locator("[data-confirm-box]")
    assert "Huyết áp từ 140/90 trở lên" in box.inner_text()
    assert "chuyển tuyến ngay" in box.inner_text()
    page.screenshot(path=shots / "app-danger-sign.png", full_page=True)
    with device(app.data_dir) as d:
        assert not list(d.list("anc_visit"))            # nothing saved before the confirmation
    submit(page, "[data-save-anyway]")
    assert "Huyết áp từ 140/90" in page.locator("[data-warnings] li.danger").inner_text()
    page.screenshot(path=shots / "app-visit-with-warning.png", full_page=True)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=shots / "app-visit-phone.png", full_page=True)
    assert not page.errors


def test_sync_sends_records_to_the_server_and_says_so_offline(page, app, signed_in, site,
                                                              shots, tmp_path):
    lmp = date.today() - timedelta(weeks=12)
    hid, _wid, pid = add_woman_and_pregnancy(app.data_dir, lmp)
    page.goto(app.url + "/")
    assert "3 thay đổi đã lưu trên máy" in page.locator("[data-sync-text]").inner_text()
    sync_and_wait(page)
    assert "Đồng bộ xong: đã gửi 3" in page.locator("[data-sync-text]").inner_text()
    # This household's row (other tests of the module may have added theirs).
    row = page.locator("[data-households] li").filter(has=page.locator(f'a[href$="/r/{hid}"]'))
    assert row.locator("[data-state]").inner_text() == "Đã đồng bộ"
    page.screenshot(path=shots / "app-synced.png", full_page=True)
    with sqlite3.connect(site.db) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM records")}
    assert {hid, pid} <= stored
    # The server gone: an honest message, and the change stays queued.
    with device(app.data_dir) as d:
        d.edit(hid, {"phone": "0912345678"})
        d.store.set_meta(server=f"http://127.0.0.1:{free_port()}")
    page.goto(app.url + "/")
    sync_and_wait(page)
    text = page.locator("[data-sync-text]").inner_text()
    assert "Không kết nối được máy chủ" in text and "1 thay đổi vẫn được lưu" in text
    page.screenshot(path=shots / "app-offline.png", full_page=True)
    with device(app.data_dir) as d:
        assert d.store.unsynced_count() == 1
        assert d.get(hid)["sync_state"] == "pending"


def test_a_conflict_is_shown_with_both_values(page, app, signed_in, site, shots, tmp_path):
    from schemas.clock import parse, time_ms
    other = device(tmp_path / "other")
    try:
        other.login(site.url, HW["username"], HW["password"])
        with device(app.data_dir) as mine:
            rid = mine.add("household", household(head_name="Vàng Thị Mai"))
            mine.sync()
            other.sync()
            mine.edit(rid, {"head_name": "Vàng Thị Mai (A)"})
            while time_ms() <= parse(mine.store.hlc).millis:   # the other edit is newer
                pass
        other.edit(rid, {"head_name": "Vàng Thị Mai (B)"})
        other.sync()                                           # the newer edit arrives first
    finally:
        other.close()
    page.goto(app.url + f"/r/{rid}")
    sync_and_wait(page)
    page.goto(app.url + f"/r/{rid}")
    box = page.locator("[data-conflict]")
    assert page.locator(".record-state [data-state]").inner_text() == "Xung đột"
    assert box.locator("[data-mine]").inner_text() == "Vàng Thị Mai (A)"
    assert box.locator("[data-kept]").inner_text() == "Vàng Thị Mai (B)"
    page.screenshot(path=shots / "app-conflict.png", full_page=True)
    page.goto(app.url + "/")
    assert "Vàng Thị Mai (B)" in page.locator(".attention").inner_text()


def test_a_refused_record_is_fixed_and_sent_again(page, app, signed_in, site, shots):
    from schemas.forms import bundled_definitions
    # A device still holding an older, looser household form (no phone pattern):
    # the server's refuses the record.
    loose = []
    for definition in bundled_definitions():
        if definition["id"] == "household":
            for field in definition["fields"]:
                field.pop("pattern", None) if field["name"] == "phone" else None
        loose.append(definition)
    with device(app.data_dir) as d:
        d.store.save_forms(loose, None)
        rid = d.add("household", household(head_name="Thào A Páo", phone="12345"))
    page.goto(app.url + "/")
    sync_and_wait(page)
    assert "Thào A Páo" in page.locator(".attention").inner_text()
    page.goto(app.url + f"/r/{rid}")
    refused = page.locator("[data-refused]")
    assert "Số điện thoại" in refused.inner_text() or "phone" in refused.inner_text().lower()
    assert page.locator(".record-state [data-state]").inner_text() == "Máy chủ từ chối"
    page.screenshot(path=shots / "app-refused.png", full_page=True)
    submit(page, "[data-refused] >> text=Sửa hồ sơ")
    page.fill("#f-phone", "12345")
    page.locator("[data-msgs-for=phone] li.error").wait_for()  # the server's form now
    page.fill("#f-phone", "0912345678")
    page.wait_for_selector("[data-msgs-for=phone] li", state="detached")
    submit(page, "[data-save]")
    assert page.locator(".record-state [data-state]").inner_text() == "Chưa gửi"
    sync_and_wait(page)
    assert page.locator(".record-state [data-state]").inner_text() == "Đã đồng bộ"
    with sqlite3.connect(site.db) as conn:
        assert conn.execute("SELECT 1 FROM records WHERE id = ?", [rid]).fetchone()

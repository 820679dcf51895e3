"""The device app's endpoints in-process (Flask's test client): sign-in gate,
CSRF, the live check (`/validate`), saving with warnings, linked values,
search, language, headers. The browser stories are in test_app_browser.py."""
import re
from datetime import date, timedelta

import pytest

from client_sync import Client
from conftest import household

TODAY = date.today()


@pytest.fixture
def home(tmp_path):
    """A device as after a login (no server needed for data entry)."""
    with Client(tmp_path / "device") as d:
        d.store.set_meta(user={"username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]},
                         server="http://127.0.0.1:9", token="t")
    return tmp_path / "device"


@pytest.fixture
def app(home):
    from client_sync.app import create_app
    return create_app(home)


@pytest.fixture
def web(app):
    return app.test_client()


def token(web, path="/"):
    html = web.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_a_device_not_signed_in_is_sent_to_the_sign_in_page(tmp_path):
    from client_sync.app import create_app
    web = create_app(tmp_path / "fresh").test_client()
    answer = web.get("/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/sign-in"
    page = web.get("/sign-in").get_data(as_text=True)
    assert 'name="server"' in page and "Đăng nhập" in page


def test_a_post_without_the_csrf_token_changes_nothing(web, home):
    answer = web.post("/new/household", data={**household(head_name="X")})
    assert answer.status_code == 400
    with Client(home) as d:
        assert list(d.list()) == []
    assert web.post("/validate/household", data={}).status_code == 400


def test_another_host_name_is_refused(web):
    assert web.get("/", headers={"Host": "evil.example:8080"}).status_code == 400


def test_pages_carry_a_strict_csp_and_no_inline_script(web):
    answer = web.get("/new/anc_visit")
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in answer.headers["Content-Security-Policy"]
    html = answer.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\son[a-z]+=", html)


def test_validate_answers_skip_logic_and_localized_messages(web):
    csrf = token(web)
    answer = web.post("/validate/person", data={"csrf_token": csrf, "hi_has_card": "no"}).json
    assert answer["relevant"]["hi_number"] is False
    answer = web.post("/validate/person", data={"csrf_token": csrf, "hi_has_card": "yes"}).json
    assert answer["relevant"]["hi_number"] is True
    assert answer["errors"]["hi_number"]                   # required once asked
    answer = web.post("/validate/anc_visit", data={
        "csrf_token": csrf, "contact_type": "anc_checkup", "bp_systolic": "165",
        "bp_diastolic": "110"}).json
    assert answer["warnings"]["bp_systolic"] == [
        "Huyết áp từ 140/90 trở lên: tăng huyết áp, là dấu hiệu nguy hiểm; đo lại và chuyển tuyến."]
    assert answer["danger"] == ["bp_systolic"]
    typed = {"csrf_token": csrf, "contact_type": "anc_checkup", "bp_systolic": "abc"}
    assert web.post("/validate/anc_visit", data=typed).json["errors"]["bp_systolic"] == [
        "phải là số nguyên"]                               # the validator's words, passed on
    web.set_cookie("fieldsync_app_lang", "en")
    english = web.post("/validate/anc_visit", data=typed).json
    assert english["errors"]["bp_systolic"] == ["must be a whole number"]


def test_a_repeat_entry_is_checked_and_its_fields_have_paths(web):
    csrf = token(web)
    answer = web.post("/validate/pregnancy_outcome", data={
        "csrf_token": csrf, "outcome_type": "live_birth", "baby._count": "1",
        "baby.0.status": "alive", "baby.0.sex": "unknown-sex"}).json
    assert answer["relevant"]["baby"] is True
    assert any(path.startswith("baby.0.") for path in answer["errors"])


def test_a_warning_is_confirmed_before_the_record_is_saved(web, home):
    with Client(home) as d:
        hid = d.add("household", household())
        wid = d.add("person", {
            "household_id": hid, "full_name": "Giàng Thị Mỷ", "sex": "female",
            "dob": "1990-01-01", "dob_precision": "exact", "ethnicity_code": "04",
            "relationship_to_head": "spouse", "recorded_on": TODAY.isoformat(),
            "hi_has_card": "no", "vital_status": "alive"})
    csrf = token(web)
    form = {"csrf_token": csrf, "woman_id": wid, "woman_dob": "2010-06-01",   # 16 years old
            "woman_sex": "female",
            "registration_date": TODAY.isoformat(), "lmp_known": "yes",
            "lmp_date": (TODAY - timedelta(weeks=10)).isoformat(),
            "edd": (TODAY + timedelta(weeks=30)).isoformat(), "edd_source": "lmp",
            "prev_term_births": "0", "prev_preterm_births": "0",
            "prev_abortions_miscarriages": "0", "living_children": "0",
            "planned_delivery_place": "commune_health_station", "mch_handbook_issued": "true",
            "status": "ongoing"}
    first = web.post("/new/pregnancy", data=form)
    assert first.status_code == 200 and "data-save-anyway" in first.get_data(as_text=True)
    with Client(home) as d:
        assert list(d.list("pregnancy")) == []
    saved = web.post("/new/pregnancy", data={**form, "confirm": "1"})
    assert saved.status_code == 302
    web.set_cookie("fieldsync_app_lang", "en")
    record_page = web.get(saved.headers["Location"]).get_data(as_text=True)
    assert "data-warnings" in record_page and "under 18" in record_page


def test_an_invalid_record_is_shown_again_with_its_errors(web, home):
    answer = web.post("/new/household", data={"csrf_token": token(web), "head_name": "A",
                                             "phone": "12"})
    assert answer.status_code == 422
    assert 'data-msgs-for="phone"' in answer.get_data(as_text=True)
    with Client(home) as d:
        assert list(d.list()) == []


def test_a_child_record_starts_with_the_parents_linked_values(web, home):
    with Client(home) as d:
        hid = d.add("household", household())
        cid = d.add("person", {
            "household_id": hid, "full_name": "Lò Văn Đức", "sex": "male",
            "dob": (TODAY - timedelta(days=400)).isoformat(), "dob_precision": "exact",
            "ethnicity_code": "04", "relationship_to_head": "child",
            "recorded_on": TODAY.isoformat(), "hi_has_card": "no", "vital_status": "alive"})
    html = web.get(f"/r/{cid}").get_data(as_text=True)
    assert 'data-add="growth"' in html and 'data-add="pregnancy"' not in html
    html = web.get(f"/new/growth?parent={cid}&ref=child_id").get_data(as_text=True)
    assert f'value="{(TODAY - timedelta(days=400)).isoformat()}"' in html   # child_dob
    assert re.search(r'<option value="male" selected>', html)               # child_sex
    assert re.search(rf'<option value="{cid}" selected>Lò Văn Đức', html)


def test_search_ignores_diacritics_and_d_with_stroke(web, home):
    with Client(home) as d:
        d.add("household", household(head_name="Đinh Văn Đức"))
        d.add("household", household(head_name="Lý A Sáng"))
    html = web.get("/?q=dinh van duc").get_data(as_text=True)
    assert "Đinh Văn Đức" in html and "Lý A Sáng" not in html.split("data-results")[1]


def test_the_language_switch_is_remembered_in_a_cookie(web):
    assert 'lang="vi"' in web.get("/").get_data(as_text=True)
    answer = web.post("/language", data={"csrf_token": token(web), "lang": "en", "next": "/"})
    assert answer.status_code == 302 and "fieldsync_app_lang=en" in answer.headers["Set-Cookie"]
    page = web.get("/").get_data(as_text=True)
    assert 'lang="en"' in page and "Register a household" in page


def test_sync_offline_says_so_quickly_and_keeps_everything_queued(app, web, home):
    from client_sync.config import NetworkConfig
    from conftest import free_port
    with Client(home) as d:
        d.add("household", household())
        d.store.set_meta(server=f"http://127.0.0.1:{free_port()}")
    job = app.extensions["fieldsync_sync"]
    job.network = NetworkConfig(give_up_after=2, connect_timeout=0.5, backoff_factor=0,
                                backoff_jitter=0)
    assert web.post("/sync", data={"csrf_token": token(web)},
                    headers={"Accept": "application/json"}).status_code == 202
    job.wait(30)
    progress = web.get("/sync/progress").json
    assert progress["outcome"] == "offline" and not progress["running"]
    assert "Không kết nối được máy chủ" in progress["text"] and "1 thay đổi" in progress["text"]
    with Client(home) as d:
        assert d.store.unsynced_count() == 1


def test_a_captive_portals_page_is_said_in_the_pages_language_and_nothing_is_lost(app, web,
                                                                                    home):
    """A village Wi-Fi's sign-in page answers every address with 200 and HTML:
    the sync stops with the library's message, in Vietnamese on a Vietnamese
    page, and the change stays queued."""
    import http.server
    import threading

    class Portal(http.server.BaseHTTPRequestHandler):
        def _page(self):
            body = b"<html><body>Sign in to the Wi-Fi</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _page

        def log_message(self, *args):
            pass

    portal = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    try:
        with Client(home) as d:
            d.add("household", household())
            d.store.set_meta(server=f"http://127.0.0.1:{portal.server_port}")
        job = app.extensions["fieldsync_sync"]
        assert web.post("/sync", data={"csrf_token": token(web)},
                        headers={"Accept": "application/json"}).status_code == 202
        job.wait(30)
        progress = web.get("/sync/progress").json
    finally:
        portal.shutdown()
        portal.server_close()
    assert progress["outcome"] == "error" and not progress["running"]
    assert "Máy chủ gửi câu trả lời không đọc được (HTTP 200)" in progress["text"]
    assert "1 thay đổi" in progress["text"]
    with Client(home) as d:
        assert d.store.unsynced_count() == 1


def test_the_app_command_serves_on_localhost_only(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import client_sync.app as app_module
    from client_sync.cli import cli
    seen = {}
    monkeypatch.setattr(app_module, "serve", lambda data_dir, port, open_browser, echo:
                        seen.update(port=port, open_browser=open_browser))
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "app", "--port", "0",
                                      "--no-browser"], catch_exceptions=False)
    assert result.exit_code == 0 and seen == {"port": 0, "open_browser": False}

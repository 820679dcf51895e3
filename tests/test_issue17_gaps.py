"""Issue 17's Deliver items that had no test of their own: the app's case
page shows a child's latest growth measurement with its z-scores and class,
and the README's health-worker section is built around the app, with its
screenshots present, and the CLI as the second way."""
import re
from datetime import date, timedelta

from client_sync import Client
from conftest import ROOT, household

TODAY = date.today()


def _home(tmp_path):
    with Client(tmp_path / "device") as d:
        d.store.set_meta(user={"username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]},
                         server="http://127.0.0.1:9", token="t")
    return tmp_path / "device"


def test_a_childs_page_shows_the_latest_measurement_with_z_scores_and_class(tmp_path):
    from client_sync.app import create_app

    home = _home(tmp_path)
    dob = (TODAY - timedelta(days=400)).isoformat()
    with Client(home) as d:
        hid = d.add("household", household())
        cid = d.add("person", {
            "household_id": hid, "full_name": "Lò Văn Đức", "sex": "male", "dob": dob,
            "dob_precision": "exact", "ethnicity_code": "04", "relationship_to_head": "child",
            "recorded_on": TODAY.isoformat(), "hi_has_card": "no", "vital_status": "alive"})
        for days_ago, weight in ((30, 8.9), (1, 9.6)):
            d.add("growth", {
                "child_id": cid, "child_dob": dob, "child_sex": "male",
                "child_dob_precision": "exact",
                "measured_on": (TODAY - timedelta(days=days_ago)).isoformat(),
                "weight_kg": weight, "lenhei_cm": 76.0, "position": "lying",
                "oedema_bilateral": False, "referred_to": "none", "counselled": True})
    html = create_app(home).test_client().get(f"/r/{cid}").get_data(as_text=True)
    section = html.split("data-growth", 1)[1].split("</section>", 1)[0]
    assert (TODAY - timedelta(days=1)).isoformat() in section          # the latest one
    assert (TODAY - timedelta(days=30)).isoformat() not in section
    assert re.search(r"WAZ -?\d+(\.\d+)? · HAZ -?\d+(\.\d+)? · WHZ -?\d+(\.\d+)?", section), section
    assert re.search(r'class="class (normal|mam|sam)"', section)


def test_the_readme_health_worker_section_leads_with_the_app_and_its_screenshots():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### For a health worker", 1)[1].split("\n### ", 1)[0]
    app_at, cli_at = section.index("fieldsync app"), section.index("fieldsync login")
    assert app_at < cli_at                                   # the app first, the CLI second
    shots = re.findall(r"\]\((docs/screenshots/app-[^)]+\.png)\)", section)
    assert len(shots) >= 6
    for shot in shots:
        assert (ROOT / shot).stat().st_size > 1000, shot


def test_the_apps_assets_ship_in_the_package_and_no_page_loads_from_elsewhere():
    from client_sync.app import CSP

    app_dir = ROOT / "client_sync" / "app"
    for template in (app_dir / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text), template.name
        for asset in re.findall(r"url_for\('static', filename='([^']+)'\)", text):
            assert (app_dir / "static" / asset).is_file(), asset
    assert "default-src 'none'" in CSP and "http" not in CSP and "script-src 'self';" in CSP

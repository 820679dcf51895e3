"""`fieldsync app` encrypts by default (issue 14 item 7): its sign-in on a
plain data folder asks for a new passphrase and encrypts the folder before
the token is stored; a folder whose session key is gone sends every page to
`/unlock`. The app runs in-process (Flask's test client) against the real
server over HTTP; the folder's files are then read as `strings` would."""
import re
import sqlite3

import pytest

from client_sync import Client
from client_sync.store import keys
from conftest import USERS, household

PASSPHRASE = "mây trắng bay 2026"
NAME = "Hoàng Thị Zebra-Marker"


@pytest.fixture(autouse=True)
def session_dir(private_session_dir):
    return private_session_dir


def csrf(web, path):
    page = web.get(path)
    assert page.status_code == 200, (path, page.status_code, page.headers.get("Location"))
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))[1]


def printable_runs(folder):
    """Every run of 4+ printable bytes in every file of the folder (`strings`),
    and the raw bytes (for UTF-8 names)."""
    raw = b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
    return raw, b"\n".join(re.findall(rb"[\x20-\x7e]{4,}", raw))


def sign_in(web, url, **passphrases):
    return web.post("/sign-in", data={
        "csrf_token": csrf(web, "/sign-in"), "server": url, "username": "hw",
        "password": USERS["hw"]["password"], **passphrases})


def test_the_apps_sign_in_encrypts_the_folder_and_strings_finds_nothing(server_process,
                                                                       tmp_path):
    from client_sync.app import create_app
    folder = tmp_path / "device"
    web = create_app(folder).test_client()
    page = web.get("/sign-in").get_data(as_text=True)
    assert 'name="passphrase"' in page and 'name="passphrase2"' in page
    assert "Mật khẩu dữ liệu mới" in page and "chỉ mất những gì chưa được đồng bộ" in page

    # A passphrase too short, or typed differently twice: refused, nothing sent.
    for first, second in (("short", "short"), (PASSPHRASE, PASSPHRASE + "x")):
        refused = sign_in(web, server_process.url, passphrase=first, passphrase2=second)
        assert refused.status_code == 400
        assert not keys.is_encrypted(folder)
    assert not list(sqlite3.connect(server_process.db).execute(
        "SELECT 1 FROM tokens t JOIN users u ON u.id = t.user_id WHERE u.username = 'hw'"))

    signed = sign_in(web, server_process.url, passphrase=PASSPHRASE, passphrase2=PASSPHRASE)
    assert signed.status_code == 302 and signed.headers["Location"] == "/"
    assert keys.is_encrypted(folder)
    saved = web.post("/new/household", data={"csrf_token": csrf(web, "/new/household"),
                                             **household(head_name=NAME)})
    assert saved.status_code == 302, saved.get_data(as_text=True)[:500]
    assert web.get("/").status_code == 200

    with Client(folder, passphrase=PASSPHRASE) as device:
        token = device.store.get_meta("token")
        assert device.encrypted and token
        assert [r["data"]["head_name"] for r in device.list("household")] == [NAME]
    raw, strings = printable_runs(folder)
    for secret in (token, NAME, "Zebra-Marker", "head_name", "SQLite format 3",
                   USERS["hw"]["password"], PASSPHRASE):
        assert secret.encode() not in raw and secret.encode() not in strings, secret
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(folder / "device.db").execute("SELECT * FROM meta").fetchall()


def test_a_lost_session_key_sends_every_page_to_unlock(server_process, tmp_path,
                                                       monkeypatch):
    from client_sync.app import create_app
    folder = tmp_path / "device"
    app = create_app(folder)
    web = app.test_client()
    assert sign_in(web, server_process.url, passphrase=PASSPHRASE,
                   passphrase2=PASSPHRASE).status_code == 302
    keys.forget(folder)             # the session ended (`fieldsync lock`, a reboot)
    with app.app_context():
        from client_sync.app import locking
        assert locking.held() is None   # a tmpfs kept the key: the app holds nothing

    gone = web.get("/?q=a")
    assert gone.status_code == 302
    assert gone.headers["Location"].startswith("/unlock?next=")
    assert web.get("/sign-in").headers["Location"].startswith("/unlock")
    target = gone.headers["Location"]
    wrong = web.post(target, data={"csrf_token": csrf(web, target), "passphrase": "nope"})
    assert wrong.status_code == 401
    assert "Sai mật khẩu dữ liệu" in wrong.get_data(as_text=True)
    empty = web.post(target, data={"csrf_token": csrf(web, target), "passphrase": ""})
    assert empty.status_code == 400
    assert "Hãy nhập mật khẩu dữ liệu của máy này." in empty.get_data(as_text=True)
    assert web.get("/").status_code == 302
    right = web.post(target, data={"csrf_token": csrf(web, target), "passphrase": PASSPHRASE})
    assert right.status_code == 302 and right.headers["Location"] == "/?q=a"
    assert web.get("/").status_code == 200

    # With no tmpfs for the key, this app process holds the passphrase itself.
    keys.forget(folder)
    monkeypatch.setattr(keys, "session_dir", lambda: None)
    assert web.get("/").status_code == 302
    target = "/unlock?next=/"
    assert web.post(target, data={"csrf_token": csrf(web, target),
                                  "passphrase": PASSPHRASE}).status_code == 302
    assert web.get("/").status_code == 200


def test_a_no_terminal_login_takes_the_passphrase_from_a_second_line(server_process,
                                                                     tmp_path):
    """`fieldsync login` fed by a script: password, then passphrase."""
    from click.testing import CliRunner

    from client_sync.cli import cli

    def login(folder, lines):
        return CliRunner().invoke(cli, ["--data-dir", str(folder), "login", "--server",
                                        server_process.url, "--username", "hw"], input=lines)

    short = tmp_path / "short"
    result = login(short, USERS["hw"]["password"] + "\nshort\n")
    assert result.exit_code == 1 and "at least 8 characters" in result.output
    assert not short.exists()
    folder = tmp_path / "piped"
    result = login(folder, f"{USERS['hw']['password']}\n{PASSPHRASE}\n")
    assert result.exit_code == 0, result.output
    assert "not encrypted" not in result.output and keys.is_encrypted(folder)
    with Client(folder, passphrase=PASSPHRASE) as device:
        token = device.store.get_meta("token")
    raw, strings = printable_runs(folder)
    for secret in (token, USERS["hw"]["password"], PASSPHRASE):
        assert secret.encode() not in raw and secret.encode() not in strings, secret

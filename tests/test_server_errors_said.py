"""The server's refusals a health worker meets are said in their language.

The server answers in English with a stable code; the device says the codes
it knows (`client_sync.errors.SERVER_TEXTS`) in the user's language, on the
CLI and in the app, and keeps the code and status in the English text. Real
server process, real HTTP, the real CLI and app."""
import re

import pytest
from click.testing import CliRunner

from client_sync import Client
from client_sync.cli import cli
from client_sync.errors import ApiError, AuthError
from client_sync.i18n import say
from conftest import USERS, household, run_cli

PASSPHRASE = "mây trắng bay 2026"


@pytest.fixture(autouse=True)
def fieldsync_home(tmp_path, monkeypatch, private_session_dir):
    monkeypatch.setenv("FIELDSYNC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIELDSYNC_BACKOFF_FACTOR", "0")
    for name in ("FIELDSYNC_LANG", "LANGUAGE", "LC_ALL", "LANG"):
        monkeypatch.delenv(name, raising=False)


def fieldsync(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_a_wrong_password_is_said_in_vietnamese_on_the_cli(server_process):
    failed = fieldsync("--lang", "vi", "login", "--unencrypted", "--server", server_process.url,
                       "--username", "hw", input="not-the-password\n")
    assert failed.exit_code == 1
    assert ("Error: Sai tên đăng nhập hoặc mật khẩu. Hãy kiểm tra tên đăng nhập và mật khẩu; "
            "nếu quên mật khẩu, hãy hỏi cán bộ giám sát.") in failed.stderr
    assert "Wrong" not in failed.stderr
    english = fieldsync("login", "--unencrypted", "--server", server_process.url,
                        "--username", "hw", input="not-the-password\n")
    assert ("Error: Wrong username or password. Check the username and password; if you "
            "forgot the password, ask your supervisor.") in english.stderr


def test_a_revoked_sign_in_is_said_in_vietnamese_and_the_record_stays(server_process):
    assert fieldsync("login", "--unencrypted", "--server", server_process.url, "--username",
                     "hw", input=USERS["hw"]["password"] + "\n").exit_code == 0
    assert fieldsync("add", "household", *[f"{k}={v}" for k, v in household().items()]
                     ).exit_code == 0
    run_cli(server_process.db, "user", "disable", "hw")
    failed = fieldsync("--lang", "vi", "sync")
    assert failed.exit_code == 1
    assert "Lần đăng nhập này đã bị thu hồi; hãy đăng nhập lại. Lệnh đăng nhập: " \
           f"fieldsync login --server {server_process.url} --username hw; 1 hồ sơ chưa đồng " \
           "bộ vẫn được giữ an toàn trên máy này. Đến lúc dừng: đã gửi 0 (0 được nhận," \
           in failed.stderr


def test_a_device_taken_by_another_user_is_said_in_the_users_language(server_process,
                                                                      tmp_path):
    folder = tmp_path / "device"
    with Client(folder) as device:
        device.login(server_process.url, "hw", USERS["hw"]["password"])
        device_id = device.device_id
        with pytest.raises(ApiError) as taken:
            device.login(server_process.url, "hw2", USERS["hw2"]["password"])
    # The English text keeps the server's code and status; Vietnamese says it all.
    assert str(taken.value).startswith("This device is registered to another user.")
    assert str(taken.value).endswith("(HTTP 409, device_taken)")
    assert say(taken.value, "vi") == (
        "Máy này đã được đăng ký cho người dùng khác. Quản trị viên phải giải phóng máy "
        "trước (fieldsync-server device release DEVICE_ID); trong lúc chờ, hãy đăng nhập "
        "trên máy của chính bạn. (máy chủ trả lời HTTP 409, device_taken)")

    # The app's sign-in page, in Vietnamese by default, says the same.
    from client_sync.app import create_app
    web = create_app(folder).test_client()
    page = web.get("/sign-in")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))[1]
    answer = web.post("/sign-in", data={
        "csrf_token": csrf, "server": server_process.url, "username": "hw2",
        "password": USERS["hw2"]["password"], "passphrase": PASSPHRASE,
        "passphrase2": PASSPHRASE})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "Máy này đã được đăng ký cho người dùng khác" in text
    assert "registered to another user" not in text
    run_cli(server_process.db, "device", "release", device_id)
    assert web.post("/sign-in", data={
        "csrf_token": csrf, "server": server_process.url, "username": "hw2",
        "password": USERS["hw2"]["password"], "passphrase": PASSPHRASE,
        "passphrase2": PASSPHRASE}).status_code == 302


def test_a_code_the_device_does_not_know_keeps_the_servers_text():
    from client_sync.transport import Transport

    class Answer:
        status_code, reason = 400, "Bad Request"
        content = b'{"error": "invalid_cursor", "message": "The cursor is not one of ours."}'

    with pytest.raises(ApiError) as refused:
        Transport("http://127.0.0.1:9", None)._decode(Answer())
    assert say(refused.value, "vi") == ("The cursor is not one of ours. (máy chủ trả lời "
                                            "HTTP 400, invalid_cursor)")
    Answer.status_code, Answer.content = 401, b'{"error": "token_expired", "message": "x"}'
    with pytest.raises(AuthError) as expired:
        Transport("http://127.0.0.1:9", None)._decode(Answer())
    assert say(expired.value, "vi") == "Lần đăng nhập này đã hết hạn; hãy đăng nhập lại."

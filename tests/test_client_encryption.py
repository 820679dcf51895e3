"""Device data encrypted at rest (issue 14 item 7): without the passphrase the
file holds no name and no token; a wrong passphrase is a clear error; a plain
folder is migrated on the first passphrase; the session keeps the key, not
the passphrase, in a private tmpfs file that expires."""
import json
import os
import sqlite3
import stat

import pytest

from client_sync import Client
from client_sync.store import keys
from client_sync.store.keys import PassphraseNeeded, WrongPassphrase

USER = {"username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]}
TOKEN = "tok-Zq8vS3cr3tT0ken-4f1d"
NAME = "Lý A Sáng Encrypted"
HOUSEHOLD = {"head_name": NAME, "poverty_status": "poor", "registered_on": "2025-05-30",
             "status": "active"}


@pytest.fixture(autouse=True)
def session_dir(private_session_dir):
    return private_session_dir


def fill(device, n=20):
    device.store.set_meta(user=USER, server="http://127.0.0.1:9", token=TOKEN)
    return [device.add("household", {**HOUSEHOLD, "head_name": f"{NAME} {i}"}) for i in range(n)]


def every_byte(folder):
    """Every file of the data folder, as `strings` would read them."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())


def test_without_the_passphrase_the_files_hold_no_name_and_no_token(tmp_path):
    folder = tmp_path / "fs"
    with Client(folder, passphrase="correct horse battery") as device:
        ids = fill(device)
        assert device.encrypted
        raw = every_byte(folder)  # while open: the WAL too
    raw += every_byte(folder)
    for secret in (NAME, TOKEN, "head_name", ids[0], "SQLite format 3"):
        assert secret.encode() not in raw, secret
    # The plain sqlite3 module cannot read it at all.
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(folder / "device.db").execute("SELECT * FROM meta").fetchall()
    # With the passphrase everything is there.
    with Client(folder, passphrase="correct horse battery") as device:
        assert device.get(ids[0])["data"]["head_name"] == f"{NAME} 0"
        assert device.store.get_meta("token") == TOKEN


def test_a_wrong_or_missing_passphrase_is_a_clear_error_and_changes_nothing(tmp_path):
    folder = tmp_path / "fs"
    with Client(folder, passphrase="right one") as device:
        fill(device, 3)
        device.lock()
    before = (folder / "device.db").read_bytes()
    with pytest.raises(WrongPassphrase, match="Wrong passphrase"):
        Client(folder, passphrase="wrong one")
    with pytest.raises(PassphraseNeeded, match="encrypted"):
        Client(folder)
    assert (folder / "device.db").read_bytes() == before


def test_a_plain_folder_is_migrated_on_the_first_passphrase(tmp_path):
    folder = tmp_path / "fs"
    with Client(folder) as device:
        ids = fill(device, 5)
        device_id = device.device_id
        assert not device.encrypted
    assert NAME.encode() in every_byte(folder)
    with Client(folder, passphrase="new pass phrase") as device:
        assert device.encrypted and device.device_id == device_id
        assert [r["id"] for r in device.list()] == sorted(ids)
        assert device.store.unsynced_count() == 5 and device.store.integrity_check() == "ok"
    raw = every_byte(folder)
    assert NAME.encode() not in raw and TOKEN.encode() not in raw
    assert not (folder / "device.db.encrypting").exists()
    assert stat.S_IMODE(os.stat(folder / keys.KEY_FILE).st_mode) == 0o600
    assert "salt" in json.loads((folder / keys.KEY_FILE).read_text())


def test_an_interrupted_migration_resumes(tmp_path):
    folder = tmp_path / "fs"
    with Client(folder) as device:
        ids = fill(device, 3)
    # The crash came after encryption.json was written, before the rename.
    keys.new_params("pass phrase", folder)
    with Client(folder, passphrase="pass phrase") as device:
        assert device.encrypted and len(list(device.list())) == len(ids)
    assert NAME.encode() not in every_byte(folder)


def test_the_session_keeps_the_key_privately_until_it_expires_or_is_locked(tmp_path, session_dir):
    folder = tmp_path / "fs"
    with Client(folder, passphrase="typed once") as device:
        fill(device, 1)
        assert device.remember_key()
    kept = list((session_dir / "fieldsync").iterdir())
    assert len(kept) == 1 and stat.S_IMODE(os.stat(kept[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(session_dir / "fieldsync").st_mode) == 0o700
    assert b"typed once" not in kept[0].read_bytes()  # the key, never the passphrase
    with Client(folder) as device:  # no passphrase: the session's key
        assert device.encrypted and device.user["username"] == "hw"
        assert device.lock()
    with pytest.raises(PassphraseNeeded):
        Client(folder)
    with Client(folder, passphrase="typed once") as device:
        device.remember_key(hours=-1)  # already expired: nothing kept
    with pytest.raises(PassphraseNeeded):
        Client(folder)


def test_the_environment_passphrase_and_the_explicit_plain_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDSYNC_PASSPHRASE", "from the environment")
    with Client(tmp_path / "enc") as device:
        assert device.encrypted
    with Client(tmp_path / "plain", encrypt=False) as device:
        assert not device.encrypted
    assert not (tmp_path / "plain" / keys.KEY_FILE).exists()


def test_a_damaged_encrypted_file_refuses_writes_and_a_wrong_key_is_not_called_damage(tmp_path):
    from client_sync.store import StoreDamaged
    from test_client_integrity import corrupt

    folder = tmp_path / "fs"
    with Client(folder, passphrase="pass phrase") as device:
        fill(device, 300)
    corrupt(folder / "device.db", 0.5)
    before = (folder / "device.db").read_bytes()
    with Client(folder, passphrase="pass phrase") as device:
        assert device.store.damaged
        with pytest.raises(StoreDamaged, match="fieldsync doctor"):
            device.add("household", HOUSEHOLD)
    assert (folder / "device.db").read_bytes() == before
    with pytest.raises(WrongPassphrase):
        Client(folder, passphrase="other")


def test_the_cli_encrypts_asks_and_locks(tmp_path, monkeypatch, session_dir):
    from click.testing import CliRunner

    from client_sync.cli import cli

    folder = tmp_path / "fs"
    monkeypatch.setenv("FIELDSYNC_HOME", str(folder))
    with Client(folder) as device:
        fill(device, 2)
    runner = CliRunner()
    # No terminal and no FIELDSYNC_PASSPHRASE: refused, nothing changed.
    result = runner.invoke(cli, ["encrypt"])
    assert result.exit_code != 0 and "No passphrase" in result.stderr
    assert not keys.is_encrypted(folder)
    monkeypatch.setenv("FIELDSYNC_PASSPHRASE", "cli pass phrase")
    result = runner.invoke(cli, ["encrypt"])
    assert result.exit_code == 0, result.output
    assert "now encrypted" in result.output and keys.is_encrypted(folder)
    assert NAME.encode() not in every_byte(folder)
    monkeypatch.delenv("FIELDSYNC_PASSPHRASE")
    # Typed once: the session's key opens it for the next commands.
    assert runner.invoke(cli, ["status"]).exit_code == 0
    assert "Locked" in runner.invoke(cli, ["lock"]).output
    result = runner.invoke(cli, ["status"])
    assert result.exit_code != 0 and "encrypted" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.setenv("FIELDSYNC_PASSPHRASE", "not it")
    result = runner.invoke(cli, ["status"])
    assert result.exit_code != 0 and "Wrong passphrase" in result.stderr


def test_a_new_cli_login_is_encrypted_with_the_environment_passphrase(
        server_process, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from client_sync.cli import cli

    monkeypatch.setenv("FIELDSYNC_PASSPHRASE", "login pass phrase")
    folder = tmp_path / "fs"
    result = CliRunner().invoke(cli, ["--data-dir", str(folder), "login", "--server",
                                      server_process.url, "--username", "hw"],
                                input="hw-pass-123\n")
    assert result.exit_code == 0, result.output
    assert keys.is_encrypted(folder)
    assert b"hw-pass" not in every_byte(folder)
    with Client(folder) as device:
        token = device.store.get_meta("token")
    assert token and token.encode() not in every_byte(folder)
    # --unencrypted on a new folder is the explicit plain mode.
    plain = tmp_path / "plain"
    result = CliRunner().invoke(cli, ["--data-dir", str(plain), "login", "--server",
                                      server_process.url, "--username", "hw", "--unencrypted"],
                                input="hw-pass-123\n")
    assert result.exit_code == 0, result.output
    assert not keys.is_encrypted(plain)
    # No terminal and no FIELDSYNC_PASSPHRASE: plain, and the login says so.
    monkeypatch.delenv("FIELDSYNC_PASSPHRASE")
    bare = tmp_path / "bare"
    result = CliRunner().invoke(cli, ["--data-dir", str(bare), "login", "--server",
                                      server_process.url, "--username", "hw"],
                                input="hw-pass-123\n")
    assert result.exit_code == 0, result.output
    assert "not encrypted" in result.stderr and not keys.is_encrypted(bare)


def test_a_damaged_plain_folder_is_salvaged_before_it_is_encrypted(tmp_path):
    from test_client_integrity import corrupt, filled_device

    from client_sync.store.salvage import salvage

    folder = tmp_path / "fs"
    filled_device(folder, n=300)
    corrupt(folder / "device.db", 0.5)
    with Client(folder, passphrase="pass phrase") as device:
        assert device.store.damaged and not device.encrypted  # not migrated while damaged
        key = device.store.key
    salvage(folder / "device.db", key)
    with Client(folder, passphrase="pass phrase") as device:
        assert device.encrypted and device.store.damaged is None
        assert device.store.unsynced_count() > 0
    # The new device.db is encrypted; the kept damaged copy is as it was (plain).
    live = b"".join(p.read_bytes() for p in folder.iterdir() if ".damaged-" not in p.name)
    assert "Lý A Sáng".encode() not in live
    assert [p for p in folder.iterdir() if ".damaged-" in p.name]

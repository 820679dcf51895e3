"""`fieldsync doctor` (issue 14 item 6): a real, encrypted device.db with
acknowledged records, a sent-but-unanswered batch and queued changes is
corrupted in the middle (several offsets); doctor salvages what it can read
into a fresh database, says what it could not, keeps the damaged file, and
the next sync against the real server sends every salvaged change exactly
once (a frozen batch keeps its id: the server replays its answer)."""
import sqlite3

import pytest
from click.testing import CliRunner

from client_sync import Client
from client_sync.cli import cli
from client_sync.config import APP_VERSION
from client_sync.transport import Transport
from conftest import household
from test_client_integrity import corrupt

PASS = "doctor pass phrase"


def server_rows(db):
    con = sqlite3.connect(db)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute(
            "SELECT id, seq, json_extract(data, '$.head_name') FROM records")}
    finally:
        con.close()


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_doctor_salvages_and_the_next_sync_sends_each_change_once(
        server_process, tmp_path, monkeypatch, fraction):
    monkeypatch.setenv("FIELDSYNC_PASSPHRASE", PASS)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("FIELDSYNC_GIVE_UP_AFTER", "10")
    folder = tmp_path / "fs"
    names = {}
    with Client(folder) as device:
        assert device.encrypted
        device.login(server_process.url, "hw", "hw-pass-123")
        for i in range(150):
            rid = device.add("household", household(head_name=f"Synced {i}"))
            names[rid] = f"Synced {i}"
        assert device.sync().pushed == 150
        for i in range(150):
            rid = device.add("household", household(head_name=f"Queued {i}"))
            names[rid] = f"Queued {i}"
        # A batch the server applies but whose answer never arrives.
        batch_id, body, count = device.store.make_batch(100, 10 ** 7, APP_VERSION)
        transport = Transport(server_process.url, device.store.get_meta("token"),
                              device.network)
        transport.push(body)
        transport.close()
        assert device.store.pending_batch()[0] == batch_id
        forms_before = len(device.store.load_forms())
        assert forms_before
    before = server_rows(server_process.db)
    assert len(before) == 250

    corrupt(folder / "device.db", fraction)
    damaged_bytes = (folder / "device.db").read_bytes()
    with Client(folder) as device:
        assert device.store.damaged

    result = CliRunner().invoke(cli, ["--data-dir", str(folder), "doctor"])
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output and "Salvaged" in result.output
    assert "Lost:" in result.output  # what could not be read is said
    kept = [p for p in folder.iterdir() if ".damaged-" in p.name and p.name.endswith("Z")]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes

    with Client(folder) as device:
        assert device.store.damaged is None and device.encrypted
        queued = {r["id"] for r in device.list() if r["sync_state"] in ("pending", "sent")}
        frozen = device.store.pending_batch()
        report = device.sync()
        assert device.store.unsynced_count() == 0
        local = {r["id"]: r["data"]["head_name"] for r in device.list()}
        assert len(device.store.load_forms()) == forms_before  # fetched again whole
    after = server_rows(server_process.db)
    # Nothing applied twice: every record the server had keeps its seq.
    assert all(after[rid] == before[rid] for rid in before)
    # Every salvaged queued change reached the server, with its value.
    assert queued <= set(after)
    assert all(after[rid][1] == names[rid] for rid in queued)
    if frozen is not None:
        assert frozen[0] == batch_id  # the same batch id: the server replayed it
    # Nothing invented: every server record is one this device added.
    assert set(after) <= set(names)
    # The full pull brought back every record the server holds.
    assert set(local) == set(after)
    assert report.pushed >= len(queued - set(before))


def test_doctor_on_a_healthy_database_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("FIELDSYNC_PASSPHRASE", raising=False)
    Client(tmp_path / "fs").close()
    before = (tmp_path / "fs" / "device.db").read_bytes()
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "fs"), "doctor"])
    assert result.exit_code == 0 and "healthy" in result.output
    assert (tmp_path / "fs" / "device.db").read_bytes() == before

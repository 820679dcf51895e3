"""The device never accepts what it cannot keep (issue 14 item 6) and keeps
its files private (issue 14 item 5, issue 17): a real device.db corrupted in
the middle refuses every write, through the library and the CLI, and changes
nothing; the data folder is 0700 and device.db (-wal, -shm) 0600."""
import os
import sqlite3
import stat

import pytest
from click.testing import CliRunner

from client_sync import Client
from client_sync.cli import cli
from client_sync.store import Store, StoreDamaged, uuid7

HH = {"form": "household", "form_version": 1, "area": "QN.LM.03"}
USER = {"username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]}
HOUSEHOLD = {"head_name": "Lý A Sáng", "poverty_status": "poor",
             "registered_on": "2025-05-30", "status": "active"}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def filled_device(folder, n=600):
    """A real device folder: a logged-in user (no server needed to add) and
    `n` records queued through the library, closed (WAL checkpointed)."""
    with Client(folder) as device:
        device.store.set_meta(user=USER, server="http://127.0.0.1:9", token="tok-secret-abc")
        device.store.conn.execute("PRAGMA synchronous=OFF")  # setup speed only
        ids = [device.add("household", {**HOUSEHOLD, "head_name": f"Lý A Sáng {i}"})
               for i in range(n)]
    return ids


def corrupt(path, page_fraction=0.5, page_size=4096):
    """Overwrite one whole page in the middle of the file with garbage."""
    size = os.path.getsize(path)
    page = int(size // page_size * page_fraction)
    with open(path, "r+b") as fh:
        fh.seek(page * page_size)
        fh.write(bytes((i * 37 + 11) % 256 for i in range(page_size)))
    return page


def test_the_data_folder_and_database_are_created_private(tmp_path):
    folder = tmp_path / "home" / "fs"
    with Client(folder) as device:
        device.store.set_meta(user=USER)
        assert mode(folder) == 0o700
        for name in ("device.db", "device.db-wal", "device.db-shm"):
            assert mode(folder / name) == 0o600, name


def test_loose_permissions_are_tightened_on_open(tmp_path):
    folder = tmp_path / "fs"
    Client(folder).close()
    os.chmod(folder, 0o755)
    os.chmod(folder / "device.db", 0o644)
    with Client(folder):
        assert mode(folder) == 0o700
        assert mode(folder / "device.db") == 0o600
        assert mode(folder / "device.db-wal") == 0o600


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_a_database_corrupted_in_the_middle_refuses_every_write(tmp_path, fraction):
    folder = tmp_path / "fs"
    ids = filled_device(folder)
    db = folder / "device.db"
    corrupt(db, fraction)
    before = db.read_bytes()
    with Client(folder) as device:
        assert device.store.damaged
        with pytest.raises(StoreDamaged, match="damaged.*fieldsync doctor.*nothing was changed"):
            device.add("household", HOUSEHOLD)
        with pytest.raises(StoreDamaged):
            device.store.set_meta(cursor="x")
        with pytest.raises(StoreDamaged):
            device.store.local_change(ids[0], user="hw", data={"head_name": "Other"})
    assert db.read_bytes() == before  # nothing was written


def test_the_cli_says_damaged_and_not_untouched(tmp_path, monkeypatch):
    folder = tmp_path / "fs"
    filled_device(folder)
    corrupt(folder / "device.db")
    before = (folder / "device.db").read_bytes()
    monkeypatch.setenv("FIELDSYNC_HOME", str(folder))
    result = CliRunner().invoke(cli, ["add", "household", "head_name=Lò Thị Mai",
                                      "poverty_status=poor", "registered_on=2025-05-30",
                                      "status=active"])
    assert result.exit_code != 0
    assert "damaged" in result.stderr and "fieldsync doctor" in result.stderr
    assert "untouched" not in result.stderr
    assert (folder / "device.db").read_bytes() == before


def test_damage_found_during_a_write_marks_the_store_and_refuses_the_rest(tmp_path):
    path = tmp_path / "d.db"
    store = Store(path)
    store.conn.execute("PRAGMA synchronous=OFF")
    for i in range(400):
        store.local_change(uuid7(), user="hw", data={"head_name": f"A {i}"}, create=HH)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert store.damaged is None
    # The file is damaged under the open connection (a failing disk), whose
    # page cache is dropped so the next reads come from the file.
    corrupt(path, 0.5)
    store.conn.execute("PRAGMA cache_size=0")
    with pytest.raises(StoreDamaged, match="fieldsync doctor"):
        with store.transaction():  # a write that reads every record on its way
            store.conn.execute("SELECT (SELECT MAX(state) FROM records),"
                               " (SELECT MAX(fields) FROM outbox)").fetchone()
            store._set_meta("cursor", "should-not-stay")
    assert store.damaged
    with pytest.raises(StoreDamaged):
        store.set_meta(cursor="x")
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone() is None


def test_a_healthy_database_passes_the_check(tmp_path):
    filled_device(tmp_path / "fs", n=50)
    with Client(tmp_path / "fs") as device:
        assert device.store.damaged is None and device.store.integrity_check() == "ok"

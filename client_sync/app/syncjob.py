"""The app's Sync button: one sync at a time, in a thread, with its progress.

The page asks for the progress every few hundred milliseconds; the thread
opens its own `Client` (its own SQLite connection). A server that cannot be
reached fails within seconds (`APP_NETWORK`: a short connect timeout and give-up
time), and every change stays queued, as with any failed sync.

Conflicts: a change answered `conflict` lost to a newer edit on the server.
The device then holds the server's value; the value typed here is kept by the
app before the sync (`conflicts` in the device's meta, by record and field) so
the record's page can show both, until the record is synced without conflict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time

from ..client import Client
from ..config import NetworkConfig
from ..errors import AuthError, NotLoggedIn, ServerUnreachable, SyncError
from ..i18n import say

CONFLICTS_META = "app_conflicts"


def app_network():
    """The environment's network settings, but failing fast when nothing answers:
    a health worker waits at the screen, and every change stays queued anyway."""
    config = NetworkConfig.from_env()
    if not os.environ.get("FIELDSYNC_GIVE_UP_AFTER"):
        config = dataclasses.replace(config, give_up_after=10.0)
    if not os.environ.get("FIELDSYNC_CONNECT_TIMEOUT"):
        config = dataclasses.replace(config, connect_timeout=2.0)
    return config


@dataclasses.dataclass
class Progress:
    running: bool = False
    phase: str = ""          # push, pull
    done: int = 0
    total: int | None = None
    outcome: str = ""        # ok, offline, login, error
    detail: str = ""         # the library's message, in the page's language, for `error`
    report: dict | None = None
    queued: int = 0
    finished: float = 0.0


class SyncJob:
    """The one sync of this app process."""

    def __init__(self, data_dir, network, lang_of):
        self.data_dir, self.network, self.lang_of = data_dir, network, lang_of
        self.lock = threading.Lock()
        self.progress = Progress()
        self.thread = None

    def snapshot(self):
        with self.lock:
            return dataclasses.replace(self.progress)

    def start(self, lang="en", passphrase=None):
        """Start a sync unless one runs; returns whether one started.

        :param passphrase: of an encrypted folder whose key has no session
            file (the app holds it in memory: app/locking.py)."""
        with self.lock:
            if self.progress.running:
                return False
            self.progress = Progress(running=True)
        self.thread = threading.Thread(target=self._run, args=(lang, passphrase), daemon=True,
                                       name="fieldsync-app-sync")
        self.thread.start()
        return True

    def wait(self, timeout=None):
        if self.thread is not None:
            self.thread.join(timeout)

    def _update(self, **kw):
        with self.lock:
            for key, value in kw.items():
                setattr(self.progress, key, value)

    def _run(self, lang, passphrase=None):
        outcome, detail, report = "ok", "", None
        client = None
        try:
            client = Client(self.data_dir, self.network, lang=lang, passphrase=passphrase)
            typed = _typed_values(client)

            def progress(phase, done, total):
                self._update(phase=phase, done=done, total=total)
            try:
                report = dataclasses.asdict(client.sync(progress=progress))
            finally:
                _remember_conflicts(client, typed)
        except (AuthError, NotLoggedIn):
            outcome = "login"
        except ServerUnreachable:
            outcome = "offline"
        except SyncError as exc:
            outcome, detail = "error", say(exc, lang)
        except Exception as exc:  # noqa: BLE001  a bug: said on the page, never a crash
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"
        finally:
            queued = client.store.unsynced_count() if client else 0
            if client:
                client.close()
            self._update(running=False, outcome=outcome, detail=detail, report=report,
                         queued=queued, finished=time.time())


def _typed_values(client):
    """The values typed on this device and not yet answered, by record, before a sync."""
    rows = client.store.conn.execute("SELECT record_id, fields FROM outbox").fetchall()
    return {record_id: {name: f["value"] for name, f in json.loads(fields).items()}
            for record_id, fields in rows}


def _remember_conflicts(client, typed):
    """Keep both values of each field whose change lost (answered `conflict`);
    forget those of records no longer in conflict."""
    kept = client.store.get_meta(CONFLICTS_META) or {}
    kept = {rid: v for rid, v in kept.items()
            if (r := client.store.get(rid)) and r["sync_state"] == "conflict"}
    for record_id, mine in typed.items():
        record = client.store.get(record_id)
        if not record or record["sync_state"] != "conflict":
            continue
        lost = [{"field": name, "mine": value, "kept": record["data"].get(name)}
                for name, value in mine.items() if record["data"].get(name) != value]
        if lost:
            kept[record_id] = lost
    client.store.set_meta(**{CONFLICTS_META: kept})


def conflicts_of(client, record_id):
    """[{field, mine, kept}] of a record in conflict, as the app saw them."""
    record = client.store.get(record_id)
    if not record or record["sync_state"] != "conflict":
        return []
    return (client.store.get_meta(CONFLICTS_META) or {}).get(record_id, [])

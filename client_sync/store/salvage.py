"""``fieldsync doctor``: salvage a damaged ``device.db`` into a fresh one.

Every table is read row by row in rowid order, straight from its b-tree
(never through an index). A read that fails skips ahead, doubling the jump,
until rows can be read again, so one bad page costs the rows on it and no
more. What was read goes into a fresh store (same key, same layout) in one
transaction:

- ``meta`` as it was (device id, login, clock), except the pull cursor,
  which is cleared: the next sync pulls everything again and so brings back
  any record whose row was lost. The clock is moved past every clock read.
- ``batches`` byte for byte, with their batch ids, so the server's batch-id
  replay answers a batch it already applied: each change counts once.
- ``outbox`` entries; one whose batch was lost is queued again (its changes
  carry the same clocks, which the server's merge takes once).
- ``records``; an entry whose record was lost gets its record back from the
  entry, and a record still waiting for the server (pending, sent, refused)
  whose entry was lost is queued again from its own fields.
- ``forms``, and the next sync fetches them all again.

The damaged file is kept beside it as ``device.db.damaged-<UTC time>`` (with
its -wal and -shm) and the fresh one takes its name: a crash at any point
leaves either the damaged file in place (doctor runs again) or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from schemas.clock import Clock

from .database import DB_ERRORS, _dumps, connect, private_files

TABLES = ("meta", "batches", "outbox", "records", "forms")
_PAGE = 200


def read_table(conn, table):
    """``(rows, gaps)``: every row of ``table`` that can be read, and how many
    unreadable stretches were skipped (-1: the table could not be read at all)."""
    rows, gaps, last = [], 0, -(2 ** 63)
    sql = f"SELECT rowid AS rowid_, * FROM {table} NOT INDEXED WHERE rowid > ? ORDER BY rowid LIMIT ?"
    try:
        conn.execute(f"SELECT * FROM {table} NOT INDEXED LIMIT 0").fetchall()
    except DB_ERRORS:
        return [], -1
    while True:
        try:
            page = conn.execute(sql, (last, _PAGE)).fetchall()
        except DB_ERRORS:
            page = None
        if page is None:  # somewhere in the next _PAGE rows: one at a time, then skip
            try:
                page = conn.execute(sql, (last, 1)).fetchall()
            except DB_ERRORS:
                page = None
        if page is None:
            gaps += 1
            jump, found = 1, None
            while jump < 2 ** 62 and found is None:
                start = last + jump
                if start >= 2 ** 63 - 1:
                    break
                try:
                    found = conn.execute(sql, (start, 1)).fetchall()
                except DB_ERRORS:
                    jump *= 2
            if not found:
                return rows, gaps
            page = found
        if not page:
            return rows, gaps
        for row in page:
            rows.append({k: row[k] for k in row.keys() if k != "rowid_"})
        last = page[-1]["rowid_"]


def _loads(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return ...


def salvage(path, key=None, now=None) -> dict:
    """Salvage the store at ``path`` into a fresh one that takes its place.

    :returns: a report: ``{"saved": {table: rows}, "unreadable": {table: gaps},
        "requeued", "rebuilt_records", "lost_meta": [keys], "kept": path}``.
    """
    path = Path(path)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    fresh = path.with_name(f"{path.name}.salvaging")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{fresh}{suffix}")

    old = connect(path, key)
    report = {"saved": {}, "unreadable": {}, "requeued": 0, "rebuilt_records": 0,
              "lost_meta": [], "kept": str(kept)}
    data = {}
    try:
        old.execute("PRAGMA query_only = 1")
        for table in TABLES:
            rows, gaps = read_table(old, table)
            data[table] = rows
            if gaps:
                report["unreadable"][table] = gaps
    finally:
        old.close()

    from . import Store  # here: Store builds on this package's modules

    store = Store(fresh, key=key)
    try:
        _rebuild(store, data, report)
    finally:
        store.close()
    for suffix in ("-wal", "-shm"):  # the fresh store's WAL is checkpointed by the close
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{fresh}{suffix}")
    # Keep the damaged file (hard links: the name device.db never disappears).
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.link(f"{path}{suffix}", f"{kept}{suffix}")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    os.replace(fresh, path)
    private_files(path)
    return report


def _rebuild(store, data, report):
    conn = store.conn
    meta = {}
    for row in data["meta"]:
        value = _loads(row.get("value"))
        if isinstance(row.get("key"), str) and value is not ...:
            meta[row["key"]] = value
    for needed in ("device_id", "token", "user", "server", "hlc"):
        if needed not in meta:
            report["lost_meta"].append(needed)
    with store.transaction():
        if "device_id" not in meta:
            meta["device_id"] = store.device_id  # a new one: the old was unreadable
        meta["cursor"] = None  # pull everything again: brings back lost records
        meta.pop("resyncing", None)
        # Fetch the form definitions again at the next sync (some may be lost).
        meta.pop("forms_sha256", None)
        meta.pop("forms_etag", None)
        for name, value in meta.items():
            store._set_meta(name, value)
        device = meta["device_id"]
        username = (meta.get("user") or {}).get("username", "") if isinstance(
            meta.get("user"), dict) else ""
        clocks = []

        for row in data["forms"]:
            with contextlib.suppress(*DB_ERRORS, TypeError):
                conn.execute("INSERT OR REPLACE INTO forms (id, version, definition) "
                             "VALUES (?, ?, ?)", (row["id"], row["version"], row["definition"]))
        saved = {"meta": len(meta), "forms": len(data["forms"])}

        batches = set()
        for row in data["batches"]:
            try:
                conn.execute("INSERT INTO batches (batch_id, position, body, count, created_at) "
                             "VALUES (?, ?, ?, ?, ?)", (row["batch_id"], row["position"],
                                                        row["body"], row["count"],
                                                        row["created_at"]))
                batches.add(row["batch_id"])
            except (*DB_ERRORS, KeyError):
                continue
        saved["batches"] = len(batches)

        records = {}
        for row in data["records"]:
            state = _loads(row.get("state"))
            if not isinstance(state, dict) or state.get("id") != row.get("id"):
                continue
            records[row["id"]] = row
            for reg in list(state.get("fields", {}).values()) + [state.get("deleted") or {}]:
                if isinstance(reg, dict) and isinstance(reg.get("hlc"), str):
                    clocks.append(reg["hlc"])

        entries = {}
        for row in data["outbox"]:
            fields = _loads(row.get("fields"))
            deleted = _loads(row.get("deleted")) if row.get("deleted") is not None else None
            if not isinstance(fields, dict) or deleted is ...:
                continue
            entry = dict(row)
            if entry.get("batch_id") and entry["batch_id"] not in batches:
                entry.update(batch_id=None, sent_seq=None, sent=None)  # its batch was lost
                report["requeued"] += 1
            entries[row["record_id"]] = entry
            clocks += [f["clock"] for f in fields.values() if isinstance(f, dict)]
            if isinstance(deleted, dict):
                clocks.append(deleted.get("clock"))

        position = max([e["position"] for e in entries.values()] + [0])
        for record_id, row in records.items():
            if record_id in entries or row["sync_state"] in ("acknowledged", "conflict"):
                continue
            # Still waiting for the server, but its outbox entry was lost:
            # queue this device's own values again (the server takes each once).
            state = json.loads(row["state"])
            fields = {name: {"value": reg["value"], "clock": reg["hlc"], "base": reg.get("base")}
                      for name, reg in state["fields"].items() if reg.get("device") == device}
            tomb = state.get("deleted")
            deleted = ({"value": True, "clock": tomb["hlc"], "seen": tomb.get("base") or {}}
                       if tomb and tomb.get("device") == device else None)
            if not fields and not deleted:
                continue
            position += 1
            entries[record_id] = {
                "record_id": record_id, "position": position, "form": row["form"],
                "form_version": row["form_version"], "area": row["area"],
                "fields": _dumps(fields), "deleted": _dumps(deleted) if deleted else None,
                "edit_seq": 1, "batch_id": None, "sent_seq": None, "sent": None, "held": None}
            row["sync_state"] = "pending"
            report["requeued"] += 1

        for record_id, entry in entries.items():
            if record_id not in records:
                records[record_id] = _record_from_entry(entry, device, username)
                report["rebuilt_records"] += 1
            elif entry["batch_id"] is None and records[record_id]["sync_state"] == "sent":
                records[record_id]["sync_state"] = "pending"
            conn.execute(
                "INSERT INTO outbox (record_id, position, form, form_version, area, fields,"
                " deleted, edit_seq, batch_id, sent_seq, sent, held) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?)",
                tuple(entry[k] for k in ("record_id", "position", "form", "form_version", "area",
                                         "fields", "deleted", "edit_seq", "batch_id", "sent_seq",
                                         "sent", "held")))
        for row in records.values():
            conn.execute(
                "INSERT INTO records (id, form, form_version, area, state, deleted, sync_state,"
                " errors, warnings, pull_gen, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                tuple(row.get(k) for k in ("id", "form", "form_version", "area", "state",
                                           "deleted", "sync_state", "errors", "warnings"))
                + (row.get("pull_gen") or 0, row.get("updated_at") or _now()))
        saved.update(outbox=len(entries), records=len(records))
        report["saved"] = saved

        # The clock never goes back: past every clock read anywhere.
        clock = Clock(device, meta.get("hlc"))
        for seen in clocks:
            if isinstance(seen, str):
                with contextlib.suppress(Exception):
                    clock.observe(seen)
        store._set_meta("hlc", clock.now())


def _record_from_entry(entry, device, username):
    fields = json.loads(entry["fields"])
    deleted = json.loads(entry["deleted"]) if entry["deleted"] else None
    state = {"id": entry["record_id"], "form": entry["form"], "form_version": entry["form_version"],
             "area": entry["area"], "deleted": None,
             "fields": {name: {"value": f["value"], "hlc": f["clock"], "device": device,
                               "user": username, "base": f.get("base"), "origin": None}
                        for name, f in fields.items()}}
    if deleted:
        state["deleted"] = {"value": True, "hlc": deleted["clock"], "device": device,
                            "user": username, "base": deleted.get("seen") or {}, "origin": None}
    return {"id": entry["record_id"], "form": entry["form"], "form_version": entry["form_version"],
            "area": entry["area"], "state": _dumps(state), "deleted": int(bool(deleted)),
            "sync_state": "sent" if entry["batch_id"] else "pending", "errors": None,
            "warnings": None, "pull_gen": 0, "updated_at": _now()}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

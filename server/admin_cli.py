"""`fieldsync-server device release` and `fieldsync-server audit export`.

Admin commands on the server machine (whoever can run them can read the
database file anyway); each is itself audited as user `cli`.
"""
import csv
import json
import os

import click

from . import auth, migrations
from .db import connect, write_transaction

AUDIT_COLUMNS = ["id", "at", "username", "action", "details"]


def _open(ctx):
    db = connect(ctx.obj["db_path"])
    if migrations.current_version(db) < migrations.latest_version():
        raise click.ClickException(
            f"The database {ctx.obj['db_path']} is not initialised (or is older than this "
            "server); run `fieldsync-server init` first.")
    return db


@click.group()
def device():
    """Devices: release one for another user."""


@device.command("release")
@click.argument("device_id")
@click.pass_context
def device_release(ctx, device_id):
    """Free DEVICE_ID for another user: its tokens are revoked and the next
    user to sign in on it owns it."""
    try:
        owner = auth.release_device(_open(ctx), device_id, by="cli")
    except auth.UserError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"Released {device_id}" + (f" (was {owner}'s)" if owner else "")
               + "; the next user to sign in on it owns it.")


@click.group()
def audit():
    """The audit log: who did what, when, how many (no field values)."""


@audit.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The file to write (it must not exist).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="csv or jsonl; by default from the file's extension, else jsonl.")
@click.option("--since", default=None, help="Only rows at or after this ISO time.")
@click.pass_context
def audit_export(ctx, out, fmt, since):
    """Write the audit log to FILE, oldest first (readable only by its owner)."""
    fmt = fmt or ("csv" if out.lower().endswith(".csv") else "jsonl")
    db = _open(ctx)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{out} exists; choose a new file name.") from None
    count = 0
    sql = "SELECT id, at, username, action, details FROM audit"
    params = []
    if since:
        sql, params = sql + " WHERE at >= ?", [since]
    with open(fd, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f) if fmt == "csv" else None
        if writer:
            writer.writerow(AUDIT_COLUMNS)
        for row in db.execute(sql + " ORDER BY id", params):
            if writer:
                writer.writerow(row)
            else:
                f.write(json.dumps(dict(zip(AUDIT_COLUMNS[:4], row[:4]))
                                   | {"details": json.loads(row[4])}, ensure_ascii=False)
                        + "\n")
            count += 1
    with write_transaction(db):
        auth.audit(db, "cli", "audit_export", {"format": fmt, "rows": count,
                                                "since": since})
    click.echo(f"Wrote {count} audit rows to {out} ({fmt}).")

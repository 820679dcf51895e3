"""``fieldsync encrypt``, ``lock`` and ``doctor``: the care of the device's
data file (encryption at rest, the session key, salvaging a damaged file).
"""

from __future__ import annotations

import click

from . import config as settings
from .clitools import _client, _new_passphrase
from .i18n import _
from .store import keys


@click.command()
@click.pass_context
def encrypt(ctx):
    """Encrypt this device's data with a new passphrase (SQLCipher)."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    if keys.is_encrypted(folder):
        raise click.ClickException(_("This device's data is already encrypted."))
    passphrase = _new_passphrase()
    if passphrase is None:
        raise click.ClickException(_("No passphrase: run this in a terminal, or set "
                                     "FIELDSYNC_PASSPHRASE. Nothing was changed."))
    client = _client(ctx, passphrase=passphrase)
    client.remember_key()
    click.echo(_("This device's data is now encrypted ({file}). Keep the passphrase: "
                 "without it, records not yet synced cannot be read.").format(
        file=client.store.path))


@click.command()
@click.pass_context
def lock(ctx):
    """Forget the passphrase for this session: the next command asks again."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    keys.forget(folder)
    click.echo(_("Locked: the next command asks for the passphrase."))


@click.command()
@click.pass_context
def doctor(ctx):
    """Check the device database; salvage a damaged one into a fresh file."""
    from .store.salvage import salvage

    folder = settings.data_dir(ctx.obj["data_dir"])
    path = folder / settings.DB_NAME
    if not path.exists():
        raise click.ClickException(_("No device database in {folder}; nothing to "
                                     "check.").format(folder=folder))
    client = _client(ctx)  # asks for the passphrase if needed; never writes a damaged file
    key, damaged = client.store.key, client.store.damaged
    client.close()
    if damaged is None:
        click.echo(_("The device database is healthy (integrity check ok); nothing to do."))
        return
    click.echo(_("The device database is damaged: {detail}").format(detail=damaged))
    report = salvage(path, key)
    saved, unreadable = report["saved"], report["unreadable"]
    click.echo(_("Salvaged into a fresh database: {changes} queued change(s), {batches} sent "
                 "batch(es), {records} record(s).").format(
        changes=saved.get("outbox", 0), batches=saved.get("batches", 0),
        records=saved.get("records", 0)))
    for table, gaps in unreadable.items():
        click.echo((_("Lost: the {table} table could not be read at all.") if gaps < 0 else
                    _("Lost: the {table} table had {n} unreadable stretch(es).")).format(
            table=table, n=gaps))
    if report["requeued"]:
        click.echo(_("Queued again: {n} change(s) (sent once by the next sync).").format(
            n=report["requeued"]))
    if report["rebuilt_records"]:
        click.echo(_("Rebuilt from their queued changes: {n} record(s).").format(
            n=report["rebuilt_records"]))
    if "token" in report["lost_meta"] or "user" in report["lost_meta"]:
        click.echo(_("The login could not be read: run `fieldsync login` again."))
    click.echo(_("The damaged file is kept as {file}. Run `fieldsync sync`: it sends the "
                 "salvaged changes and pulls every record again.").format(file=report["kept"]))

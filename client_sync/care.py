"""``fieldsync encrypt``, ``lock`` and ``doctor``: the care of the device's
data file (encryption at rest, the session key, salvaging a damaged file).
"""

from __future__ import annotations

import click

from . import config as settings
from .clitools import _client, _new_passphrase
from .store import keys


@click.command()
@click.pass_context
def encrypt(ctx):
    """Encrypt this device's data with a new passphrase (SQLCipher)."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    if keys.is_encrypted(folder):
        raise click.ClickException("This device's data is already encrypted.")
    passphrase = _new_passphrase()
    if passphrase is None:
        raise click.ClickException("No passphrase: run this in a terminal, or set "
                                   "FIELDSYNC_PASSPHRASE. Nothing was changed.")
    client = _client(ctx, passphrase=passphrase)
    client.remember_key()
    click.echo(f"This device's data is now encrypted ({client.store.path}). Keep the "
               "passphrase: without it, records not yet synced cannot be read.")


@click.command()
@click.pass_context
def lock(ctx):
    """Forget the passphrase for this session: the next command asks again."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    keys.forget(folder)
    click.echo("Locked: the next command asks for the passphrase.")


@click.command()
@click.pass_context
def doctor(ctx):
    """Check the device database; salvage a damaged one into a fresh file."""
    from .store.salvage import salvage

    folder = settings.data_dir(ctx.obj["data_dir"])
    path = folder / settings.DB_NAME
    if not path.exists():
        raise click.ClickException(f"No device database in {folder}; nothing to check.")
    client = _client(ctx)  # asks for the passphrase if needed; never writes a damaged file
    key, damaged = client.store.key, client.store.damaged
    client.close()
    if damaged is None:
        click.echo("The device database is healthy (integrity check ok); nothing to do.")
        return
    click.echo(f"The device database is damaged: {damaged}")
    report = salvage(path, key)
    saved, unreadable = report["saved"], report["unreadable"]
    click.echo(f"Salvaged into a fresh database: {saved.get('outbox', 0)} queued change(s), "
               f"{saved.get('batches', 0)} sent batch(es), {saved.get('records', 0)} record(s).")
    for table, gaps in unreadable.items():
        what = "could not be read at all" if gaps < 0 else f"had {gaps} unreadable stretch(es)"
        click.echo(f"Lost: the {table} table {what}.")
    if report["requeued"]:
        click.echo(f"Queued again: {report['requeued']} change(s) (sent once by the next sync).")
    if report["rebuilt_records"]:
        click.echo(f"Rebuilt from their queued changes: {report['rebuilt_records']} record(s).")
    if "token" in report["lost_meta"] or "user" in report["lost_meta"]:
        click.echo("The login could not be read: run `fieldsync login` again.")
    click.echo(f"The damaged file is kept as {report['kept']}. Run `fieldsync sync`: it "
               "sends the salvaged changes and pulls every record again.")

"""`fieldsync-server`: init, serve, user, forms, backup, export, device, audit.

Group options come first: `fieldsync-server --db PATH init` (or FIELDSYNC_DB).
Passwords come from a prompt, or one line of standard input when it is not a
terminal; never from the command line, where other users could see them.
"""
import json
import os
import sqlite3
import sys

import click

from . import admin_cli, auth, catalog, exports, migrations, testkill
from .db import connect, make_private_file, write_transaction
from .indicators.report import report

DEFAULT_DB = "var/fieldsync.db"


def _open(ctx, require_init=True):
    db = connect(ctx.obj["db_path"])
    if require_init and migrations.current_version(db) < migrations.latest_version():
        raise click.ClickException(
            f"The database {ctx.obj['db_path']} is not initialised (or is older than this "
            "server); run `fieldsync-server init` first.")
    return db


@click.group()
@click.option("--db", "db_path", envvar="FIELDSYNC_DB", default=DEFAULT_DB,
              show_default=True, help="The SQLite database file (or FIELDSYNC_DB).")
@click.pass_context
def cli(ctx, db_path):
    """The fieldsync sync server."""
    ctx.ensure_object(dict)
    ctx.obj["db_path"] = db_path


@cli.command()
@click.pass_context
def init(ctx):
    """Create or upgrade the database and publish the bundled forms."""
    db = _open(ctx, require_init=False)
    _make_private(ctx.obj["db_path"])
    applied = migrations.migrate(db)
    version = migrations.current_version(db)
    click.echo(f"Database {ctx.obj['db_path']}: schema version {version}"
               + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)"))
    try:
        published = catalog.publish_bundled(db)
    except catalog.PublishError as exc:
        raise click.ClickException(str(exc))
    new = [f"{f} v{v}" for f, v, outcome in published if outcome == "published"]
    click.echo(f"Forms: {len(published)} bundled, {len(new)} newly published"
               + (f": {', '.join(new)}" if new else ""))
    _hint_first_user(db)


def _make_private(path):
    # A database made before files were private (issue 14): its owner only.
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name) and os.stat(name).st_mode & 0o077:
            os.chmod(name, 0o600)
            click.echo(f"{name}: now readable by its owner only (0600).")


def _hint_first_user(db):
    if db.execute("SELECT count(*) FROM users").fetchone()[0] == 0:
        click.echo("No users yet. Create the first one with:\n"
                   "  fieldsync-server user add NAME --role admin")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (SQLite takes one writer at a time; 2-4 is plenty).")
@click.pass_context
def serve(ctx, host, port, workers):
    """Serve the API with gunicorn, in the foreground (Ctrl-C stops it)."""
    if testkill.PROBLEM:
        raise click.ClickException(testkill.PROBLEM)
    db = _open(ctx)
    _hint_first_user(db)
    db.conn.close()  # no connection may cross gunicorn's fork
    from .wsgi import run
    run(os.path.abspath(ctx.obj["db_path"]), host, port, workers)


# -- users -------------------------------------------------------------------

def _read_password(confirm):
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    line = sys.stdin.readline()
    if not line:
        raise click.ClickException("No password on standard input (expected one line).")
    return line.rstrip("\r\n")


@cli.group()
def user():
    """Add, list, disable, enable, unlock users and set passwords."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["health_worker", "supervisor",
                                                          "admin"]))
@click.option("--area", "areas", multiple=True, help="An area code, e.g. QN.LM.03; repeatable.")
@click.pass_context
def user_add(ctx, name, role, areas):
    """Create user NAME; the password is prompted for (or read from stdin)."""
    db = _open(ctx)
    password = _read_password(confirm=True)
    try:
        auth.add_user(db, name, password, role, list(areas), by="cli")
    except auth.UserError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"Added {role} {name}" + (f" for {', '.join(areas)}" if areas else "") + ".")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def user_list(ctx, as_json):
    """List users: name, role, areas, status."""
    for u in auth.list_users(_open(ctx)):
        if as_json:
            click.echo(json.dumps({k: u[k] for k in ("username", "role", "areas", "disabled")}))
        else:
            click.echo(f"{u['username']}\t{u['role']}\t{','.join(u['areas']) or '-'}\t"
                       f"{'disabled' if u['disabled'] else 'active'}")


def _user_change(ctx, change, name):
    """`change(db, name, by="cli")`, its refusal as the command's one error line."""
    try:
        return change(_open(ctx), name, by="cli")
    except auth.UserError as exc:
        raise click.ClickException(str(exc))


@user.command("disable")
@click.argument("name")
@click.pass_context
def user_disable(ctx, name):
    """Disable NAME and revoke every token of theirs."""
    _user_change(ctx, auth.disable_user, name)
    click.echo(f"Disabled {name}; their devices are signed out.")


@user.command("enable")
@click.argument("name")
@click.pass_context
def user_enable(ctx, name):
    """Enable NAME again (their devices sign in anew)."""
    _user_change(ctx, auth.enable_user, name)
    click.echo(f"Enabled {name}; they can sign in again.")


@user.command("unlock")
@click.argument("name")
@click.pass_context
def user_unlock(ctx, name):
    """Forget NAME's failed sign-ins, so a locked-out user may try again now."""
    count = _user_change(ctx, auth.unlock_user, name)
    click.echo(f"Unlocked {name} ({count} recent failed sign-ins forgotten).")


@user.command("passwd")
@click.argument("name")
@click.pass_context
def user_passwd(ctx, name):
    """Set NAME's password (their devices must sign in again)."""
    db = _open(ctx)
    password = _read_password(confirm=True)
    try:
        auth.set_password(db, name, password, by="cli")
    except auth.UserError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"Password changed for {name}; their devices must sign in again.")


@user.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(["health_worker", "supervisor", "admin"]))
@click.option("--area", "areas", multiple=True,
              help="Replace NAME's areas with these; repeatable.")
@click.pass_context
def user_set(ctx, name, role, areas):
    """Change NAME's role and/or areas; their devices re-sync their new scope."""
    if role is None and not areas:
        raise click.UsageError("Give --role and/or --area.")
    try:
        role, areas = auth.set_scope(_open(ctx), name, role, list(areas) or None, by="cli")
    except auth.UserError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"{name} is now {role}" + (f" for {', '.join(areas)}" if areas else "")
               + "; their devices will pull their new scope from the start.")


# -- forms -------------------------------------------------------------------

@cli.group()
def forms():
    """List and publish form definitions."""


@forms.command("list")
@click.pass_context
def forms_list(ctx):
    """Every published form version."""
    for f in catalog.list_forms(_open(ctx)):
        restricted = f["definition"].get("restricted_to")
        click.echo(f"{f['id']}\tv{f['version']}\t{f['definition'].get('title', '')}\t"
                   f"{'restricted to ' + str(restricted) if restricted else 'open'}\t"
                   f"{f['sha256'][:12]}")


@forms.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def forms_publish(ctx, file):
    """Publish the definition in FILE (a new version; published ones never change)."""
    db = _open(ctx)
    try:
        definition = catalog.load_definition(file, source=file)
        outcome = catalog.publish(db, definition, by="cli")
    except catalog.PublishError as exc:
        raise click.ClickException(str(exc))
    what = f"{definition['id']} v{definition['version']}"
    click.echo(f"Published {what}." if outcome == "published"
               else f"{what} is already published with this definition.")


# -- backup ------------------------------------------------------------------

@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def backup(ctx, file):
    """Copy the database to FILE with SQLite's online backup (safe while serving)."""
    if os.path.exists(file):
        raise click.ClickException(f"{file} exists; choose a new file name.")
    db = _open(ctx)
    tmp = file + ".part"
    make_private_file(tmp)  # a copy of health records: its owner only (0600)
    dest = sqlite3.connect(tmp)
    try:
        # Whole database in one step: a consistent snapshot even while pushes
        # commit (they wait for the copy, at most the busy timeout).
        db.conn.backup(dest)
        check = dest.execute("PRAGMA integrity_check").fetchone()[0]
        dest.close()
    except sqlite3.Error as exc:
        dest.close()
        os.unlink(tmp)
        raise click.ClickException(f"Backup failed: {exc}")
    if check != "ok":
        os.unlink(tmp)
        raise click.ClickException(f"The copy failed its integrity check: {check}")
    os.replace(tmp, file)
    size = os.path.getsize(file)
    click.echo(f"Backed up {ctx.obj['db_path']} to {file} ({size} bytes, integrity ok).")


# -- export ------------------------------------------------------------------
#
# The same export as the API, run on the server itself with an admin's view
# (every area, every form), audited as user `cli`. With `--out` the file is
# written next to its final name as `FILE.part` and renamed only once whole, so
# an interrupted export never leaves a file that looks complete.

CLI_USER = {"username": "cli", "role": "admin", "areas": []}


@cli.command("export")
@click.argument("target", metavar="FORM|all")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "jsonl", "zip"]),
              default=None, help="csv, xlsx or jsonl for a form; xlsx or zip for all "
              "[default: csv for a form, xlsx for all].")
@click.option("--area", help="Only this area and its sub-areas, e.g. QN.LM.")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Write to FILE (default: standard output, CSV and JSONL only).")
@click.option("--since", help="Only records committed at or after this ISO 8601 time.")
@click.option("--until", help="Only records committed before this ISO 8601 time.")
@click.option("--after", metavar="TOKEN", help="Only records changed since the export that "
              "printed this token (\"next: --after TOKEN\"), each once, as they are now.")
@click.option("--version", "version", type=click.IntRange(1), help="Only this form version.")
@click.option("--include-deleted", is_flag=True,
              help="Add deleted records (and a deleted column).")
@click.option("--bom", is_flag=True, help="Start CSV files with a UTF-8 BOM (for Excel).")
@click.option("--repeat", help="CSV of one form: the entries of this repeat field instead.")
@click.pass_context
def export_command(ctx, target, fmt, area, out, since, until, after, version, include_deleted,
                   bom, repeat):
    """Export the current state of FORM (or all forms) from the server's database."""
    fmt = fmt or ("xlsx" if target == "all" else "csv")
    if out is None and fmt in ("xlsx", "zip") and sys.stdout.isatty():
        raise click.ClickException(f"A {fmt} file cannot go to a terminal; add --out FILE.")
    db = _open(ctx)
    try:
        job = exports.open_export(
            ctx.obj["db_path"], catalog.Catalog(db), CLI_USER, target, fmt, area=area,
            since=since, until=until, after=after, version=version,
            include_deleted=include_deleted, bom=bom, repeat=repeat,
            tmpdir=os.path.dirname(os.path.abspath(out)) if out else None)
    except exports.ExportError as exc:
        raise click.ClickException(str(exc))
    try:
        with write_transaction(db):
            auth.audit(db, CLI_USER["username"], "export", job.details)
            if job.restricted:
                auth.audit(db, CLI_USER["username"], "restricted_read",
                           {"forms": job.restricted, "via": "export", "rows": job.count})
        if out is None:
            stream = sys.stdout.buffer
            for data in job.chunks:
                stream.write(data)
            stream.flush()
        else:
            _write_file(job, out)
    finally:
        job.close()
    if out is not None:
        click.echo(f"Exported {job.count} {target} records to {out}.", err=True)
    # On standard error, also when the export went to standard output.
    click.echo(f"To append what changes from now on, next: --after {job.next_after}",
               err=True)


def _write_file(job, out):
    """Write the export to `out` atomically, with a progress bar on a terminal."""
    part = out + ".part"
    show = sys.stderr.isatty()
    try:
        with open(part, "wb") as handle, click.progressbar(
                length=max(job.count, 1), label="Exporting", file=sys.stderr,
                hidden=not show) as bar:
            done = 0
            for data in job.chunks:
                handle.write(data)
                rows = job.tally.total
                bar.update(rows - done)
                done = rows
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, out)
    except BaseException:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
        raise


# device and audit: the admin commands live in their own module.
cli.add_command(admin_cli.device, "device")
cli.add_command(admin_cli.audit, "audit")
cli.add_command(report)  # `report indicators|worklist` (server/indicators/report.py)


def main():
    cli(obj={})


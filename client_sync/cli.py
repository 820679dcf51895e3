"""The ``fieldsync`` command: the device library for a health worker's shell.

Exactly DESIGN.md's commands. Every error is one line on stderr with a
non-zero exit status; ``sync`` exits 0 only when every change got an answer
and the pull finished (rejections and conflicts are reported, not failures).
"""

from __future__ import annotations

import json
import os
import sys

import click

from . import config as settings
from .client import Client, describe_errors
from .errors import FieldsyncError, SyncError
from .store import keys
from .store.database import DAMAGED_MESSAGE, DB_ERRORS, is_damage
from .store.keys import PassphraseNeeded

TRUE_WORDS = {"yes": True, "y": True, "true": True, "1": True,
              "no": False, "n": False, "false": False, "0": False}


class Group(click.Group):
    """Turns every error into one clear line: no traceback reaches a user."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except FieldsyncError as exc:
            raise click.ClickException(str(exc)) from None
        except DB_ERRORS as exc:
            if is_damage(exc):  # never claim the records are safe on a damaged file
                raise click.ClickException(DAMAGED_MESSAGE.format(detail=exc)) from None
            raise click.ClickException(
                f"Local database error ({exc}); your saved records are untouched.") from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc} ({exc.filename or ''})") from None
        except Exception as exc:  # a bug: still one line, never a traceback
            raise click.ClickException(f"Unexpected error: {type(exc).__name__}: {exc}") from None


@click.group(cls=Group)
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="FIELDSYNC_HOME",
              help="Data folder (default ~/.fieldsync; env FIELDSYNC_HOME).")
@click.pass_context
def cli(ctx, data_dir):
    """fieldsync: collect health records offline and sync them when a link appears."""
    ctx.obj = {"data_dir": data_dir}


def _client(ctx, **options) -> Client:
    """The data folder's client; asks for the passphrase of an encrypted
    folder in a terminal (once per session: the key is then kept, see
    client_sync/store/keys.py)."""
    try:
        client = Client(ctx.obj["data_dir"], **options)
    except PassphraseNeeded:
        if not sys.stdin.isatty():
            raise
        passphrase = click.prompt("Passphrase for this device's data", hide_input=True,
                                  err=True)
        client = Client(ctx.obj["data_dir"], passphrase=passphrase, **options)
        client.remember_key()
    ctx.call_on_close(client.close)
    return client


def _new_passphrase():
    """A new passphrase: typed twice in a terminal, else FIELDSYNC_PASSPHRASE."""
    if os.environ.get("FIELDSYNC_PASSPHRASE"):
        return os.environ["FIELDSYNC_PASSPHRASE"]
    if not sys.stdin.isatty():
        return None
    click.echo("Choose a passphrase for this device's data. You type it once per working "
               "day; if it is lost, only records not yet synced are lost.", err=True)
    passphrase = click.prompt("New passphrase", hide_input=True, confirmation_prompt=True,
                              err=True)
    if len(passphrase) < 8:
        raise click.ClickException("The passphrase needs at least 8 characters; nothing "
                                   "was changed.")
    return passphrase


# -- value syntax ----------------------------------------------------------------------


def parse_value(field, raw):
    """One ``field=value`` value, typed by the form definition.

    ``field=`` clears; ``a,b`` fills a multi_choice; ``yes``/``no`` a boolean;
    a JSON object or list is taken as JSON (geopoint, repeat).
    """
    kind = (field or {}).get("type")
    name = (field or {}).get("name", "?")
    if raw == "":
        return None
    if raw[:1] in "{[" and kind in ("geopoint", "repeat", "multi_choice", None):
        try:
            return json.loads(raw)
        except ValueError:
            raise FieldsyncError(f"{name}: not valid JSON: {raw!r}") from None
    try:
        if kind == "boolean":
            if raw.lower() not in TRUE_WORDS:
                raise ValueError
            return TRUE_WORDS[raw.lower()]
        if kind == "integer":
            return int(raw)
        if kind == "decimal":
            return float(raw)
        if kind == "multi_choice":
            return [part.strip() for part in raw.split(",") if part.strip()]
        if kind == "geopoint":
            parts = [float(p) for p in raw.split(",")]
            if len(parts) not in (2, 3):
                raise ValueError
            point = {"lat": parts[0], "lon": parts[1]}
            if len(parts) == 3:
                point["accuracy_m"] = parts[2]
            return point
    except ValueError:
        expected = {"boolean": "yes or no", "integer": "a whole number", "decimal": "a number",
                    "geopoint": "lat,lon[,accuracy_m]"}.get(kind, kind)
        raise FieldsyncError(f"{name}: expected {expected}, got {raw!r}") from None
    return raw


def parse_assignments(form, pairs):
    """``["a=1", "b="]`` → ``{"a": 1, "b": None}`` typed by ``form``."""
    fields = {f["name"]: f for f in form.definition.get("fields", [])}
    data = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise FieldsyncError(f"Expected field=value, got {pair!r}.")
        if name not in fields:
            raise FieldsyncError(f"{form.id} has no field {name!r}. Fields: {', '.join(fields)}.")
        data[name] = parse_value(fields[name], raw)
    return data


def format_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# -- commands --------------------------------------------------------------------------


@cli.command()
@click.option("--server", required=True, help="Server address, e.g. http://10.0.0.5:8080.")
@click.option("--username", required=True)
@click.option("--unencrypted", is_flag=True,
              help="Keep a new data folder unencrypted (not recommended).")
@click.pass_context
def login(ctx, server, username, unencrypted):
    """Log in (password from a prompt, or one line of standard input).

    A new data folder is encrypted with a passphrase asked here (or
    FIELDSYNC_PASSPHRASE) unless --unencrypted."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("No password given.")
    client, plain_warning = _login_client(ctx, unencrypted)
    user = client.login(server, username, password)
    areas = ", ".join(user.get("areas") or []) or "none"
    click.echo(f"Logged in as {user['username']} ({user.get('role')}; areas {areas}) "
               f"on device {client.device_id}.")
    if plain_warning:
        click.echo("Warning: this device's data is not encrypted (no terminal to ask a "
                   "passphrase): run `fieldsync encrypt`, or set FIELDSYNC_PASSPHRASE.", err=True)


def _login_client(ctx, unencrypted):
    """The client for a login, and whether to warn that a new folder stays plain.

    A new data folder is encrypted with a passphrase typed here (or
    FIELDSYNC_PASSPHRASE); with neither (no terminal) it stays plain, and
    the login says so once it succeeded."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    new = not (folder / settings.DB_NAME).exists() and not keys.is_encrypted(folder)
    if not new or unencrypted:
        return _client(ctx, encrypt=False if unencrypted else None), False
    passphrase = _new_passphrase()
    if passphrase is None:
        return _client(ctx), True
    client = _client(ctx, passphrase=passphrase)
    client.remember_key()
    return client, False


@cli.command()
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


@cli.command()
@click.pass_context
def lock(ctx):
    """Forget the passphrase for this session: the next command asks again."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    keys.forget(folder)
    click.echo("Locked: the next command asks for the passphrase.")


@cli.command()
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
        click.echo(f"The device database is healthy (integrity check ok); nothing to do.")
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


@cli.command("forms")
@click.pass_context
def forms_command(ctx):
    """List the forms this device can fill in."""
    for form in _client(ctx).forms():
        click.echo(f"{form.id}\tv{form.version}\t{form.title}")


@cli.command()
@click.argument("form")
@click.argument("assignments", nargs=-1)
@click.option("--area", help="Area code (default: your only area).")
@click.option("--json", "json_file", type=click.File("r", encoding="utf-8"),
              help="A file holding the record's data object.")
@click.pass_context
def add(ctx, form, assignments, area, json_file):
    """Add a record: FORM field=value … (or --json FILE); prints its id."""
    client = _client(ctx)
    compiled = client.form(form)
    if json_file is not None:
        if assignments:
            raise click.UsageError("Give field=value pairs or --json FILE, not both.")
        try:
            data = json.load(json_file)
        except ValueError as exc:
            raise click.ClickException(f"{json_file.name}: not valid JSON ({exc}).") from None
    else:
        data = parse_assignments(compiled, assignments)
    click.echo(client.add(form, data, area=area))


@cli.command()
@click.argument("record_id")
@click.argument("assignments", nargs=-1, required=True)
@click.pass_context
def edit(ctx, record_id, assignments):
    """Edit fields of a record: ID field=value … (field= clears)."""
    client = _client(ctx)
    record = client.get(record_id)
    if record is None:
        raise click.ClickException(f"No record {record_id} on this device.")
    client.edit(record_id, parse_assignments(client.form(record["form"], record["form_version"]),
                                             assignments))
    click.echo(f"Saved {record_id} (pending sync).")


@cli.command()
@click.argument("record_id")
@click.pass_context
def delete(ctx, record_id):
    """Delete a record (synced as a tombstone)."""
    _client(ctx).delete(record_id)
    click.echo(f"Deleted {record_id} (pending sync).")


@cli.command("list")
@click.argument("form", required=False)
@click.option("--area", help="Only this area and the areas under it.")
@click.pass_context
def list_command(ctx, form, area):
    """List records: id, form, area, sync state."""
    for record in _client(ctx).list(form=form, area=area):
        click.echo(f"{record['id']}\t{record['form']}\t{record['area']}\t{record['sync_state']}")


@cli.command()
@click.argument("record_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@click.pass_context
def show(ctx, record_id, as_json):
    """Show one record, a `name: value` line per field."""
    record = _client(ctx).get(record_id)
    if record is None:
        raise click.ClickException(f"No record {record_id} on this device.")
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False, indent=2, sort_keys=True))
        return
    for name, value in record["data"].items():
        click.echo(f"{name}: {format_value(value)}")
    for name, value in (record.get("computed") or {}).items():
        click.echo(f"{name}: {format_value(value)}")


@cli.command()
@click.pass_context
def sync(ctx):
    """Send queued changes and receive the server's; a summary at the end."""
    client = _client(ctx)
    bar = {"bar": None}

    def progress(phase, done, total):
        if phase == "push" and total and total >= 100 and bar["bar"] is None:
            bar["bar"] = click.progressbar(length=total, label="Sending", file=sys.stderr)
            bar["bar"].__enter__()
            bar["done"] = 0
        if phase == "push" and bar["bar"] is not None:
            bar["bar"].update(done - bar["done"])
            bar["done"] = done
        if phase == "pull" and bar["bar"] is not None:
            bar["bar"].__exit__(None, None, None)
            bar["bar"] = None
        if phase == "pull" and done and done % 5000 == 0:
            click.echo(f"Received {done} records…", err=True)

    try:
        report = client.sync(progress=progress)
    except SyncError as exc:
        if bar["bar"] is not None:
            bar["bar"].__exit__(None, None, None)
        so_far = f" So far: {exc.report.summary()}." if exc.report else ""
        raise click.ClickException(
            f"Sync incomplete: {exc}{so_far} Nothing is lost: unanswered changes stay queued; "
            "run `fieldsync sync` again when the connection is better.") from None
    if bar["bar"] is not None:
        bar["bar"].__exit__(None, None, None)
    click.echo(f"Sync complete: {report.summary()}.")
    if report.rejected or report.forbidden:
        click.echo("Some records were refused: see `fieldsync status`.")
    if report.restamped or (report.skew is not None and abs(report.skew) > 300):
        click.echo(f"Warning: this device's clock is off by {report.skew:+.0f} s; "
                   "set the correct date and time.")


@cli.command()
@click.pass_context
def status(ctx):
    """Pending changes, refused records, last sync, conflicts, clock warning."""
    info = _client(ctx).status()
    if info["user"]:
        click.echo(f"User: {info['user']} on {info['server']} (device {info['device_id']})")
    else:
        click.echo(f"Not logged in (device {info['device_id']})")
    last = info["last_sync"] or "never"
    state = "" if info["last_sync_ok"] in (None, True) else " (the last attempt did not finish)"
    click.echo(f"Last complete sync: {last}{state}")
    click.echo(f"Pending changes: {info['pending']}")
    click.echo(f"Open conflicts: {info['conflicts']}")
    for problem in info["problems"]:
        click.echo(f"{problem['sync_state'].capitalize()}: {problem['id']} {problem['form']}: "
                   f"{describe_errors(problem['errors'])}")
    if info["skew_warning"]:
        click.echo(f"Warning: {info['skew_warning']}")


@cli.command()
@click.argument("what", metavar="FORM|all")
@click.option("--format", "fmt", required=True, type=click.Choice(["csv", "xlsx", "jsonl", "zip"]))
@click.option("--area", help="Only this area and the areas under it.")
@click.option("--out", type=click.Path(dir_okay=False), help="Output file (default FORM.FORMAT).")
@click.pass_context
def export(ctx, what, fmt, area, out):
    """Download a consolidated export from the server (supervisors)."""
    progress = ExportProgress(f"Downloading {what}.{fmt}") if _stderr_is_terminal() else None
    try:
        path = _client(ctx).export(what, fmt, out=out, area=area, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    click.echo(f"Wrote {path}")


def _stderr_is_terminal():
    return sys.stderr.isatty()


class ExportProgress:
    """A click progress bar on stderr, made once the total is known.

    Records (CSV, JSONL: against ``X-Fieldsync-Count``) or bytes (XLSX:
    against ``Content-Length``; ZIP: no total, a running count).
    """

    def __init__(self, label):
        self.label, self.bar, self.done, self.unit = label, None, 0, ""

    def __call__(self, done, total, unit):
        if self.bar is None:
            self.unit = unit
            # No total: a generator (no length hint) makes click show a running count.
            self.bar = (click.progressbar(length=total, label=self.label, file=sys.stderr,
                                          show_pos=True, item_show_func=self._unit)
                        if total is not None else
                        click.progressbar((x for x in ()), label=self.label, file=sys.stderr,
                                          show_pos=True, item_show_func=self._unit))
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def _unit(self, _item):
        return self.unit

    def close(self):
        if self.bar is not None:
            self.bar.render_finish()


def main():
    cli(prog_name="fieldsync")

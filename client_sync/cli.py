"""The ``fieldsync`` command: the device library for a health worker's shell.

Exactly DESIGN.md's commands. Every error is one line on stderr with a
non-zero exit status; ``sync`` exits 0 only when every change got an answer
and the pull finished (rejections and conflicts are reported, not failures).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from . import config as settings
from . import describe
from .client import describe_errors
from .config import APP_VERSION
from .errors import ApiError, AuthError, FieldsyncError, ServerUnreachable, SyncError
from .store import keys
from .store.database import DAMAGED_MESSAGE, DB_ERRORS, is_damage
from . import care
from .sync import parse_utc
from .clitools import _client, _new_passphrase, _warn, parse_assignments
from .clitools import parse_value  # noqa: F401  (the value syntax, tested through here)
from . import i18n
from .i18n import _




class Group(click.Group):
    """Turns every error into one clear line: no traceback reaches a user."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except KeyboardInterrupt:
            _interrupted()
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except FieldsyncError as exc:
            raise click.ClickException(i18n.say(exc)) from None
        except DB_ERRORS as exc:
            if is_damage(exc):  # never claim the records are safe on a damaged file
                raise click.ClickException(_(DAMAGED_MESSAGE).format(detail=exc)) from None
            raise click.ClickException(_(
                "Local database error ({detail}); your saved records are untouched.").format(
                    detail=exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc} ({exc.filename or ''})") from None
        except Exception as exc:  # a bug: still one line, never a traceback
            raise click.ClickException(_("Unexpected error: {error}").format(
                error=f"{type(exc).__name__}: {exc}")) from None


def _quiet_broken_pipe():
    """The reader went away (``fieldsync list | head -1``): stop quietly.

    stdout is pointed at /dev/null so the interpreter's final flush does not
    complain about the closed pipe either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def _interrupted():
    """Ctrl-C: show the cursor again (a progress bar hides it) and say that
    nothing is lost, then exit 130 as shells expect."""
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[?25h")
    click.echo("\n" + _("Interrupted. Nothing is lost: every saved record and unsent change "
                        "stays on this device; run `fieldsync sync` again to finish."), err=True)
    sys.exit(130)


@click.group(cls=Group)
@click.version_option(APP_VERSION, "--version", prog_name="fieldsync",
                      message="%(prog)s %(version)s")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="FIELDSYNC_HOME",
              help="Data folder (default ~/.fieldsync; env FIELDSYNC_HOME).")
@click.option("--lang", type=click.Choice(["vi", "en"]), envvar="FIELDSYNC_LANG", default="en",
              show_default=True,
              help="Language of messages, labels and validation (env FIELDSYNC_LANG).")
@click.pass_context
def cli(ctx, data_dir, lang):
    """fieldsync: collect health records offline and sync them when a link appears."""
    ctx.obj = {"data_dir": data_dir, "lang": lang}
    i18n.use(lang)


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
    FIELDSYNC_PASSPHRASE, or without a terminal the second line of standard
    input) unless --unencrypted."""
    piped = None
    if sys.stdin.isatty():
        password = click.prompt(_("Password"), hide_input=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
        piped = sys.stdin.readline().rstrip("\r\n") or None
    if not password:
        raise click.ClickException(_("No password given."))
    client, plain_warning = _login_client(ctx, unencrypted, piped)
    user = client.login(server, username, password)
    areas = ", ".join(user.get("areas") or []) or _("none")
    click.echo(_("Logged in as {user} ({role}; areas {areas}) on device {device}.").format(
        user=user["username"], role=user.get("role"), areas=areas, device=client.device_id))
    if plain_warning:
        click.echo(_("Warning: this device's data is not encrypted (no terminal to ask a "
                     "passphrase): run `fieldsync encrypt`, set FIELDSYNC_PASSPHRASE, or give "
                     "the passphrase as a second line after the password."), err=True)


def _login_client(ctx, unencrypted, piped=None):
    """The client for a login, and whether to warn that a new folder stays plain.

    A new data folder is encrypted with a passphrase typed here (or
    FIELDSYNC_PASSPHRASE, or `piped`: the second line of a standard input
    that is not a terminal); with none of them it stays plain, and the
    login says so once it succeeded."""
    folder = settings.data_dir(ctx.obj["data_dir"])
    new = not (folder / settings.DB_NAME).exists() and not keys.is_encrypted(folder)
    if not new or unencrypted:
        return _client(ctx, encrypt=False if unencrypted else None), False
    passphrase = _new_passphrase(piped)
    if passphrase is None:
        return _client(ctx), True
    client = _client(ctx, passphrase=passphrase)
    client.remember_key()
    return client, False


@cli.command("forms")
@click.argument("form", required=False)
@click.pass_context
def forms_command(ctx, form):
    """List the forms; FORM: its fields, labels, hints, choices and when each is asked."""
    client = _client(ctx)
    if form:
        for line in describe.form_lines(client.form(form), client.lang):
            click.echo(line)
        return
    for compiled in client.forms():
        click.echo(f"{compiled.id}\tv{compiled.version}\t{compiled.title_in(client.lang)}")


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
            raise click.UsageError(_("Give field=value pairs or --json FILE, not both."))
        try:
            data = json.load(json_file)
        except ValueError as exc:
            raise click.ClickException(_("{file}: not valid JSON ({detail}).").format(
                file=json_file.name, detail=exc)) from None
    else:
        data = parse_assignments(compiled, assignments, client)
    record_id = client.add(form, data, area=area)
    click.echo(record_id)
    _warn(client.warnings(client.get(record_id)), record_id)


@cli.command()
@click.argument("record_id")
@click.argument("assignments", nargs=-1, required=True)
@click.pass_context
def edit(ctx, record_id, assignments):
    """Edit fields of a record: ID field=value … (field= clears; an id prefix will do)."""
    client = _client(ctx)
    record_id = client.resolve_id(record_id)
    record = client.get(record_id)
    client.edit(record_id, parse_assignments(
        client.form(record["form"], record["form_version"]), assignments, client))
    click.echo(_("Saved {id} (pending sync).").format(id=record_id))
    _warn(client.warnings(client.get(record_id)), record_id)


@cli.command()
@click.argument("record_id")
@click.pass_context
def delete(ctx, record_id):
    """Delete a record (synced as a tombstone; an id prefix will do)."""
    client = _client(ctx)
    record_id = client.resolve_id(record_id)
    client.delete(record_id)
    click.echo(_("Deleted {id} (pending sync).").format(id=record_id))


def _name_of(record):
    for key, value in record["data"].items():
        if "name" in key and isinstance(value, str):
            return value
    return ""


@cli.command("list")
@click.argument("form", required=False)
@click.option("--area", help="Only this area and the areas under it.")
@click.pass_context
def list_command(ctx, form, area):
    """List records: id, form, area, sync state, name."""
    for record in _client(ctx).list(form=form, area=area):
        click.echo(f"{record['id']}\t{record['form']}\t{record['area']}\t{record['sync_state']}"
                   f"\t{_name_of(record)}")


@cli.command()
@click.argument("text")
@click.option("--form", help="Only this form.")
@click.pass_context
def find(ctx, text, form):
    """Find records by name, ignoring case and diacritics ("hoa" finds "Hòa")."""
    found = 0
    for record, hits in _client(ctx).find(text, form=form):
        found += 1
        click.echo(f"{record['id']}\t{record['form']}\t{record['area']}\t"
                   + "; ".join(hits.values()))
    if not found:
        raise click.ClickException(_("No record on this device has a name containing "
                                     "{text!r}.").format(text=text))


@cli.command()
@click.argument("record_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@click.pass_context
def show(ctx, record_id, as_json):
    """Show one record: a `label (name): value` line per field, in form order."""
    client = _client(ctx)
    record = client.get(client.resolve_id(record_id))
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False, indent=2, sort_keys=True))
        return
    form = client.registry().get(record["form"], record["form_version"])
    fields = describe.field_index(form.describe_fields(client.lang)) if form else {}
    title = form.title_in(client.lang) if form else record["form"]
    deleted = "" if not record["deleted"] else " — " + (
        _("DELETED (pending sync)") if record["sync_state"] == "pending" else _("DELETED"))
    click.echo(_("{id} {form} v{version} ({title}), area {area}, {state}").format(
        id=record["id"], form=record["form"], version=record["form_version"], title=title,
        area=record["area"], state=_(record["sync_state"])) + deleted)
    values = {**record["data"], **(record.get("computed") or {})}
    order = [n for n in fields if n in values] + [n for n in values if n not in fields]
    for name in order:
        value = values[name]
        if value is None:
            continue
        field = fields.get(name) or {}
        label = field.get("label") or name
        click.echo(f"{label} ({name}): {describe.value_words(field, value, client.lang)}")
    if record.get("errors"):
        click.echo(_("Refused by the server: {errors}").format(
            errors=describe_errors(record["errors"])))
    for line in client.warnings(record):
        click.echo(_("Warning: {message}").format(message=line))
    for entry in client.conflicts(record["id"]):
        field = fields.get(entry["field"]) or {}
        click.echo(_("Conflict on {label} ({name}): kept {kept} ({kept_by}), lost {lost} "
                     "({lost_by}); your supervisor resolves it.").format(
            label=field.get("label") or entry["field"], name=entry["field"],
            kept=describe.value_words(field, entry["current"]["value"], client.lang),
            kept_by=entry["current"].get("user"),
            lost=describe.value_words(field, entry["losing"]["value"], client.lang),
            lost_by=entry["losing"].get("user")))


@cli.command()
@click.pass_context
def conflicts(ctx):
    """Open conflicts on records in your areas, with both values (as of the last sync)."""
    client = _client(ctx)
    entries = client.conflicts()
    if not entries:
        click.echo(_("No open conflicts (as of the last sync)."))
        return
    for entry in entries:
        record = client.get(entry["record_id"])
        form = client.registry().latest(entry["form"])
        fields = describe.field_index(form.describe_fields(client.lang)) if form else {}
        field = fields.get(entry["field"]) or {}
        name = _name_of(record) if record else ""
        click.echo(f"{entry['record_id']} {entry['form']} {entry['area']}"
                   + (f" {name}" if name else ""))
        click.echo(f"  {field.get('label') or entry['field']} ({entry['field']}):")
        for side, word in (("current", _("kept")), ("losing", _("lost"))):
            info = entry[side]
            click.echo("    " + _("{word}: {value} (by {user} on {device})").format(
                word=word, value=describe.value_words(field, info.get("value"), client.lang),
                user=info.get("user") or "?", device=info.get("device") or "?"))
    click.echo(_("{n} open conflict(s): your supervisor chooses the value; both are kept on "
                 "the server until then. Nothing to do on this device.").format(n=len(entries)))


def _advice(exc):
    """What to do after a sync that did not finish, by what went wrong."""
    if isinstance(exc, AuthError):
        return ""  # the message says to sign in again
    if isinstance(exc, ServerUnreachable):
        return " " + _("Nothing is lost: unanswered changes stay queued; run `fieldsync sync` "
                       "later.")
    if isinstance(exc, ApiError) and exc.status < 500:
        return " " + _("Nothing is lost: unanswered changes stay queued. Ask your supervisor "
                       "to check your account and areas.")
    return " " + _("Nothing is lost: unanswered changes stay queued; run `fieldsync sync` "
                   "again later, and ask your supervisor if it keeps failing.")


@cli.command()
@click.pass_context
def sync(ctx):
    """Send queued changes and receive the server's; a summary at the end."""
    client = _client(ctx)
    bar = {"bar": None}

    def progress(phase, done, total):
        if phase == "push" and total and total >= 100 and bar["bar"] is None:
            bar["bar"] = click.progressbar(length=total, label=_("Sending"), file=sys.stderr)
            bar["bar"].__enter__()
            bar["done"] = 0
        if phase == "push" and bar["bar"] is not None:
            bar["bar"].update(done - bar["done"])
            bar["done"] = done
        if phase == "pull" and bar["bar"] is not None:
            bar["bar"].__exit__(None, None, None)
            bar["bar"] = None
        if phase == "pull" and done and done % 5000 == 0:
            click.echo(_("Received {n} records…").format(n=done), err=True)

    def close_bar():
        if bar["bar"] is not None:
            bar["bar"].__exit__(None, None, None)
            bar["bar"] = None

    # Ctrl-C arrives as KeyboardInterrupt; SIGTERM too, so the bar is closed
    # (the cursor shown) and the same words are said.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) \
        if hasattr(signal, "SIGTERM") else None
    try:
        report = client.sync(progress=progress)
    except SyncError as exc:
        close_bar()
        so_far = " " + _("So far: {summary}.").format(summary=i18n.say(exc.report.summary())) \
            if exc.report else ""
        raise click.ClickException(_("Sync incomplete: {reason}.").format(
            reason=i18n.say(exc).rstrip(".")) + so_far + _advice(exc)) from None
    except KeyboardInterrupt:
        close_bar()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    close_bar()
    info = client.status(warnings=False)
    stuck = info["problems"]
    if stuck:
        click.echo(_("Sync finished, but {n} record(s) were refused: {summary}.").format(
            n=len(stuck), summary=i18n.say(report.summary())))
        for problem in stuck[:10]:
            click.echo(f"  {_(problem['sync_state'])}: {problem['id']} {problem['form']}: "
                       f"{describe_errors(problem['errors'])}")
        click.echo(_stuck_advice(stuck))
    else:
        click.echo(_("Sync complete: {summary}.").format(summary=i18n.say(report.summary())))
    if info["conflicts"]:
        click.echo(_("Open conflicts in your areas: {n} (see `fieldsync conflicts`); your "
                     "supervisor resolves them.").format(n=info["conflicts"]))
    if report.restamped or (report.skew is not None and abs(report.skew) > 300):
        click.echo(_("Warning: this device's clock is off by {seconds} s; set the correct "
                     "date and time.").format(seconds=f"{report.skew:+.0f}"))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stuck_advice(problems):
    states = {p["sync_state"] for p in problems}
    out = []
    if "rejected" in states:
        out.append(_("Rejected records: correct the fields named with `fieldsync edit ID "
                     "field=value`; they are sent again at the next sync."))
    if "forbidden" in states:
        out.append(_("Forbidden records: your account may not write them (area or form). Ask "
                     "your supervisor to check your areas; they are sent again at the first "
                     "sync after the change."))
    return " ".join(out)


def _local_time(iso):
    """An ISO UTC time as UTC, labelled, followed by the local time when a zone
    is known: FIELDSYNC_TIMEZONE, else the system's own zone unless it is UTC
    (one convention with the exports, which are in UTC; issue 17)."""
    moment = parse_utc(iso)
    if moment is None:
        return iso
    moment = moment.astimezone(timezone.utc)
    shown = f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    zone_name = os.environ.get("FIELDSYNC_TIMEZONE")
    local = None
    if zone_name:
        try:
            from zoneinfo import ZoneInfo
            local = moment.astimezone(ZoneInfo(zone_name))
        except (KeyError, ValueError, OSError):
            local = None
    else:
        local = moment.astimezone()          # the system's zone
        zone_name = local.tzname() or ""
    if local is None or not local.utcoffset():
        return shown
    offset = local.strftime("%z")
    return shown + " (" + _("{time} local time").format(time=f"{local:%Y-%m-%d %H:%M:%S}") \
        + f", UTC{offset[:3]}:{offset[3:]}{', ' + zone_name if zone_name else ''})"


@cli.command()
@click.pass_context
def status(ctx):
    """Pending changes, refused records, last sync, conflicts, warnings, clock warning."""
    client = _client(ctx)
    info = client.status()
    if info["user"]:
        click.echo(_("User: {user} on {server} (device {device})").format(
            user=info["user"], server=info["server"], device=info["device_id"]))
    else:
        click.echo(_("Not logged in (device {device})").format(device=info["device_id"]))
    last = _local_time(info["last_sync"]) or _("never")
    state = "" if info["last_sync_ok"] in (None, True) else \
        " " + _("(the last attempt did not finish)")
    click.echo(_("Last complete sync: {when}").format(when=last) + state)
    click.echo(_("Pending changes: {n}").format(n=info["pending"]))
    click.echo(_("Open conflicts: {n}").format(n=info["conflicts"])
               + (" " + _("(see `fieldsync conflicts`)") if info["conflicts"] else ""))
    for problem in info["problems"]:
        click.echo(f"{_(problem['sync_state']).capitalize()}: {problem['id']} "
                   f"{problem['form']}: {describe_errors(problem['errors'])}")
    if info["problems"]:
        click.echo(_stuck_advice(info["problems"]))
    flagged = info.get("warnings") or []
    if flagged:
        click.echo(_("Records with warnings: {n}").format(n=len(flagged)))
        for item in flagged[:20]:
            click.echo(_("Warning: {message}").format(
                message=f"{item['id']} {item['form']}: {'; '.join(item['warnings'])}"))
    if info["skew_warning"]:
        click.echo(_("Warning: {message}").format(message=info["skew_warning"]))


@cli.command()
@click.option("--force", is_flag=True, help="Also when changes are unsynced: they are lost.")
@click.pass_context
def logout(ctx, force):
    """Sign out; the user's records leave this device. Refused while changes are unsynced."""
    done = _client(ctx).logout(force=force)
    if done["dropped"]:
        click.echo(_("Logged out {user}; {n} unsynced record(s) were deleted from this device "
                     "and are lost.").format(user=done["user"], n=done["dropped"]))
    else:
        click.echo(_("Logged out {user}; every change had been synced.").format(
            user=done["user"]))


@cli.command()
@click.argument("what", metavar="FORM|all")
@click.option("--format", "fmt", required=True, type=click.Choice(["csv", "xlsx", "jsonl", "zip"]))
@click.option("--area", help="Only this area and the areas under it.")
@click.option("--since", help="Only records changed on the server since this time "
                              "(ISO date or time, e.g. 2025-06-01).")
@click.option("--bom", is_flag=True, help="CSV: start with a byte-order mark (for Excel).")
@click.option("--out", type=click.Path(dir_okay=False), help="Output file (default FORM.FORMAT).")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.pass_context
def export(ctx, what, fmt, area, since, bom, out, force):
    """Download a consolidated export from the server (supervisors)."""
    target = Path(out or f"{what}.{fmt}")
    if target.exists() and not force:
        raise click.ClickException(_("{file} already exists: give another --out, or --force "
                                     "to overwrite it.").format(file=target))
    if since is not None:
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise click.ClickException(_("--since {value!r}: expected an ISO date or time, "
                                         "e.g. 2025-06-01 or 2025-06-01T08:00:00Z.").format(
                value=since)) from None
    progress = ExportProgress(_("Downloading {file}").format(file=f"{what}.{fmt}")) \
        if _stderr_is_terminal() else None
    try:
        path = _client(ctx).export(what, fmt, out=target, area=area, progress=progress,
                                   since=since, bom=bom)
    finally:
        if progress is not None:
            progress.close()
    click.echo(_("Wrote {file}").format(file=path))


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


@cli.command("app")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open the browser.")
@click.pass_context
def app_command(ctx, port, no_browser):
    """Open the data-entry app in the browser (served on 127.0.0.1, works offline)."""
    from .app import serve  # Flask is imported only here: the library stays Flask-free
    # An encrypted folder asks for its passphrase here, once; the key is then
    # kept for the session (store/keys.py), where the app's pages find it.
    _client(ctx)
    serve(ctx.obj["data_dir"], port=port, open_browser=not no_browser, echo=click.echo)


for _command in (care.encrypt, care.lock, care.doctor):
    cli.add_command(_command)


def main():
    cli(prog_name="fieldsync")

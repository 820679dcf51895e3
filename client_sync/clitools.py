"""What the ``fieldsync`` commands share: opening the data folder's client
(asking an encrypted folder's passphrase), warnings on stderr, and the
command line's ``field=value`` syntax. No command lives here.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .client import Client
from .errors import FieldsyncError
from .i18n import _
from .store.keys import PassphraseNeeded

TRUE_WORDS = {"yes": True, "y": True, "true": True, "1": True,
              "no": False, "n": False, "false": False, "0": False}


def _client(ctx, **options) -> Client:
    """The data folder's client; asks for the passphrase of an encrypted
    folder in a terminal (once per session: the key is then kept, see
    client_sync/store/keys.py)."""
    options.setdefault("lang", ctx.obj.get("lang", "en"))
    try:
        client = Client(ctx.obj["data_dir"], **options)
    except PassphraseNeeded:
        if not sys.stdin.isatty():
            raise
        passphrase = click.prompt(_("Passphrase for this device's data"), hide_input=True,
                                  err=True)
        client = Client(ctx.obj["data_dir"], passphrase=passphrase, **options)
        client.remember_key()
    ctx.call_on_close(client.close)
    return client


def _warn(lines, record_id=None):
    """Warnings on stderr (stdout keeps only what scripts read, e.g. an id)."""
    for line in lines:
        click.echo(_("Warning: {message}").format(message=line), err=True)
    if lines:
        click.echo(_("Check these now; danger signs need a referral today.")
                   + (" " + _("They stay visible in `fieldsync show {id}`.").format(
                       id=record_id[:8]) if record_id else ""), err=True)


def _new_passphrase(piped=None):
    """A new passphrase: FIELDSYNC_PASSPHRASE, else typed twice in a terminal,
    else `piped` (a line of standard input that is not a terminal), else None."""
    if os.environ.get("FIELDSYNC_PASSPHRASE"):
        return os.environ["FIELDSYNC_PASSPHRASE"]
    if not sys.stdin.isatty():
        if piped is not None and len(piped) < 8:
            raise click.ClickException(_("The passphrase needs at least 8 characters; "
                                         "nothing was changed."))
        return piped
    click.echo(_("Choose a passphrase for this device's data. You type it once per working "
                 "day; if it is lost, only records not yet synced are lost."), err=True)
    passphrase = click.prompt(_("New passphrase"), hide_input=True,
                              confirmation_prompt=_("Repeat for confirmation"), err=True)
    if len(passphrase) < 8:
        raise click.ClickException(_("The passphrase needs at least 8 characters; nothing "
                                     "was changed."))
    return passphrase


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
            raise FieldsyncError(_("{name}: not valid JSON: {raw!r}").format(
                name=name, raw=raw)) from None
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
        expected = {"boolean": _("yes or no"), "integer": _("a whole number"),
                    "decimal": _("a number"), "geopoint": "lat,lon[,accuracy_m]"}.get(kind, kind)
        raise FieldsyncError(_("{name}: expected {expected}, got {raw!r}").format(
            name=name, expected=expected, raw=raw)) from None
    return raw


def parse_assignments(form, pairs, client=None):
    """``["a=1", "b="]`` → ``{"a": 1, "b": None}`` typed by ``form``. Text is
    trimmed (blank is empty); a reference field takes an id prefix."""
    fields = {f["name"]: f for f in form.definition.get("fields", [])}
    data = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise FieldsyncError(_("Expected field=value, got {pair!r}.").format(pair=pair))
        if name not in fields:
            raise FieldsyncError(_("{form} has no field {name!r}. Fields: {fields} (see "
                                   "`fieldsync forms {form}`).").format(
                form=form.id, name=name, fields=", ".join(fields)))
        kind = fields[name].get("type")
        if kind in ("string", "text", "ref", "choice", "date", "time", "datetime"):
            raw = raw.strip()
        value = parse_value(fields[name], raw)
        if kind == "ref" and isinstance(value, str) and client is not None:
            value = client.resolve_id(value)
        data[name] = value
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

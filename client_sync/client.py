"""The device-side API: one object per data folder.

    >>> from client_sync import Client
    >>> device = Client()                     # ~/.fieldsync, or FIELDSYNC_HOME
    >>> device.login("http://127.0.0.1:8080", "hw", "hw-pass-123")
    >>> rid = device.add("household", {"head_name": "Lý A Sáng", ...})
    >>> device.sync().summary()

Every add, edit and delete is validated offline against the cached form
definitions (the bundled ones until the first sync brings the server's) and
committed before the call returns.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

from schemas.wire import AREA_RE, area_covers

from . import config as settings
from .i18n import N_
from .errors import AuthError, FieldsyncError, InvalidRecord, NotLoggedIn, RecordNotFound, UserSwitchRefused
from .store import keys, open_store, utc_now, uuid7
from .sync import SKEW_WARN_SECONDS, Synchronizer, skew_seconds
from .transport import Transport


def _describe(errors, prefix=""):
    """Flatten ``{field: [msg]}`` (nested for repeats) into ``field: msg`` strings."""
    out = []
    items = errors.items() if isinstance(errors, dict) else [("", errors)]
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _describe(value, name + ".")
        elif isinstance(value, (list, tuple)):
            for message in value:
                out += (_describe(message, name + ".") if isinstance(message, dict)
                        else [f"{name}: {message}"])
        else:
            out.append(f"{name}: {value}")
    return out


def fold(text) -> str:
    """``text`` for searching: lower case, no diacritics ("Đặng Hòa" → "dang hoa")."""
    text = unicodedata.normalize("NFKD", str(text).replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold().strip()


#: Field types whose text is trimmed, and empty when blank (issue 17).
TEXT_TYPES = frozenset({"string", "text", "choice", "ref", "date", "time", "datetime"})


def trimmed(fields, data):
    """``data`` with padding spaces cut from text values and blank text made
    empty (None, as the form model treats an empty value), repeat entries and
    multi_choice items included; anything else is passed on unchanged for the
    validator to judge. Every way in (``add``, ``edit``, ``--json``, the app)
    comes through here, so "  " is never a valid name (issue 17)."""
    out = {}
    for name, value in data.items():
        kind = (fields.get(name) or {}).get("type")
        if isinstance(value, str) and kind in TEXT_TYPES:
            value = value.strip() or None
        elif isinstance(value, list) and kind == "multi_choice":
            value = [v.strip() if isinstance(v, str) else v for v in value]
            value = [v for v in value if v != ""]
        elif isinstance(value, list) and kind == "repeat":
            inner = {f["name"]: f for f in fields[name].get("fields") or []}
            value = [trimmed(inner, entry) if isinstance(entry, dict) else entry
                     for entry in value]
        out[name] = value
    return out


def describe_errors(errors) -> str:
    """One line for a ``{field: [messages]}`` tree."""
    return "; ".join(_describe(errors))


class Client:
    """The fieldsync device library over one data folder.

    :param data_dir: the data folder (default ``FIELDSYNC_HOME`` or ``~/.fieldsync``).
    :param network: a :class:`~client_sync.config.NetworkConfig` (timeouts, give-up time).
    :param lang: the language of validation messages ("vi", "en"; default English):
        those of ``add``/``edit`` here, and the server's push answers (``Accept-Language``),
        stored with each record; a message with no translation stays English.
    :param passphrase: opens an encrypted data folder, or encrypts a plain one
        (its ``device.db`` migrated); default ``FIELDSYNC_PASSPHRASE``, then the
        session's key (``remember_key``). See ``client_sync/store/keys.py``.
    :param encrypt: ``False`` keeps a plain folder plain even with
        ``FIELDSYNC_PASSPHRASE`` set.
    :raises keys.PassphraseNeeded: the folder is encrypted and no key is at hand.
    :raises keys.WrongPassphrase: the passphrase does not open it.
    """

    def __init__(self, data_dir=None, network=None, lang="en", passphrase=None, encrypt=None):
        self.lang = lang or "en"
        self.data_dir = settings.data_dir(data_dir)
        self.store = open_store(self.data_dir, settings.DB_NAME, passphrase, encrypt)
        self.network = network or settings.NetworkConfig.from_env()
        self._registry = None
        self._registry_key = None

    def close(self):
        self.store.close()

    @property
    def encrypted(self) -> bool:
        """Whether ``device.db`` is encrypted (SQLCipher)."""
        return self.store.key is not None

    def remember_key(self, hours=None) -> bool:
        """Keep this folder's key for the session, so the passphrase is typed
        once (see ``store/keys.py``); False for a plain folder or no tmpfs."""
        return self.store.key is not None and keys.remember(self.data_dir, self.store.key, hours)

    def lock(self) -> bool:
        """Forget the session's key: the next open asks for the passphrase."""
        return keys.forget(self.data_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- identity -------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.store.device_id

    @property
    def user(self):
        """``{username, role, areas}`` of the logged-in user, or ``None``."""
        return self.store.get_meta("user")

    @property
    def server(self):
        return self.store.get_meta("server")

    def _transport(self):
        token, server = self.store.get_meta("token"), self.server
        if not token or not server:
            raise NotLoggedIn()
        return Transport(server, token, self.network, lang=self.lang)

    def login(self, server, username, password):
        """Log in; seeds the HLC from the server's and caches its forms.

        One user per device: switching user (or server) while changes are
        unsynced is refused, so nothing is ever silently dropped.

        :raises UserSwitchRefused: another user's changes are still queued.
        :raises AuthError: wrong username or password (or rate-limited).
        """
        server = server.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+$", server):
            raise FieldsyncError(N_("Server address {server!r} should look like "
                                    "http://10.0.0.5:8080 (scheme, host and port only).",
                                    server=server))
        previous = self.user
        switching = previous is not None and (previous["username"] != username
                                              or self.server != server)
        unsynced = self.store.unsynced_count()
        if switching and unsynced:
            raise UserSwitchRefused(N_(
                "{user} has {count} unsynced record(s) on this device. "
                "Log in as {user} and run `fieldsync sync` first.",
                user=previous["username"], count=unsynced))
        transport = Transport(server, None, self.network)
        try:
            info = transport.info()
            answer = transport.login(username, password, self.device_id, settings.APP_VERSION)
        except AuthError as exc:
            if getattr(exc, "code", None) == "too_many_attempts":
                exc.args = (N_("{username} is locked out after too many failed sign-ins: "
                               "wait a few minutes, or ask your supervisor; an admin can run "
                               "`fieldsync-server user unlock {username}`.",
                               username=username),)
            else:
                exc.args = (N_("{said} Check the username and password; if you forgot the "
                               "password, ask your supervisor.", said=exc.args[0]),)
            raise
        finally:
            transport.close()
        if switching or previous is None:
            self.store.reset_for_user()
        user = answer.get("user") or {"username": username, "role": None, "areas": []}
        self.store.set_meta(server=server, token=answer["token"],
                            token_expires=answer.get("expires_at"), user=user,
                            clock_skew={"seconds": skew_seconds(info.get("server_time")),
                                        "at": utc_now()})
        self.store.observe(info.get("hlc"))
        self.store.observe(answer.get("hlc"))
        self.store.release_held()  # the scope may have changed: try held changes once more
        try:
            transport = self._transport()
            forms, etag = transport.forms(self.store.forms_etag())
            if forms:
                self.store.save_forms(forms, etag)
        except FieldsyncError:
            pass  # the forms come with the next sync
        finally:
            transport.close()
        return user

    # -- forms ------------------------------------------------------------------------

    def registry(self):
        """The form registry: the server's cached definitions, else the bundled ones."""
        from schemas.forms import FormRegistry, bundled_definitions

        key = self.store.get_meta("forms_sha256") or "bundled"
        if key != self._registry_key:
            definitions = self.store.load_forms() or bundled_definitions()
            registry = FormRegistry()
            for definition in definitions:
                registry.add(definition)
            self._registry, self._registry_key = registry, key
        return self._registry

    def forms(self):
        """The latest version of each form (``CompiledForm`` objects)."""
        registry = self.registry()
        latest = {}
        for form in registry.all():
            if form.id not in latest or form.version > latest[form.id].version:
                latest[form.id] = form
        return [latest[k] for k in sorted(latest)]

    def form(self, form_id, version=None):
        registry = self.registry()
        form = registry.latest(form_id) if version is None else registry.get(form_id, version)
        if form is None:
            known = ", ".join(f.id for f in self.forms())
            raise InvalidRecord(N_("Unknown form {form!r}. Known forms: {known}.",
                                   form=form_id, known=known))
        return form

    # -- records ----------------------------------------------------------------------

    def _require_user(self):
        user = self.user
        if user is None:
            raise NotLoggedIn()
        return user

    def _area(self, area, user):
        areas = user.get("areas") or []
        if area is None:
            if len(areas) != 1:
                raise InvalidRecord(N_("Choose an area with --area: you are assigned {areas}.",
                                       areas=", ".join(areas) or "-"))
            return areas[0]
        if not AREA_RE.match(area):
            raise InvalidRecord(N_("Bad area code {area!r}: expected e.g. QN.LM.03.", area=area))
        if user.get("role") != "admin" and not area_covers(areas, area):
            raise InvalidRecord(N_("Area {area} is outside your areas ({areas}).",
                                   area=area, areas=", ".join(areas)))
        return area

    def add(self, form_id, data, area=None) -> str:
        """Validate and save a new record; returns its id (a UUIDv7).

        :param data: ``{field: value}``, every field of a complete record.
        :param area: defaults to the user's only area.
        :raises InvalidRecord: with ``errors`` by field.
        """
        user = self._require_user()
        form = self.form(form_id)
        area = self._area(area, user)
        data = self._input(form, data)
        result = form.validate_create(data)
        if result.errors:
            errors = form.localize(result.errors, self.lang)
            raise InvalidRecord(N_("Invalid {form}: {errors}", form=form_id,
                                   errors=self._explain(form, errors)), errors)
        record_id = uuid7()
        self.store.local_change(record_id, user=user["username"], data=result.data, create={
            "form": form.id, "form_version": form.version, "area": area})
        return record_id

    def edit(self, record_id, data):
        """Validate and save an edit of some fields (``None`` clears a field)."""
        user = self._require_user()
        current = self._get_raw(record_id)
        form = self.form(current["form"], current["form_version"])
        data = self._input(form, data)
        if not data:
            raise InvalidRecord(N_("Nothing to change: give field=value pairs."))
        result = form.validate_change(data)
        errors = dict(result.errors)
        if not errors:
            # Rules across fields: refuse only problems this edit introduces.
            before = form.validate_record(current["data"]).errors
            after = form.validate_record({**current["data"], **result.data}).errors
            errors = {k: v for k, v in after.items() if k in data or k not in before}
        if errors:
            errors = form.localize(errors, self.lang)
            raise InvalidRecord(N_("Invalid edit: {errors}", errors=self._explain(form, errors)),
                                errors)
        return self.store.local_change(record_id, user=user["username"], data=result.data)

    def delete(self, record_id):
        """Delete a record (a tombstone that syncs like any change)."""
        user = self._require_user()
        self._get_raw(record_id)
        return self.store.local_change(record_id, user=user["username"], delete=True)

    def _explain(self, form, errors):
        """``describe_errors``, with the label of each field whose value has a
        required format: the label says what the format is ("10 digits (on an
        old 15-character card, its last 10 digits)"), the validator does not."""
        labels = {f["name"]: f["label"] for f in form.describe_fields(self.lang)
                  if f.get("pattern")}
        parts = []
        for name, messages in errors.items():
            line = describe_errors({name: messages})
            parts.append(f"{line} ({labels[name]})" if name in labels else line)
        return "; ".join(parts)

    @staticmethod
    def _input(form, data):
        if not isinstance(data, dict):
            raise InvalidRecord(N_("Record data must be an object of field: value."))
        computed = set(form.computed_names)
        bad = sorted(set(data) & computed)
        if bad:
            raise InvalidRecord(N_("{fields}: computed fields cannot be set.",
                                   fields=", ".join(bad)))
        return trimmed(form.fields, data)

    def _get_raw(self, record_id):
        record = self.store.get(record_id)
        if record is None:
            raise RecordNotFound(N_("No record {id} on this device.", id=record_id))
        return record

    def resolve_id(self, text) -> str:
        """The full id of the one record whose id starts with ``text``.

        :raises RecordNotFound: no record, or several (their ids listed).
        """
        text = (text or "").strip().lower()
        if len(text) < 4:
            raise RecordNotFound(N_("Record id {id!r} is too short: give at least 4 characters.",
                                    id=text))
        if self.store.get(text) is not None:
            return text
        found = self.store.ids_with_prefix(text, limit=6)
        if len(found) == 1:
            return found[0]
        if not found:
            raise RecordNotFound(N_("No record {id} on this device (see `fieldsync list` "
                                    "or `fieldsync find NAME`).", id=text))
        more = ", …" if len(found) > 5 else ""
        raise RecordNotFound(N_("Id {id} is ambiguous: it starts {found}. Give more characters.",
                                id=text, found=", ".join(found[:5]) + more))

    def find(self, text, form=None, include_deleted=False):
        """Records whose name fields (string fields named ``…name…``) contain
        ``text``, ignoring case and diacritics ("hoa" finds "Hòa", "dang"
        "Đặng"); yields ``(record, {field: value})`` with the matching names."""
        wanted = fold(text)
        names_of = {}
        for record in self.store.iter_records(form=form, include_deleted=include_deleted):
            key = (record["form"], record["form_version"])
            if key not in names_of:
                compiled = self.registry().get(*key)
                names_of[key] = [n for n, d in (compiled.fields if compiled else {}).items()
                                 if "name" in n and d.get("type") in ("string", "text")]
            hits = {n: record["data"][n] for n in names_of[key]
                    if isinstance(record["data"].get(n), str)
                    and wanted in fold(record["data"][n])}
            if hits:
                yield record, hits

    def warnings(self, record) -> list[str]:
        """The record's warnings as lines in this client's language: its
        form's soft checks (danger signs among them) and a possible duplicate
        (another record of the same form, for the same person, the same day)."""
        if record.get("deleted"):
            return []
        form = self.registry().get(record["form"], record["form_version"])
        if form is None:
            return []
        lines = form.describe_errors(form.validate_record(record["data"]).warnings, self.lang)
        duplicate = self.duplicate_of(record, form)
        if duplicate:
            lines.append(("Có thể trùng: hồ sơ {id} cùng người, cùng ngày ({form})."
                          if self.lang == "vi" else
                          "Possible duplicate: record {id} is the same person and form on "
                          "the same day ({form}).").format(id=duplicate, form=record["form"]))
        return lines

    def duplicate_of(self, record, form=None):
        """The id of another live record of the same form for the same person
        (its reference fields) on the same day (its first date field), or None."""
        form = form or self.registry().get(record["form"], record["form_version"])
        if form is None:
            return None
        refs = [n for n, d in form.fields.items() if d.get("type") == "ref"]
        dates = [n for n, d in form.fields.items() if d.get("type") == "date" and d.get("required")]
        if not refs or not dates:
            return None
        keys = refs + dates[:1]
        mine = [record["data"].get(k) for k in keys]
        if any(v is None for v in mine):
            return None
        for other in self.store.iter_records(form=record["form"]):
            if other["id"] != record["id"] and \
                    [other["data"].get(k) for k in keys] == mine:
                return other["id"]
        return None

    def conflicts(self, record_id=None):
        """The open conflicts on records in the user's areas, as the last sync
        fetched them (both values each): see ``Store.conflicts``."""
        return self.store.conflicts(record_id)

    def logout(self, force=False):
        """Sign out and forget this user's records and token.

        :param force: also when changes are unsynced (they are lost).
        :returns: how many unsynced records were dropped.
        :raises UserSwitchRefused: unsynced changes and not ``force``.
        """
        user = self._require_user()
        unsynced = self.store.unsynced_count()
        if unsynced and not force:
            raise UserSwitchRefused(N_(
                "{count} record(s) on this device are not synced yet: run `fieldsync sync` "
                "first. `fieldsync logout --force` would delete them for good.", count=unsynced))
        try:
            transport = self._transport()
            try:
                transport.request("POST", "/api/v1/auth/logout")
            finally:
                transport.close()
        except FieldsyncError:
            pass  # offline: the token is forgotten here; it expires on its own
        with self.store.transaction():
            for table in ("outbox", "batches", "records", "conflicts"):
                self.store.conn.execute(f"DELETE FROM {table}")
            for key in ("cursor", "resyncing", "last_sync", "skew", "token", "user",
                        "conflicts_at", "token_expires"):
                self.store.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        return {"user": user["username"], "dropped": unsynced}

    def get(self, record_id):
        """One record: ``{id, form, form_version, area, data, computed, deleted,
        sync_state, errors, warnings, hlc}``; ``None`` if unknown."""
        record = self.store.get(record_id)
        if record is not None:
            record["computed"] = self._computed(record)
        return record

    def _computed(self, record):
        try:
            form = self.registry().get(record["form"], record["form_version"])
            return form.compute(record["data"]) if form is not None else {}
        except Exception:  # a computed value is a convenience, never a reason to fail
            return {}

    def list(self, form=None, area=None, sync_state=None, include_deleted=False):
        """Yield records (streamed), optionally by form, area subtree or sync state."""
        return self.store.iter_records(form, area, sync_state, include_deleted)

    # -- sync ----------------------------------------------------------------------------

    def sync(self, progress=None):
        """Push the outbox and pull the server's changes; returns a :class:`SyncReport`.

        :param progress: ``callback(phase, done, total)``.
        :raises SyncError: something did not finish (``.report`` says what did);
            every unanswered change stays queued.
        """
        self._require_user()
        transport = self._transport()
        try:
            return Synchronizer(self.store, transport, progress).run()
        except AuthError as exc:
            user = self.user or {}
            exc.args = (N_("{said} To sign in: fieldsync login --server {server} --username "
                           "{username}; {count} unsynced record(s) stay safe on this device.",
                           said=exc.args[0], server=self.server,
                           username=user.get("username", "NAME"),
                           count=self.store.unsynced_count()),)
            raise
        finally:
            transport.close()

    def status(self, warnings=True) -> dict:
        """What a health worker needs to know before and after a sync.

        :param warnings: also check every record's warnings (a pass over the
            store; ``sync`` leaves it out)."""
        store = self.store
        # The offset measured at the start of the last sync (or login), and
        # what the server said of our clocks if that sync pushed anything.
        measured, answered = store.get_meta("clock_skew") or {}, store.get_meta("skew") or {}
        skew = {"seconds": measured.get("seconds", answered.get("seconds"))}
        if answered and answered.get("at", "") >= measured.get("at", ""):
            skew["restamped"] = answered.get("restamped")
        problems = [
            {"id": r["id"], "form": r["form"], "sync_state": r["sync_state"], "errors": r["errors"]}
            for state in ("rejected", "forbidden")
            for r in store.iter_records(sync_state=state, include_deleted=True)]
        flagged = []
        for record in store.iter_records() if warnings else ():
            form = self.registry().get(record["form"], record["form_version"])
            found = form.validate_record(record["data"]).warnings if form else None
            if found:
                flagged.append({"id": record["id"], "form": record["form"],
                                "warnings": form.describe_errors(found, self.lang)})
        seconds = skew.get("seconds")
        warning = None
        if seconds is not None and abs(seconds) > SKEW_WARN_SECONDS:
            direction = "ahead of" if seconds > 0 else "behind"
            warning = (f"This device's clock is {abs(seconds) / 86400:.1f} days {direction} the "
                       "server's. Set the correct date and time: edits made with a wrong clock "
                       "can lose to older ones or be re-stamped by the server.")
        elif skew.get("restamped"):
            warning = (f"The server re-stamped {skew['restamped']} clock(s) from this device at "
                       "the last sync because they were ahead of its time. Check the date and "
                       "time settings.")
        user = self.user
        conflicts = (len(store.conflicts()) if store.conflicts_known()
                     else store.counts().get("conflict", 0))
        return {"user": user["username"] if user else None, "server": self.server,
                "device_id": self.device_id, "pending": store.unsynced_count(),
                "counts": store.counts(), "problems": problems,
                "conflicts": conflicts, "warnings": flagged,
                "last_sync": store.get_meta("last_sync"),
                "last_sync_ok": store.get_meta("last_sync_ok"),
                "skew_seconds": seconds, "skew_warning": warning}

    # -- export ---------------------------------------------------------------------------

    def export(self, what, fmt, out=None, area=None, progress=None, since=None, bom=False):
        """Download a supervisor export to ``out`` (default ``<what>.<fmt>``).

        Written to a temporary file beside it and renamed only when complete,
        so a cut download never leaves a truncated file that looks whole.

        :param progress: ``callback(done, total, unit)``, see
            :meth:`~client_sync.transport.Transport.export`.
        :raises SyncError: the download failed or was cut off (nothing written).
        """
        if fmt not in ("csv", "xlsx", "jsonl", "zip"):
            raise FieldsyncError(N_("Unknown format {format!r}: use csv, xlsx or jsonl.",
                                    format=fmt))
        out = Path(out or f"{what}.{fmt}")
        transport = self._transport()
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                params = {"area": area, "since": since, "bom": "1" if bom else None}
                transport.export(f"/api/v1/exports/{what}.{fmt}",
                                 {k: v for k, v in params.items() if v}, fh, progress=progress)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            transport.close()
        return out

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
from pathlib import Path

from schemas.wire import AREA_RE, area_covers

from . import config as settings
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
            raise FieldsyncError(f"Server address {server!r} should look like "
                                 "http://10.0.0.5:8080 (scheme, host and port only).")
        previous = self.user
        switching = previous is not None and (previous["username"] != username
                                              or self.server != server)
        unsynced = self.store.unsynced_count()
        if switching and unsynced:
            raise UserSwitchRefused(
                f"{previous['username']} has {unsynced} unsynced record(s) on this device. "
                f"Log in as {previous['username']} and run `fieldsync sync` first.")
        transport = Transport(server, None, self.network)
        try:
            info = transport.info()
            answer = transport.login(username, password, self.device_id, settings.APP_VERSION)
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
            raise InvalidRecord(f"Unknown form {form_id!r}. Known forms: {known}.")
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
                raise InvalidRecord("Choose an area with --area: you are assigned "
                                    f"{', '.join(areas) or 'no area'}.")
            return areas[0]
        if not AREA_RE.match(area):
            raise InvalidRecord(f"Bad area code {area!r}: expected e.g. QN.LM.03.")
        if user.get("role") != "admin" and not area_covers(areas, area):
            raise InvalidRecord(f"Area {area} is outside your areas ({', '.join(areas)}).")
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
            raise InvalidRecord(f"Invalid {form_id}: {describe_errors(errors)}", errors)
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
            raise InvalidRecord("Nothing to change: give field=value pairs.")
        result = form.validate_change(data)
        errors = dict(result.errors)
        if not errors:
            # Rules across fields: refuse only problems this edit introduces.
            before = form.validate_record(current["data"]).errors
            after = form.validate_record({**current["data"], **result.data}).errors
            errors = {k: v for k, v in after.items() if k in data or k not in before}
        if errors:
            errors = form.localize(errors, self.lang)
            raise InvalidRecord(f"Invalid edit: {describe_errors(errors)}", errors)
        return self.store.local_change(record_id, user=user["username"], data=result.data)

    def delete(self, record_id):
        """Delete a record (a tombstone that syncs like any change)."""
        user = self._require_user()
        self._get_raw(record_id)
        return self.store.local_change(record_id, user=user["username"], delete=True)

    @staticmethod
    def _input(form, data):
        if not isinstance(data, dict):
            raise InvalidRecord("Record data must be an object of field: value.")
        computed = set(form.computed_names)
        bad = sorted(set(data) & computed)
        if bad:
            raise InvalidRecord(f"{', '.join(bad)}: computed fields cannot be set.")
        return dict(data)

    def _get_raw(self, record_id):
        record = self.store.get(record_id)
        if record is None:
            raise RecordNotFound(f"No record {record_id} on this device.")
        return record

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
            exc.args = (f"Your login has expired or was revoked ({exc.args[0].rstrip('.')}). "
                        f"Log in again: fieldsync login --server {self.server} --username "
                        f"{user.get('username', 'NAME')}; {self.store.unsynced_count()} unsynced "
                        "record(s) stay safe on this device.",)
            raise
        finally:
            transport.close()

    def status(self) -> dict:
        """What a health worker needs to know before and after a sync."""
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
        return {"user": user["username"] if user else None, "server": self.server,
                "device_id": self.device_id, "pending": store.unsynced_count(),
                "counts": store.counts(), "problems": problems,
                "conflicts": store.counts().get("conflict", 0),
                "last_sync": store.get_meta("last_sync"),
                "last_sync_ok": store.get_meta("last_sync_ok"),
                "skew_seconds": seconds, "skew_warning": warning}

    # -- export ---------------------------------------------------------------------------

    def export(self, what, fmt, out=None, area=None, progress=None):
        """Download a supervisor export to ``out`` (default ``<what>.<fmt>``).

        Written to a temporary file beside it and renamed only when complete,
        so a cut download never leaves a truncated file that looks whole.

        :param progress: ``callback(done, total, unit)``, see
            :meth:`~client_sync.transport.Transport.export`.
        :raises SyncError: the download failed or was cut off (nothing written).
        """
        if fmt not in ("csv", "xlsx", "jsonl", "zip"):
            raise FieldsyncError(f"Unknown format {fmt!r}: use csv, xlsx or jsonl.")
        out = Path(out or f"{what}.{fmt}")
        transport = self._transport()
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                transport.export(f"/api/v1/exports/{what}.{fmt}", {"area": area} if area else {}, fh,
                                 progress=progress)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            transport.close()
        return out

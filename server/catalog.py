"""Published form versions: stored in the `forms` table, compiled once per process.

A published version is immutable: publishing the same (id, version) again
with a different definition is refused (compared by the SHA-256 of its
canonical JSON); the change must take a new version.
"""
import json
import threading

from schemas.forms import definition_sha256

from . import clock
from .db import write_transaction
from .scope import can_read_form


class PublishError(ValueError):
    """A definition that cannot be published (message for the CLI)."""


def load_definition(path_or_dict, source=None):
    """Check a definition with the form compiler; `PublishError` names what is wrong."""
    from schemas import forms
    try:
        definition = forms.load_definition(path_or_dict, source=source)
        forms.compile_form(definition)
    except (forms.FormDefinitionError, OSError, ValueError) as exc:
        raise PublishError(str(exc)) from None
    return definition


def publish(db, definition, by=None):
    """Store one form version; returns "published" or "unchanged".

    :raises PublishError: the version exists with a different definition.
    """
    sha = definition_sha256(definition)
    form_id, version = definition["id"], definition["version"]
    with write_transaction(db):
        row = db.execute("SELECT sha256 FROM forms WHERE id = ? AND version = ?",
                         [form_id, version]).fetchone()
        if row:
            if row[0] == sha:
                return "unchanged"
            raise PublishError(
                f"{form_id} v{version} is already published with a different definition; "
                f"a published version never changes: publish it as version "
                f"{_next_version(db, form_id)}.")
        db.execute("INSERT INTO forms (id, version, definition, sha256, published_at) "
                   "VALUES (?, ?, ?, ?, ?)",
                   [form_id, version, json.dumps(definition, ensure_ascii=False), sha,
                    clock.now_iso()])
        db.execute("INSERT INTO audit (at, username, action, details) VALUES (?, ?, ?, ?)",
                   [clock.now_iso(), by, "form_publish",
                    json.dumps({"form": form_id, "version": version, "sha256": sha})])
    return "published"


def _next_version(db, form_id):
    return db.execute("SELECT max(version) FROM forms WHERE id = ?", [form_id]).fetchone()[0] + 1


def publish_bundled(db):
    """Publish every form shipped with the package; returns [(id, version, outcome)]."""
    from schemas import forms
    done = []
    for definition in forms.bundled_definitions():
        done.append((definition["id"], definition["version"], publish(db, definition)))
    return done


def list_forms(db):
    return [{"id": r["id"], "version": r["version"], "sha256": r["sha256"],
             "published_at": r["published_at"], "definition": json.loads(r["definition"])}
            for r in db.query("SELECT * FROM forms ORDER BY id, version")]


# Compiled forms, shared by the threads of one process. Keyed by content
# hash, so a database switched under a long-lived process cannot serve a
# stale schema.
_compiled = {}
_lock = threading.Lock()


class Catalog:
    """The published forms of one database, compiled: `get(id, version)`."""

    def __init__(self, db):
        self._forms = {}
        rows = db.execute("SELECT id, version, sha256 FROM forms").fetchall()
        missing = [(i, v, s) for i, v, s in rows if s not in _compiled]
        for form_id, version, sha in missing:
            definition = json.loads(db.execute(
                "SELECT definition FROM forms WHERE id = ? AND version = ?",
                [form_id, version]).fetchone()[0])
            from schemas import forms
            compiled = forms.compile_form(definition)
            with _lock:
                _compiled[sha] = compiled
        for form_id, version, sha in rows:
            self._forms[(form_id, version)] = _compiled[sha]

    def get(self, form_id, version):
        """The compiled form, or None if that version is not published."""
        return self._forms.get((form_id, version))

    def has_form(self, form_id):
        return any(f == form_id for f, _ in self._forms)

    def versions(self, form_id):
        return sorted(v for f, v in self._forms if f == form_id)

    def all(self):
        return [self._forms[k] for k in sorted(self._forms)]

    def restricted_forms(self):
        """{form_id: restricted_to} for forms with a read restriction (latest wins)."""
        out = {}
        for (form_id, _), form in sorted(self._forms.items()):
            out[form_id] = form.definition.get("restricted_to")
        return {k: v for k, v in out.items() if v is not None}

    def unreadable_forms(self, user):
        """Form ids whose records `user` may not read (the latest version's
        `restricted_to`): the one rule pull, exports and review share."""
        return sorted(f for f, r in self.restricted_forms().items()
                      if not can_read_form(user, {"restricted_to": r}))

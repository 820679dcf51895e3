"""Form definitions in: read and check them (from a file, a dict or the
package data ``schemas/forms/<id>/v<n>.json``), their content hash, and the
compiled forms a process knows (the cache behind ``compile_form`` and the
``FormRegistry``)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources

from .compiled import CompiledForm
from .model import FormDefinitionError

BUNDLED_RE = re.compile(r"^v([1-9]\d*)\.json\Z")


def load_definition(path_or_dict, source=None) -> dict:
    """Read (from a JSON file or a dict) and check a form definition.

    :param path_or_dict: a path to a ``.json`` file, or the definition itself.
    :param source: how error messages name the definition (default: the path,
        else ``form '<id>'``).
    :raises FormDefinitionError: on any problem, naming the source and field.
    """
    if isinstance(path_or_dict, (str, os.PathLike)):
        source = source or str(path_or_dict)
        try:
            with open(path_or_dict, encoding="utf-8") as f:
                definition = json.load(f)
        except OSError as e:
            raise FormDefinitionError(f"{source}: cannot be read ({e.strerror})") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise FormDefinitionError(f"{source}: is not valid JSON ({e})") from None
    else:
        definition = path_or_dict
    _compile(definition, source)
    return definition


def bundled_definitions() -> list[dict]:
    """Every definition shipped as package data (``schemas/forms/<id>/v<n>.json``),
    sorted by id and version; works from an installed wheel in any folder."""
    found = []
    root = resources.files("schemas").joinpath("forms")
    if not root.is_dir():
        return []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        for item in folder.iterdir():
            match = BUNDLED_RE.match(item.name)
            if not match:
                continue
            source = f"schemas/forms/{folder.name}/{item.name}"
            try:
                definition = json.loads(item.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise FormDefinitionError(f"{source}: is not valid JSON ({e})") from None
            load_definition(definition, source)
            if definition["id"] != folder.name or definition["version"] != int(match.group(1)):
                raise FormDefinitionError(
                    f"{source}: holds id {definition['id']!r} version {definition['version']}; "
                    f"the file must be schemas/forms/<id>/v<version>.json")
            found.append(definition)
    found.sort(key=lambda d: (d["id"], d["version"]))
    return found


def definition_sha256(definition: dict) -> str:
    """The sha256 of the canonical JSON of a definition (sorted keys, no spaces,
    UTF-8): the content hash that makes a published version immutable."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_CACHE: dict[tuple, "CompiledForm"] = {}


def compile_form(definition: dict, source=None) -> "CompiledForm":
    """The compiled form for a definition, built once per (id, version, sha256).

    :raises FormDefinitionError: when the definition is malformed.
    """
    return _compile(definition, source)


def _compile(definition, source):
    if not isinstance(definition, dict):
        raise FormDefinitionError(f"{source or 'form definition'}: must be a JSON object")
    try:
        sha = definition_sha256(definition)
    except (TypeError, ValueError) as e:
        raise FormDefinitionError(f"{source or 'form definition'}: is not plain JSON ({e})") from None
    key = (definition.get("id"), definition.get("version"), sha)
    form = _CACHE.get(key) if isinstance(key[0], str) and type(key[1]) is int else None
    if form is None:
        if source is None:
            source = f"form {definition.get('id')!r}" if isinstance(definition.get("id"), str) \
                else "form definition"
        form = CompiledForm(definition, sha, source)
        _CACHE[key] = form
    return form


class FormRegistry:
    """The compiled forms one process knows, by id and version."""

    def __init__(self, definitions=()):
        self._forms: dict[tuple[str, int], CompiledForm] = {}
        for definition in definitions:
            self.add(definition)

    def add(self, definition: dict) -> "CompiledForm":
        """Compile and add a definition; the same version with other content is
        refused (a changed definition must take a new version)."""
        form = compile_form(definition)
        known = self._forms.get((form.id, form.version))
        if known is not None and known.sha256 != form.sha256:
            raise FormDefinitionError(
                f"form {form.id!r}: version {form.version} is already known with other content; "
                f"a changed definition must take a new version")
        self._forms[(form.id, form.version)] = form
        return form

    def get(self, form_id: str, version: int) -> "CompiledForm | None":
        return self._forms.get((form_id, version))

    def latest(self, form_id: str) -> "CompiledForm | None":
        versions = [f for (i, _), f in self._forms.items() if i == form_id]
        return max(versions, key=lambda f: f.version) if versions else None

    def all(self) -> list["CompiledForm"]:
        return [self._forms[k] for k in sorted(self._forms)]

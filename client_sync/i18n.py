"""The ``fieldsync`` command's own messages in the user's language (issue 17).

gettext with a committed catalog, shipped as package data:
``client_sync/translations/<lang>/LC_MESSAGES/cli.po`` and its compiled
``cli.mo`` (``make translations`` extracts, merges and compiles). English is
the source text and the default; ``--lang vi`` (or ``FIELDSYNC_LANG=vi``)
chooses Vietnamese, with English for any message not translated yet.
Labels, choices and validation messages come from the form definitions
instead (DESIGN.md, "Languages in form definitions").

Only the command line calls :func:`use`. The library's errors are raised in
English, but each message is a :class:`Text` made by :func:`N_` with its
values: the command line says it again in the user's language with
:func:`say` (the app has its own catalog, client_sync/app/translations).
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path

LOCALE_DIR = Path(__file__).with_name("translations")
DOMAIN = "cli"

_current: gettext.NullTranslations = gettext.NullTranslations()


@functools.lru_cache(maxsize=None)
def _translation(lang: str | None) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang or "en"], fallback=True)


def use(lang: str | None) -> None:
    """Speak `lang` from now on (``"en"``, ``"vi"``); an unknown one is English."""
    global _current
    _current = _translation(lang)


def _(message: str) -> str:
    """`message` (English, the catalog's id) in the chosen language."""
    return _current.gettext(message)


class Text(str):
    """An English message that keeps its catalog id and its values, so that
    it can be said again in another language (:func:`say`)."""

    template: str
    params: dict


def N_(message: str, **params) -> str:
    """Marks `message` for the catalog without translating it here (a text
    kept in a constant, or an error raised by the library, and translated
    where it is shown). With values, the English text filled in with them,
    as a :class:`Text`."""
    if not params:
        return message
    text = Text(message.format(**params))
    text.template, text.params = message, params
    return text


def kept(message: str) -> Text:
    """`message` (marked with :func:`N_`) as a :class:`Text` without values,
    so that it is translated where it is said even as the value of another
    text (a server's error inside the advice around it)."""
    text = Text(message)
    text.template, text.params = message, {}
    return text


def say(message, lang: str | None = None) -> str:
    """`message` (a string, a :class:`Text` or an exception raised with one)
    in `lang`, else the chosen language; a text the catalog does not hold
    stays as it is."""
    translate = (_translation(lang) if lang else _current).gettext
    if isinstance(message, BaseException):
        message = message.args[0] if len(message.args) == 1 else str(message)
    if isinstance(message, Text):
        if not message.params:
            return translate(message.template)
        return translate(message.template).format(**{
            name: say(value, lang) if isinstance(value, Text) else value
            for name, value in message.params.items()})
    return translate(str(message))


#: A record's sync states, shown by ``list``, ``show``, ``sync`` and ``status``.
SYNC_STATES = (N_("pending"), N_("sent"), N_("acknowledged"), N_("synced"), N_("conflict"),
               N_("rejected"), N_("forbidden"))

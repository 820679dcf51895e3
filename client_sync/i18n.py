"""The ``fieldsync`` command's own messages in the user's language (issue 17).

gettext with a committed catalog, shipped as package data:
``client_sync/translations/<lang>/LC_MESSAGES/cli.po`` and its compiled
``cli.mo`` (``make translations`` extracts, merges and compiles). English is
the source text and the default; ``--lang vi`` (or ``FIELDSYNC_LANG=vi``)
chooses Vietnamese, with English for any message not translated yet.
Labels, choices and validation messages come from the form definitions
instead (DESIGN.md, "Languages in form definitions").

Only the command line calls :func:`use`; the library's own messages stay in
English (the app has its own catalog, client_sync/app/translations).
"""

from __future__ import annotations

import gettext
from pathlib import Path

LOCALE_DIR = Path(__file__).with_name("translations")
DOMAIN = "cli"

_current: gettext.NullTranslations = gettext.NullTranslations()


def use(lang: str | None) -> None:
    """Speak `lang` from now on (``"en"``, ``"vi"``); an unknown one is English."""
    global _current
    _current = gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang or "en"],
                                   fallback=True)


def _(message: str) -> str:
    """`message` (English, the catalog's id) in the chosen language."""
    return _current.gettext(message)


def N_(message: str) -> str:
    """Marks `message` for the catalog without translating it here (a text
    kept in a constant and translated where it is shown)."""
    return message


#: A record's sync states, shown by ``list``, ``show``, ``sync`` and ``status``.
SYNC_STATES = (N_("pending"), N_("sent"), N_("acknowledged"), N_("synced"), N_("conflict"),
               N_("rejected"), N_("forbidden"))

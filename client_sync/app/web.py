"""What every page of the app shares: its language and this request's device."""

from __future__ import annotations

from flask import current_app, g, request

from ..client import Client
from . import locking

LANGUAGES = ("vi", "en")
LANGUAGE_COOKIE = "fieldsync_app_lang"   # not the console's: cookies ignore ports


def page_language():
    """The page language: the cookie the switch sets, else Vietnamese."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    return chosen if chosen in LANGUAGES else "vi"


def client() -> Client:
    """The device library for this request (opened once, closed at teardown)."""
    if "client" not in g:
        g.client = Client(current_app.config["DATA_DIR"], lang=page_language(),
                          passphrase=locking.held())
    return g.client


def close_client(exc=None):
    found = g.pop("client", None)
    if found is not None:
        found.close()

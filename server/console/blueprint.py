"""The console's blueprint and the extensions its pages share.

Its own module, below every page module, so that the pages import it
without importing the package that registers them (no import circle).
"""
from flask import Blueprint
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/console-static")

LANGUAGES = ("vi", "en")
LANGUAGE_COOKIE = "fieldsync_lang"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'")

csrf = CSRFProtect()
babel = Babel()

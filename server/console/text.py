"""Words and times on the console's pages: search folding, labels, local times."""
import unicodedata
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from babel.dates import format_timedelta
from flask import current_app
from flask_babel import get_locale

from schemas import clock as hlc


def fold(text):
    """`text` for diacritic-blind search: "Lý A Sáng" and "ly a sang" fold alike.

    NFD splits a letter from its marks, which are dropped; đ/Đ is a letter of
    its own (no decomposition) and is mapped to d by hand.
    """
    if not isinstance(text, str):
        return None
    text = text.replace("đ", "d").replace("Đ", "D")
    bare = "".join(c for c in unicodedata.normalize("NFD", text)
                   if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


# Vietnamese dictionary order: letters with their vowel marks are letters of
# their own (a < ă < â, d < đ, o < ô < ơ, u < ư); the five tones come second,
# in the order ngang, huyền, hỏi, ngã, sắc, nặng.
_ALPHABET = {c: i for i, c in enumerate("aăâbcdđeêfghijklmnoôơpqrstuưvwxyz")}
_TONES = {"\u0300": 1, "\u0309": 2, "\u0303": 3, "\u0301": 4, "\u0323": 5}


def sort_key(text):
    """A key that sorts Vietnamese names as a Vietnamese reader expects:
    "Dương" before "Đinh", "Ánh" after "An", tones only to break ties."""
    letters, tones = [], []
    for char in (text or "").casefold():
        parts = unicodedata.normalize("NFD", char)
        tone = next((_TONES[c] for c in parts if c in _TONES), 0)
        base = unicodedata.normalize("NFC", "".join(c for c in parts if c not in _TONES))
        letters.append(_ALPHABET.get(base, 100 + ord(base[0]) if base else 0))
        tones.append(tone)
    return letters, tones, text or ""


def language():
    locale = get_locale()
    return locale.language if locale else "vi"


def label(value, lang=None):
    """A form's label in the page language: a plain string as it is, or a
    `{"vi": …, "en": …}` object's entry for the language, else English, else
    any."""
    if isinstance(value, dict):
        lang = lang or language()
        return value.get(lang) or value.get("en") or next(iter(value.values()), "")
    return "" if value is None else str(value)


def tz():
    return ZoneInfo(current_app.config["TIMEZONE"])


def parse_time(value):
    """A server timestamp (ISO, `Z`) or a clock, as an aware datetime; or None."""
    if not value:
        return None
    try:
        if hlc.is_valid(value):
            return datetime.fromtimestamp(hlc.millis_of(value) / 1000, tz=timezone.utc)
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None


def local_time(value):
    """"2026-12-04 22:50" in the deployment's time zone (labelled on the page)."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(tz()).strftime("%Y-%m-%d %H:%M")


def ago(value, now=None):
    """How long ago, in words of the page language ("1 ngày", "3 hours")."""
    moment = parse_time(value)
    if moment is None:
        return ""
    now = now or datetime.now(timezone.utc)
    return format_timedelta(now - moment, locale=str(get_locale() or "vi"),
                            threshold=1.1)


def zone_label():
    """The time zone named and offset, for the pages' "times in …" line."""
    now = datetime.now(tz())
    offset = now.strftime("%z")
    return f"{current_app.config['TIMEZONE']} (UTC{offset[:3]}:{offset[3:]})"


def value_text(value):
    """A stored field value as text: lists joined, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {value_text(v)}" for k, v in value.items())
    return str(value)


def init_app(app):
    env = app.jinja_env
    env.filters.update(local_time=local_time, ago=ago, label=label, value_text=value_text)
    env.globals.update(zone_label=zone_label, language=language)

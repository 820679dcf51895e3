"""Languages: the text of a definition in the language asked for, and the one
table of the validator's own messages in every language it speaks.

A definition's ``label``, ``hint``, check ``message`` and choice ``label``
is plain text (English) or ``{"en": "...", "vi": "..."}`` (DESIGN.md
"Languages in form definitions"). Validation always speaks English: its
messages are the contract's (push answers, stored rejections) and stay
byte-identical whatever a definition adds. A message is put into another
language afterwards, by ``CompiledForm.localize`` / ``describe_errors``: a
form's own messages (checks, "is not asked when …") through the form's map,
the validator's built-in ones through ``BUILTIN`` below, matched as
templates. A message no entry matches is left in English (the fallback).

To add a language: a column in ``BUILTIN``, ``CONDITION_WORDS`` and
``UNITS``, and its code in ``LANGUAGES``.
"""
from __future__ import annotations

import re

DEFAULT = "en"
LANGUAGES = ("en", "vi")
LANG_RE = re.compile(r"^[a-z]{2,3}\Z")


def text_in(value, lang: str | None) -> str | None:
    """A definition's text in `lang`: a plain string is English and serves
    every language; an object falls back to its English."""
    if value is None or isinstance(value, str):
        return value
    return value.get(lang or DEFAULT) or value[DEFAULT]


def english(value) -> str | None:
    """The English of a definition's text (what validation says)."""
    return text_in(value, DEFAULT)


def text_problem(value) -> str | None:
    """Why `value` is not a definition text (None if it is one)."""
    if isinstance(value, str):
        return None
    if not isinstance(value, dict) or DEFAULT not in value:
        return 'must be text or {"en": text, "vi": text, …} (English is required: it is the fallback)'
    for key, text in value.items():
        if not isinstance(key, str) or not LANG_RE.match(key):
            return f"has {key!r}, which is not a language code (two or three lowercase letters)"
        if not isinstance(text, str) or not text.strip():
            return f"its {key!r} text must be non-empty text"
    return None


def best_language(header: str | None) -> str:
    """The language of ours an ``Accept-Language`` header prefers most
    (``vi-VN,vi;q=0.9,en;q=0.8`` → ``vi``); English when none is ours."""
    best, best_q = DEFAULT, 0.0
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        code = tag.strip().lower().split("-")[0]
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if code in LANGUAGES and q > best_q:
            best, best_q = code, q
    return best


# -- the validator's built-in messages --------------------------------------
#
# English template, then the same in each other language. A slot is {name};
# its text is carried over as it is, except {ref} (a bound's other field and
# offset, "(visit_date + 42 days)") whose units are translated. The English
# side must be exactly what the modules write (values, compiler, bounds,
# evaluate, model); tests/test_form_languages.py checks the main ones.
BUILTIN = [
    ("is required", {"vi": "bắt buộc phải nhập"}),
    ("unknown field", {"vi": "không phải là trường của biểu mẫu này"}),
    ("computed; it is derived, never sent", {"vi": "là trường tự tính; không được gửi lên"}),
    ("must be an object of field values", {"vi": "phải là một đối tượng gồm các giá trị của trường"}),
    ("must be a list of entries", {"vi": "phải là một danh sách các mục"}),
    ("must be text", {"vi": "phải là chữ"}),
    ("is too large", {"vi": "quá lớn"}),
    ("must be a whole number", {"vi": "phải là số nguyên"}),
    ("must be a number", {"vi": "phải là số"}),
    ("must be true or false", {"vi": "phải là có hoặc không"}),
    ("must be a date (YYYY-MM-DD)", {"vi": "phải là ngày (YYYY-MM-DD)"}),
    ("is not a real date", {"vi": "không phải là ngày có thật"}),
    ("must be a time (HH:MM or HH:MM:SS)", {"vi": "phải là giờ (HH:MM hoặc HH:MM:SS)"}),
    ("must be a date and time with its UTC offset (e.g. 2025-03-01T08:30:00+07:00)",
     {"vi": "phải là ngày giờ kèm độ lệch múi giờ (ví dụ 2025-03-01T08:30:00+07:00)"}),
    ("is not a real date and time", {"vi": "không phải là ngày giờ có thật"}),
    ("must be a list of choices", {"vi": "phải là một danh sách lựa chọn"}),
    ("must be one of: {list}", {"vi": "phải là một trong: {list}"}),
    ("{v} is not one of: {list}", {"vi": "{v} không thuộc: {list}"}),
    ("lists {v} more than once", {"vi": "có {v} nhiều hơn một lần"}),
    ("must be a record id (a UUID)", {"vi": "phải là mã bản ghi (UUID)"}),
    ("must be an object with lat and lon", {"vi": "phải là một đối tượng có lat và lon"}),
    ("{v} is not a geopoint key (lat, lon, accuracy_m)",
     {"vi": "{v} không phải là khóa của toạ độ (lat, lon, accuracy_m)"}),
    ("{key} is required", {"vi": "bắt buộc phải có {key}"}),
    ("{key} must be a number", {"vi": "{key} phải là số"}),
    ("{key} must be between {n} and {m}", {"vi": "{key} phải trong khoảng {n} đến {m}"}),
    ("{key} must be at least {n}", {"vi": "{key} không được nhỏ hơn {n}"}),
    ("must be at least {n} characters long", {"vi": "phải có ít nhất {n} ký tự"}),
    ("must be at most {n} characters long", {"vi": "chỉ được có tối đa {n} ký tự"}),
    ("is not in the expected format", {"vi": "không đúng định dạng"}),
    ("must have at least {n} entries", {"vi": "phải có ít nhất {n} mục"}),
    ("must have at most {n} entries", {"vi": "chỉ được có tối đa {n} mục"}),
    ("must have at least {n} choices selected", {"vi": "phải chọn ít nhất {n} lựa chọn"}),
    ("must have at most {n} choices selected", {"vi": "chỉ được chọn tối đa {n} lựa chọn"}),
    ("cannot be in the future", {"vi": "không được là ngày trong tương lai"}),
    ("must be at least {n}{ref}", {"vi": "không được nhỏ hơn {n}{ref}"}),
    ("must be at most {n}{ref}", {"vi": "không được lớn hơn {n}{ref}"}),
    ("must be on or after {d}{ref}", {"vi": "phải từ ngày {d} trở về sau{ref}"}),
    ("must be on or before {d}{ref}", {"vi": "không được sau ngày {d}{ref}"}),
    ("must be at or after {d}{ref}", {"vi": "phải từ {d} trở về sau{ref}"}),
    ("must be at or before {d}{ref}", {"vi": "không được sau {d}{ref}"}),
]

# "is not asked when …": the words of a condition (conditions._WORDS in
# English), per operator: (holds, does not hold).
CONDITION_WORDS = {
    "vi": {
        "eq": ("là {v}", "không là {v}"),
        "ne": ("không là {v}", "là {v}"),
        "in": ("là một trong: {v}", "không thuộc: {v}"),
        "gt": ("lớn hơn {v}", "không lớn hơn {v}"),
        "ge": ("từ {v} trở lên", "nhỏ hơn {v}"),
        "lt": ("nhỏ hơn {v}", "không nhỏ hơn {v}"),
        "le": ("không quá {v}", "lớn hơn {v}"),
        "contains": ("có chọn {v}", "không chọn {v}"),
    },
}
NOT_ASKED = {"en": "is not asked when {cond}", "vi": "không được hỏi khi {cond}"}
JOINERS = {"en": (" and ", " or "), "vi": (" và ", " hoặc ")}
EMPTY = {"vi": "trống"}
# Units of a bound's offset ("+ 42 days").
UNITS = {"vi": {"day": "ngày", "week": "tuần", "month": "tháng", "year": "năm"}}

_SLOTS = {
    "n": r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|inf",
    "m": r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|inf",
    "d": r"[0-9][0-9:T.+-]*",
    "ref": r"(?: \([^()]*\))?",
    "key": r"lat|lon|accuracy_m",
}
_UNIT_RE = re.compile(r"(\d+) (day|week|month|year)s?\b")


def _pattern(template):
    out, last = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[last:m.start()]))
        name = m.group(1)
        out.append(f"(?P<{name}>{_SLOTS.get(name, '.+')})")
        last = m.end()
    out.append(re.escape(template[last:]))
    return re.compile("".join(out) + r"\Z")


_EXACT = {en: texts for en, texts in BUILTIN if "{" not in en}
_TEMPLATES = [(_pattern(en), texts) for en, texts in BUILTIN if "{" in en]


def _ref(text, lang):
    units = UNITS.get(lang)
    if not text or not units:
        return text
    text = _UNIT_RE.sub(lambda m: f"{m.group(1)} {units[m.group(2)]}", text)
    if lang == "vi":
        text = text.replace("(empty", f"({EMPTY['vi']}")
    return text


def builtin(message: str, lang: str) -> str | None:
    """A built-in message of the validator in `lang`, or None if it is not one."""
    exact = _EXACT.get(message)
    if exact is not None:
        return exact.get(lang)
    for pattern, texts in _TEMPLATES:
        m = pattern.match(message)
        if m is not None:
            template = texts.get(lang)
            if template is None:
                return None
            slots = m.groupdict()
            if "ref" in slots:
                slots["ref"] = _ref(slots["ref"], lang)
            return template.format(**slots)
    return None


def translate(message, lang: str, own: dict | None = None):
    """`message` in `lang`: the form's own map first, then the built-in
    table; the English as it is when neither knows it."""
    if lang == DEFAULT or not isinstance(message, str):
        return message
    if own:
        texts = own.get(message)
        if texts is not None:
            return texts.get(lang, message)
    found = builtin(message, lang)
    return message if found is None else found


def localize(messages, lang: str, own: dict | None = None):
    """A whole ``{field: [messages]}`` tree (repeats nested) in `lang`; the
    shape is unchanged."""
    if lang == DEFAULT:
        return messages
    if isinstance(messages, dict):
        return {k: localize(v, lang, own) for k, v in messages.items()}
    if isinstance(messages, list):
        return [localize(m, lang, own) for m in messages]
    return translate(messages, lang, own)

"""Computed fields: the fixed registry of functions a form definition may name.

A definition says ``{"compute": {"function": "days_between", "inputs": {"start":
"outcome_date", "end": "visit_date"}}}``; it can never carry code. Each function
takes the *canonical* values the form compiler produces (dates as
``"YYYY-MM-DD"``, multi_choice as lists) and is pure, so the server and every
device derive the same value. Any input that is null or absent makes the result
null, and so does an input the function cannot read (never an exception).

A function may name *optional* parameters: a null there is passed on as None
instead of making the result null (``who_zscores`` scores the height of a
child whose weight is missing). ``who_zscores`` is also the one function with
several outputs: ``who_zscores`` answers all of them as one object, and each
output is registered on its own as ``who_zscores.<output>`` (one computed
field each, so that checks can read ``whz`` or ``nutrition_class``); a
record's outputs are computed once (see ``growth_outputs``).
"""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Callable

from . import growth

# Names kept for functions that are planned; a definition may not use them yet.
RESERVED: dict[str, str] = {}

DATES = frozenset({"date", "datetime"})

# WHO/UNICEF 2021 IYCF 24-hour recall (DOMAIN.md §1.6, [S6]). Exclusive
# breastfeeding allows ORS, drops and syrups, and nothing else but breast milk.
NOT_EXCLUSIVE = frozenset({"water", "formula", "other_milk", "other_liquids", "semi_solid_food"})
RECALL_ALLOWED = frozenset({"breast_milk", "ORS_drops_syrups", "none"}) | NOT_EXCLUSIVE

# The 8 IYCF food groups; minimum dietary diversity is at least 5 of them.
IYCF_GROUPS = frozenset({
    "breast_milk", "grains_roots_tubers", "pulses_nuts_seeds", "dairy",
    "flesh_foods", "eggs", "vit_A_fruits_veg", "other_fruits_veg",
})
MDD_MINIMUM = 5


@dataclass(frozen=True)
class Function:
    """A registered function: its parameters (each with the field types it
    accepts), the type of its result, and an optional check of the input fields
    (returns a problem, or None) run when a definition is compiled."""

    name: str
    fn: Callable[..., Any]
    params: dict[str, frozenset[str]]
    result: str
    check: Callable[[dict[str, dict]], str | None] | None = None
    #: parameters that may be null (passed on as None); any other null input
    #: makes the result null.
    optional: frozenset[str] = frozenset()

    def __call__(self, **kwargs):
        """The result for these canonical inputs; null if a required one is null,
        or any is unreadable."""
        for name, value in kwargs.items():
            if value is None and name not in self.optional:
                return None
        try:
            return self.fn(**kwargs)
        except (TypeError, ValueError, AttributeError, OverflowError):
            return None


REGISTRY: dict[str, Function] = {}


def register(name, result, params, check=None, optional=()):
    """Decorator adding a function to the registry under `name`."""

    def add(fn):
        REGISTRY[name] = Function(name, fn, {k: frozenset(v) for k, v in params.items()}, result, check,
                                  frozenset(optional))
        return fn

    return add


def _date(value: str) -> dt.date:
    # A datetime's canonical text starts with its (local) date.
    return dt.date.fromisoformat(value[:10])


@register("days_between", "integer", {"start": DATES, "end": DATES})
def days_between(start, end):
    """Whole days from `start` to `end` (negative if `end` is earlier)."""
    return (_date(end) - _date(start)).days


@register("weeks_between", "integer", {"start": DATES, "end": DATES})
def weeks_between(start, end):
    """Completed weeks from `start` to `end`, truncated towards zero."""
    days = (_date(end) - _date(start)).days
    return days // 7 if days >= 0 else -((-days) // 7)


@register("age_years", "integer", {"dob": DATES, "on": DATES})
def age_years(dob, on):
    """Completed years of age on the date `on` (a 29 February birthday counts
    on 1 March in common years)."""
    born, day = _date(dob), _date(on)
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _check_recall(inputs):
    choices = _choice_values(inputs["recall"])
    unknown = sorted(choices - RECALL_ALLOWED)
    if "breast_milk" not in choices:
        return "the recall needs a 'breast_milk' choice"
    if unknown:
        # An unknown liquid would silently count as allowed: refuse it.
        return "the recall has choices exclusive_bf does not know: " + ", ".join(unknown)
    return None


@register("exclusive_bf", "boolean", {"recall": {"multi_choice"}}, check=_check_recall)
def exclusive_bf(recall):
    """WHO 2021: breast milk yesterday and no water, formula, other milk, other
    liquids or semi-solid food (ORS, drops and syrups are allowed)."""
    return "breast_milk" in recall and NOT_EXCLUSIVE.isdisjoint(recall)


def _check_groups(inputs):
    choices = _choice_values(inputs["groups"])
    missing = sorted(IYCF_GROUPS - choices)
    unknown = sorted(choices - IYCF_GROUPS - {"none"})
    if missing:
        return "the food groups lack: " + ", ".join(missing)
    if unknown:
        return "the food groups have choices mdd_met does not know: " + ", ".join(unknown)
    return None


@register("mdd_met", "boolean", {"groups": {"multi_choice"}}, check=_check_groups)
def mdd_met(groups):
    """Minimum dietary diversity (WHO 2021): at least 5 of the 8 IYCF food groups."""
    return len(IYCF_GROUPS.intersection(groups)) >= MDD_MINIMUM


@register("count_selected", "integer", {"values": {"multi_choice", "repeat"}})
def count_selected(values):
    """How many values are selected (or entries a repeat holds)."""
    if not isinstance(values, list):
        raise TypeError("not a list")
    return len(values)


LIVE_BORN = frozenset({"alive", "died_after_birth"})


def _check_babies(inputs):
    fields = {f.get("name"): f for f in inputs["babies"].get("fields") or () if isinstance(f, dict)}
    if not LIVE_BORN <= _choice_values(fields.get("status") or {}):
        return "the babies need a status choice with the values alive and died_after_birth"
    return None


@register("count_live_born", "integer", {"babies": {"repeat"}}, check=_check_babies)
def count_live_born(babies):
    """How many babies of a birth were born alive (status alive or
    died_after_birth), the live births of DOMAIN.md §2."""
    if not isinstance(babies, list):
        raise TypeError("not a list")
    return sum(1 for b in babies if isinstance(b, dict) and b.get("status") in LIVE_BORN)


# -- WHO growth z-scores (schemas/growth.py), for the growth form

GROWTH_ALGO = "who2006-anthro/1"   # stored with the values (DOMAIN §1.11.4)
GROWTH_PARAMS = {
    "sex": {"choice"},                 # male / female (or M / F)
    "dob_precision": {"choice"},       # exact / month / year: no z-score for a year-only dob
    "age_days": {"integer"},           # days from dob to measurement (days_between)
    "weight": {"decimal", "integer"},  # kg
    "lenhei": {"decimal", "integer"},  # cm as measured
    "position": {"choice"},            # lying / standing
    "oedema": {"boolean"},             # bilateral pitting oedema
    "muac": {"integer", "decimal"},    # mm
}
GROWTH_OPTIONAL = ("weight", "lenhei", "position", "muac")
SEX_CODES = {"male": "M", "female": "F", "M": "M", "F": "F"}
# Each output and the type of its value.
GROWTH_OUTPUTS = {
    "waz": "decimal", "haz": "decimal", "whz": "decimal", "baz": "decimal",
    "flags": "list", "nutrition_class": "string",
    **dict.fromkeys(growth.STATUS, "boolean"),
    "algo": "string",
}


def _check_growth(inputs):
    sexes = _choice_values(inputs["sex"])
    if not sexes or not sexes <= set(SEX_CODES) or len({SEX_CODES[s] for s in sexes}) != 2:
        return "the sex choices must be male and female (or M and F)"
    if not _choice_values(inputs["position"]) <= set(growth.MEASURES):
        return "the position choices must be lying and standing"
    if not {"exact", "year"} <= _choice_values(inputs["dob_precision"]):
        return "the dob_precision choices must include exact and year"
    return None


@functools.lru_cache(maxsize=64)
def growth_outputs(sex, dob_precision, age_days, weight, lenhei, position, oedema, muac):
    """Every output of who_zscores for one measurement (cached: a record's
    outputs are separate computed fields of the same inputs).

    z-scores are rounded to 2 decimals, as WHO anthro stores them; the flags
    and the classes are WHO's, on those values. Everything is null when the
    dob is known to the year only (DOMAIN §1.2), the sex is not male/female,
    or the age is outside 0–1826 days; ``algo`` names the method.
    """
    code = SEX_CODES.get(sex)
    if dob_precision == "year" or code is None or type(age_days) is not int:
        z = dict.fromkeys(growth.INDICES)
        age_days = None
    else:
        z = growth.rounded(growth.zscores(code, age_days, weight, lenhei,
                                          position if position in growth.MEASURES else None, oedema is True))
    out = {**z, "flags": tuple(growth.flags(z)), **growth.classify(age_days, z, muac, oedema is True)}
    # Stored as the v2 growth form's field names it (docs/forms.md): "sam", "mam", "normal".
    if out["nutrition_class"] is not None:
        out["nutrition_class"] = out["nutrition_class"].lower()
    out["algo"] = GROWTH_ALGO
    return out


def _growth(key):
    def output(sex, dob_precision, age_days, oedema, weight=None, lenhei=None, position=None, muac=None):
        value = growth_outputs(sex, dob_precision, age_days, weight, lenhei, position, oedema, muac)
        # Copies: the cached answer is shared.
        if key is None:
            return {**value, "flags": list(value["flags"])}
        return list(value[key]) if key == "flags" else value[key]
    output.__doc__ = f"who_zscores output {key!r}" if key else "every who_zscores output, as one object"
    return output


register("who_zscores", "object", GROWTH_PARAMS, _check_growth, GROWTH_OPTIONAL)(_growth(None))
for _key, _type in GROWTH_OUTPUTS.items():
    register(f"who_zscores.{_key}", _type, GROWTH_PARAMS, _check_growth, GROWTH_OPTIONAL)(_growth(_key))


def _choice_values(field: dict) -> set:
    return {c.get("value") for c in field.get("choices") or () if isinstance(c, dict)}

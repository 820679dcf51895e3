"""Computed fields: the fixed registry of functions a form definition may name.

A definition says ``{"compute": {"function": "days_between", "inputs": {"start":
"outcome_date", "end": "visit_date"}}}``; it can never carry code. Each function
takes the *canonical* values the form compiler produces (dates as
``"YYYY-MM-DD"``, multi_choice as lists) and is pure, so the server and every
device derive the same value. Any input that is null or absent makes the result
null, and so does an input the function cannot read (never an exception).

Reserved, not yet registered: ``who_zscores`` (WHO 2006 child-growth z-scores
for the growth form, DOMAIN.md §4: vendored WHO tables plus the restricted-z
algorithm). A definition naming it gets a clear FormDefinitionError until the
function ships; adding it here is the only change the compiler needs.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

# Names kept for functions that are planned; a definition may not use them yet.
RESERVED = {
    "who_zscores": "is reserved for the WHO growth z-scores, which are not available yet",
}

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

    def __call__(self, **kwargs):
        """The result for these canonical inputs; null if any is null or unreadable."""
        for value in kwargs.values():
            if value is None:
                return None
        try:
            return self.fn(**kwargs)
        except (TypeError, ValueError, AttributeError, OverflowError):
            return None


REGISTRY: dict[str, Function] = {}


def register(name, result, params, check=None):
    """Decorator adding a function to the registry under `name`."""

    def add(fn):
        REGISTRY[name] = Function(name, fn, {k: frozenset(v) for k, v in params.items()}, result, check)
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


def _choice_values(field: dict) -> set:
    return {c.get("value") for c in field.get("choices") or () if isinstance(c, dict)}

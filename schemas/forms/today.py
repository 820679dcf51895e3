""""Today" in the deployment time zone, and dates moved by days, weeks,
months or years: what every today-relative bound is measured from."""
from __future__ import annotations

import calendar
import datetime as dt
import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
GRACE = dt.timedelta(days=1)


_ZONES: dict[str, ZoneInfo] = {}


def local_today(tz_name: str | None = None) -> dt.date:
    """Today's date in the deployment time zone (``tz_name``, else
    ``FIELDSYNC_TIMEZONE``, default Asia/Ho_Chi_Minh): the "today" of every bound."""
    name = tz_name or os.environ.get("FIELDSYNC_TIMEZONE") or DEFAULT_TIMEZONE
    zone = _ZONES.get(name)
    if zone is None:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"FIELDSYNC_TIMEZONE={name!r} is not a known time zone") from None
        _ZONES[name] = zone
    return dt.datetime.now(zone).date()


def _shift(day: dt.date, sign: str, n: int, unit: str) -> dt.date:
    """`day` moved by n days/weeks/months/years; the 31st or 29 February clamp
    to the month's last day."""
    n = -n if sign == "-" else n
    if unit == "d":
        return day + dt.timedelta(days=n)
    if unit == "w":
        return day + dt.timedelta(weeks=n)
    months = n * 12 if unit == "y" else n
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))

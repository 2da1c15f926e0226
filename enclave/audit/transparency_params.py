"""The transparency report's parameters (``from``, ``to``, ``period``) and its calendar
periods; every problem with the parameters is listed at once."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from enclave.inputs import MAX_YEAR, MIN_YEAR

PERIODS: tuple[str, ...] = ("month", "quarter", "year", "all")
MAX_PERIODS = 1200  # periods in one report (a century of months)
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", re.ASCII)


@dataclass(frozen=True)
class ReportParams:
    """``start`` inclusive, ``end`` exclusive (UTC dates); ``None``: from the first record's
    day, to the day after the last counted record's."""

    start: dt.date | None = None
    end: dt.date | None = None
    period: str = "all"


def parse_params(
    start: str | None, end: str | None, period: str | None
) -> tuple[ReportParams, list[str]]:
    """Read the report's parameters; the second value lists every problem (empty if none)."""
    problems: list[str] = []
    first = _date(start, "from", problems)
    last = _date(end, "to", problems)
    if period is not None and period not in PERIODS:
        problems.append("period: must be one of " + ", ".join(PERIODS))
        period = None
    params = ReportParams(first, last, period or "all")
    if first is not None and last is not None:
        if first >= last:
            problems.append("from: must be earlier than to")
        elif len(period_bounds(first, last, params.period)) > MAX_PERIODS:
            problems.append(f"to: the range holds more than {MAX_PERIODS} periods")
    return params, problems


def _date(text: str | None, name: str, problems: list[str]) -> dt.date | None:
    if text is None or text == "":
        return None
    try:
        if not _DATE.match(text):
            raise ValueError
        day = dt.date.fromisoformat(text)
        if not MIN_YEAR <= day.year < MAX_YEAR:
            raise ValueError
    except ValueError:
        problems.append(f"{name}: must be a date YYYY-MM-DD between {MIN_YEAR} and {MAX_YEAR}")
        return None
    return day


def period_bounds(start: dt.date, end: dt.date, period: str) -> list[tuple[str, dt.date, dt.date]]:
    """``(label, from, to)`` of each calendar period meeting ``[start, end)``, clipped to it."""
    if period == "all":
        return [("all", start, end)] if start < end else []
    out: list[tuple[str, dt.date, dt.date]] = []
    cursor = start
    while cursor < end and len(out) <= MAX_PERIODS:
        label, nxt = _next_boundary(cursor, period)
        out.append((label, cursor, min(nxt, end)))
        cursor = nxt
    return out


def _next_boundary(day: dt.date, period: str) -> tuple[str, dt.date]:
    if period == "year":
        return f"{day.year}", dt.date(day.year + 1, 1, 1)
    if period == "quarter":
        q = (day.month - 1) // 3
        month = 3 * q + 4
        nxt = dt.date(day.year + 1, 1, 1) if month > 12 else dt.date(day.year, month, 1)
        return f"{day.year}-Q{q + 1}", nxt
    nxt = dt.date(day.year + 1, 1, 1) if day.month == 12 else dt.date(day.year, day.month + 1, 1)
    return f"{day.year}-{day.month:02d}", nxt

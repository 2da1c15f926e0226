"""Budget arithmetic: pure functions, exact Decimal, no I/O.

The ledger stores every debit as a Decimal string, and all sums and comparisons here are exact:
ten spends of 0.1 fit a budget of 1.0 and an eleventh does not (in binary floats the tenth
would already overshoot). Floats enter only through ``to_decimal``, which goes via ``str`` so
``0.1`` becomes ``Decimal("0.1")``, not the 55-digit binary expansion.

The same rule runs twice per query: as a pre-check before any data is touched, and again inside
the store's transaction (``Store.append``), which is the one that counts.

Periods: a tier without ``period_days`` has one lifetime budget. With ``period_days`` the
budget renews every ``period_days`` days counted from the licence's ``valid_from``; only
debits since the start of the current period count. Renewal on unchanged data weakens the
guarantee (the contract documents it as a risk), so it is off unless set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext

ZERO = Decimal(0)

#: Additions and comparisons run in this context: wide enough for any realistic amount, and
#: ``Inexact`` is trapped, so a sum that would need rounding raises instead of silently
#: rounding (the default context keeps 28 digits: 1.0 + 1E-28 would round to 1.0 and "fit").
EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])


def to_decimal(value: Decimal | int | float | str) -> Decimal:
    """An exact, finite, non-negative Decimal. ``ValueError`` for NaN, infinity, negatives,
    booleans and text that is not a number."""
    if isinstance(value, bool):
        raise ValueError("a budget amount must be a number, not a boolean")
    if isinstance(value, float):
        value = repr(value)  # the shortest repr: 0.1 -> "0.1"
    try:
        result = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError("a budget amount must be a number") from None
    if not result.is_finite():
        raise ValueError("a budget amount must be finite")
    if result < 0:
        raise ValueError("a budget amount must not be negative")
    return result


def period_window(
    valid_from: dt.datetime, period_days: int | None, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(since, renews_at)`` of the budget period containing ``now``.

    ``(None, None)`` without a period: the budget covers the licence's lifetime and never
    renews. Before ``valid_from`` the first period is returned. Periods are whole multiples of
    ``period_days`` from ``valid_from``, so every replica computes the same window.
    """
    if period_days is None:
        return None, None
    if period_days <= 0:
        raise ValueError("period_days must be positive")
    length = dt.timedelta(days=period_days)
    elapsed = now - valid_from
    index = max(0, elapsed // length)
    since = valid_from + index * length
    return since, since + length


def remaining(
    spent_eps: Decimal, spent_delta: Decimal, limit_eps: Decimal, limit_delta: Decimal
) -> tuple[Decimal, Decimal]:
    """What is left of each limit, never below zero."""
    with localcontext(EXACT):
        return max(ZERO, limit_eps - spent_eps), max(ZERO, limit_delta - spent_delta)


def fits(spent: Decimal, cost: Decimal, limit: Decimal) -> bool:
    """Whether spending ``cost`` on top of ``spent`` stays within ``limit`` (exactly)."""
    with localcontext(EXACT):
        return spent + cost <= limit


def exact_sum(values: Iterable[Decimal | str]) -> Decimal:
    """The exact sum of ledger amounts (Decimal strings as stored)."""
    total = ZERO
    with localcontext(EXACT):
        for value in values:
            total += Decimal(value)
    return total


def charge_fits(
    spent_eps: Decimal,
    spent_delta: Decimal,
    cost_eps: Decimal,
    cost_delta: Decimal,
    limit_eps: Decimal,
    limit_delta: Decimal,
) -> bool:
    """Both dimensions of a charge fit: the rule ``Store.append`` re-checks in its
    transaction."""
    return fits(spent_eps, cost_eps, limit_eps) and fits(spent_delta, cost_delta, limit_delta)

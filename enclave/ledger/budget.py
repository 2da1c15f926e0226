"""Budget rules: pure functions over grid units (``grid.py``), no I/O, nothing that can raise.

The ledger stores every debit as whole grid units (``Amount``), so sums and comparisons are
integer operations: ten spends of 0.1 fit a budget of 1.0 and an eleventh does not.

The same rule runs twice per query: as a pre-check before any data is touched, and again inside
the store's transaction (``Store.debit``), which is the one that counts and which returns the
new spent total, so nothing after the commit has to compute (or can fail to compute) it.

Periods: a tier without ``period_days`` has one lifetime budget. With ``period_days`` the
budget renews every ``period_days`` days counted from the licence's ``valid_from``; only
debits since the start of the current period count. Renewal on unchanged data weakens the
guarantee (each period spends the budget again on the same rows), so it is off unless set.
"""

from __future__ import annotations

import datetime as dt

from enclave.ledger.grid import Amount
from enclave.models import Tier

MAX_PERIOD_DAYS = 36500  # 100 years; a tier setting beyond it is refused where given


def tier_limit(tier: Tier) -> Amount:
    """The tier's budget in grid units (validated tiers lie on the grid: exact)."""
    return Amount.limit(tier.budget_epsilon, tier.budget_delta)


def period_window(
    valid_from: dt.datetime, period_days: int | None, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(since, renews_at)`` of the budget period containing ``now``.

    ``(None, None)`` without a period: the budget covers the licence's lifetime and never
    renews. Before ``valid_from`` the first period is returned. Periods are whole multiples of
    ``period_days`` from ``valid_from``, so every replica computes the same window. Total: a
    period (clamped to ``[1, MAX_PERIOD_DAYS]``) whose end lies beyond the calendar's last
    day never renews (``renews_at`` None).
    """
    if period_days is None:
        return None, None
    length = dt.timedelta(days=min(max(1, period_days), MAX_PERIOD_DAYS))
    index = max(0, (now - valid_from) // length)
    since = valid_from + index * length  # <= max(now, valid_from): within the calendar
    try:
        return since, since + length
    except OverflowError:
        return since, None

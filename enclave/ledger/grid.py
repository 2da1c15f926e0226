"""The ledger's fixed grid: every epsilon and delta the gateway charges, caps or budgets is a
whole number of grid units, kept and summed as Python ``int`` (exact, unbounded, never raises).

- epsilon: units of ``0.000001`` (1e-6). Per-query epsilons below the tier's
  ``min_epsilon_per_query`` (default 0.001 = 1000 units) are refused before anything else, so
  a single unit only matters for rounding.
- delta: units of ``1e-15``. Deltas are below 1 (at most 10**15 units); realistic budgets are
  1e-5 to 1e-9 (10**10 to 10**6 units), so a unit is at most a millionth of a realistic budget.

Why a grid: the earlier ledger kept Decimal strings and summed them in a 200-digit context that
trapped ``Inexact``. An epsilon of 1e-250 was charged, committed, and then every later sum of
that licence raised, so the licence answered 500 for good. On a grid there is nothing left to
round once an amount is in the ledger: sums, differences and comparisons are integer
operations.

Rounding: a *charge* is rounded up to the grid (never down), and the mechanism is calibrated
at an epsilon no larger than the charge, so the privacy loss stays at or below what is charged.
Budgets and caps given by admins must lie on the grid (``policy/fields.py`` refuses others).

Bounds (refused where given, with a 400): epsilons at most ``MAX_EPSILON`` (10**6, i.e. 10**12
units), deltas in ``[0, 1)``. A row of the ledger therefore always fits a signed 64-bit integer
(the column type in both stores); sums are done by PostgreSQL ``SUM(bigint)`` (a ``numeric``,
exact) or in Python, never by SQLite's ``SUM``, which raises on 64-bit overflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation
from typing import Any

EPSILON_EXP = 6  # epsilon unit = 10**-6
DELTA_EXP = 15  # delta unit = 10**-15
EPSILON_UNIT = Decimal(1).scaleb(-EPSILON_EXP)
DELTA_UNIT = Decimal(1).scaleb(-DELTA_EXP)
MAX_EPSILON = Decimal(10**6)
MAX_EPSILON_UNITS = 10**12
MAX_DELTA_UNITS = 10**15  # delta 1, exclusive for budgets
DEFAULT_MIN_EPSILON = Decimal("0.001")
DEFAULT_EPSILON = Decimal("0.1")  # a tier's default_epsilon when it sets none (within its bounds)

#: a lifetime total (``ledger_totals``) stops growing here (far beyond any budget: 2**62 units),
#: so adding one more charge (at most 10**12 units) never overflows a 64-bit column
TOTAL_CAP = 2**62

# Quantising a value already known to lie in [0, 10**6] needs at most 22 digits; 60 leaves room
# for any digits the input carries (they are dropped by the rounding, not by the context).
_CONTEXT = Context(prec=60)


def _units(value: Decimal, exp: int, top: int, rounding: str) -> int:
    """``value / 10**-exp`` rounded to an integer, clamped to ``[0, top]``. NaN counts as
    ``top``: an amount that cannot be read is treated as the largest (it can only refuse)."""
    if value.is_nan() or value >= Decimal(top).scaleb(-exp):  # exact comparisons
        return top
    if value <= 0:
        return 0
    try:
        q = value.quantize(Decimal(1).scaleb(-exp), rounding=rounding, context=_CONTEXT)
        return min(top, int(q.scaleb(exp, context=_CONTEXT)))
    except (InvalidOperation, ValueError, OverflowError):  # pragma: no cover - bounded above
        return top


def epsilon_up(value: Decimal) -> int:
    """An epsilon charge in units, rounded up (clamped to ``MAX_EPSILON_UNITS``)."""
    return _units(value, EPSILON_EXP, MAX_EPSILON_UNITS, ROUND_CEILING)


def delta_up(value: Decimal) -> int:
    """A delta charge in units, rounded up (clamped to ``MAX_DELTA_UNITS``)."""
    return _units(value, DELTA_EXP, MAX_DELTA_UNITS, ROUND_CEILING)


def epsilon_down(value: Decimal) -> int:
    """An epsilon limit in units, rounded down (exact for values on the grid)."""
    return _units(value, EPSILON_EXP, MAX_EPSILON_UNITS, ROUND_FLOOR)


def delta_down(value: Decimal) -> int:
    """A delta limit in units, rounded down (exact for values on the grid)."""
    return _units(value, DELTA_EXP, MAX_DELTA_UNITS, ROUND_FLOOR)


def epsilon_value(units: int) -> Decimal:
    """The exact Decimal of ``units`` epsilon units, without trailing zeros or an exponent
    notation for whole numbers (100000 -> 0.1, 10**7 -> 10)."""
    return _plain(Decimal(units).scaleb(-EPSILON_EXP, context=_CONTEXT))


def delta_value(units: int) -> Decimal:
    """The exact Decimal of ``units`` delta units (10**10 -> 0.00001)."""
    return _plain(Decimal(units).scaleb(-DELTA_EXP, context=_CONTEXT))


def _plain(value: Decimal) -> Decimal:
    value = value.normalize(_CONTEXT)
    exponent = value.as_tuple().exponent  # an int for a finite value
    return value.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else value


def on_epsilon_grid(value: Decimal) -> bool:
    """Whether ``value`` (already within ``[0, MAX_EPSILON]``) is a whole number of units."""
    return epsilon_value(epsilon_up(value)) == value


def on_delta_grid(value: Decimal) -> bool:
    """Whether ``value`` (already within ``[0, 1)``) is a whole number of delta units."""
    return delta_value(delta_up(value)) == value


def stored_units(epsilon: Any, delta: Any) -> tuple[int, int]:
    """A ledger row of the old Decimal-text schema in units, each rounded *up* (migration).

    Any text at all is accepted: what does not read as a number counts as the largest amount,
    which exhausts every budget rather than freeing one."""
    return epsilon_up(_decimal(epsilon)), delta_up(_decimal(delta))


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return Decimal("NaN")


@dataclass(frozen=True)
class Amount:
    """Epsilon and delta as whole grid units: what the ledger stores, sums and compares."""

    epsilon: int = 0
    delta: int = 0

    @classmethod
    def charge(cls, epsilon: Decimal | str | int, delta: Decimal | str | int = 0) -> Amount:
        """A charge: each rounded *up* to the grid."""
        return cls(epsilon_up(Decimal(epsilon)), delta_up(Decimal(delta)))

    @classmethod
    def limit(cls, epsilon: Decimal | str | int, delta: Decimal | str | int = 0) -> Amount:
        """A budget or cap: each rounded *down* to the grid (exact for validated values)."""
        return cls(epsilon_down(Decimal(epsilon)), delta_down(Decimal(delta)))

    def plus(self, other: Amount) -> Amount:
        return Amount(self.epsilon + other.epsilon, self.delta + other.delta)

    def within(self, limit: Amount) -> bool:
        """Both dimensions at or below ``limit``."""
        return self.epsilon <= limit.epsilon and self.delta <= limit.delta

    def left_of(self, limit: Amount) -> Amount:
        """What ``limit`` leaves after spending ``self``, never below zero."""
        return Amount(max(0, limit.epsilon - self.epsilon), max(0, limit.delta - self.delta))

    @property
    def epsilon_decimal(self) -> Decimal:
        return epsilon_value(self.epsilon)

    @property
    def delta_decimal(self) -> Decimal:
        return delta_value(self.delta)

    @property
    def epsilon_float(self) -> float:
        return float(self.epsilon_decimal)  # float(Decimal) never raises

    @property
    def delta_float(self) -> float:
        return float(self.delta_decimal)

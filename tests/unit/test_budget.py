"""``ledger/budget.py``: exact Decimal arithmetic, conversions and budget periods."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from enclave.ledger.budget import charge_fits, fits, period_window, remaining, to_decimal

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, Decimal("0.1")),
        (1e-06, Decimal("0.000001")),
        (5, Decimal(5)),
        ("0.25", Decimal("0.25")),
        (Decimal("1.0"), Decimal("1.0")),
        (0.0, Decimal(0)),
    ],
)
def test_to_decimal(value: object, expected: Decimal) -> None:
    result = to_decimal(value)  # type: ignore[arg-type]
    assert result == expected
    assert str(to_decimal(0.1)) == "0.1"  # via str, not the binary expansion


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -0.1, -1, "NaN", "Infinity", "abc", True, None, "-0.5"]
)
def test_to_decimal_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        to_decimal(bad)  # type: ignore[arg-type]


def test_ten_tenths_fit_and_the_eleventh_does_not() -> None:
    spent = Decimal(0)
    limit = to_decimal(1.0)
    for _ in range(10):
        assert fits(spent, to_decimal(0.1), limit)
        spent += to_decimal(0.1)
    assert spent == limit
    assert not fits(spent, to_decimal(0.1), limit)
    assert not fits(spent, Decimal("1E-28"), limit)
    assert sum([0.1] * 10) != 1.0  # what floats would have done


def test_remaining_never_negative() -> None:
    assert remaining(Decimal("0.3"), Decimal(0), Decimal(1), Decimal("1E-6")) == (
        Decimal("0.7"),
        Decimal("0.000001"),
    )
    assert remaining(Decimal(2), Decimal(1), Decimal(1), Decimal(0)) == (Decimal(0), Decimal(0))


def test_charge_fits_checks_both_dimensions() -> None:
    z = Decimal(0)
    assert charge_fits(z, z, Decimal("0.5"), Decimal("1E-6"), Decimal(1), Decimal("1E-6"))
    assert not charge_fits(z, Decimal("1E-7"), z, Decimal("1E-6"), Decimal(1), Decimal("1E-6"))
    assert not charge_fits(Decimal("0.6"), z, Decimal("0.5"), z, Decimal(1), Decimal(1))


def test_period_window() -> None:
    assert period_window(T0, None, T0 + dt.timedelta(days=400)) == (None, None)
    day = dt.timedelta(days=1)
    assert period_window(T0, 30, T0) == (T0, T0 + 30 * day)
    assert period_window(T0, 30, T0 + 29 * day) == (T0, T0 + 30 * day)
    assert period_window(T0, 30, T0 + 30 * day) == (T0 + 30 * day, T0 + 60 * day)
    assert period_window(T0, 30, T0 + 75 * day) == (T0 + 60 * day, T0 + 90 * day)
    # Before the licence starts: the first period.
    assert period_window(T0, 7, T0 - 3 * day) == (T0, T0 + 7 * day)
    with pytest.raises(ValueError):
        period_window(T0, 0, T0)

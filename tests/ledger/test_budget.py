"""``ledger/grid.py`` and ``ledger/budget.py``: grid units, rounding, limits and periods."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.ledger.budget import MAX_PERIOD_DAYS, period_window
from enclave.ledger.grid import (
    MAX_DELTA_UNITS,
    MAX_EPSILON_UNITS,
    Amount,
    delta_up,
    delta_value,
    epsilon_down,
    epsilon_up,
    epsilon_value,
    on_delta_grid,
    on_epsilon_grid,
    stored_units,
)

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "units"),
    [
        ("0.1", 100_000),
        ("0.000001", 1),
        ("0.0000010000001", 2),  # off the grid: a charge rounds up
        ("1e-199", 1),
        ("1e-320", 1),
        ("5e-324", 1),
        ("1e-1000000000", 1),  # an exponent far beyond any float
        ("0", 0),
        ("1000000", MAX_EPSILON_UNITS),
        ("1e400", MAX_EPSILON_UNITS),  # clamped: exhausts any budget
        ("NaN", MAX_EPSILON_UNITS),
    ],
)
def test_epsilon_charges_round_up(value: str, units: int) -> None:
    assert epsilon_up(Decimal(value)) == units


def test_limits_round_down_and_deltas_have_their_own_unit() -> None:
    assert epsilon_down(Decimal("0.0000019")) == 1
    assert delta_up(Decimal("1e-5")) == 10**10
    assert delta_up(Decimal("1e-16")) == 1
    assert delta_up(Decimal("2")) == MAX_DELTA_UNITS
    assert on_epsilon_grid(Decimal("0.1")) and not on_epsilon_grid(Decimal("0.1000001"))
    assert on_delta_grid(Decimal("1e-15")) and not on_delta_grid(Decimal("1e-16"))


def test_values_print_plainly() -> None:
    assert str(epsilon_value(100_000)) == "0.1"
    assert str(epsilon_value(10**7)) == "10"
    assert str(epsilon_value(0)) == "0"
    assert delta_value(10**10) == Decimal("0.00001")


@given(st.integers(min_value=0, max_value=MAX_EPSILON_UNITS))
def test_units_round_trip(units: int) -> None:
    assert epsilon_up(epsilon_value(units)) == units
    assert epsilon_down(epsilon_value(units)) == units


@given(st.decimals(min_value=0, max_value=10**6, allow_nan=False, places=12))
def test_a_charge_is_never_below_the_value(value: Decimal) -> None:
    units = epsilon_up(value)
    assert epsilon_value(units) >= value > epsilon_value(units) - Decimal("0.000001")


def test_ten_tenths_fit_and_the_eleventh_does_not() -> None:
    spent, limit, tenth = Amount(), Amount.limit("1.0"), Amount.charge("0.1")
    for _ in range(10):
        assert spent.plus(tenth).within(limit)
        spent = spent.plus(tenth)
    assert spent == limit
    assert not spent.plus(tenth).within(limit)
    assert not spent.plus(Amount.charge("1e-28")).within(limit)  # the smallest charge is a unit
    assert sum([0.1] * 10) != 1.0  # what floats would have done


def test_left_of_never_negative_and_both_dimensions_count() -> None:
    limit = Amount.limit("1", "1e-6")
    assert Amount.charge("0.3").left_of(limit) == Amount.limit("0.7", "1e-6")
    assert Amount.charge("2", "1").left_of(limit) == Amount()
    assert Amount.charge("0.5", "1e-6").within(limit)
    assert not Amount.charge("0", "1.1e-6").within(limit)


def test_stored_units_of_old_rows_round_up_and_never_raise() -> None:
    assert stored_units("0.1", "0") == (100_000, 0)
    assert stored_units("1E-250", "1E-40") == (1, 1)
    assert stored_units("1E+400", "junk") == (MAX_EPSILON_UNITS, MAX_DELTA_UNITS)
    assert stored_units(Decimal("0.25"), Decimal("0.0000005")) == (250_000, 500_000_000)


def test_period_window() -> None:
    assert period_window(T0, None, T0 + dt.timedelta(days=400)) == (None, None)
    day = dt.timedelta(days=1)
    assert period_window(T0, 30, T0) == (T0, T0 + 30 * day)
    assert period_window(T0, 30, T0 + 29 * day) == (T0, T0 + 30 * day)
    assert period_window(T0, 30, T0 + 30 * day) == (T0 + 30 * day, T0 + 60 * day)
    assert period_window(T0, 30, T0 + 75 * day) == (T0 + 60 * day, T0 + 90 * day)
    # Before the licence starts: the first period.
    assert period_window(T0, 7, T0 - 3 * day) == (T0, T0 + 7 * day)


def test_period_window_is_total() -> None:
    """Periods beyond the calendar never raise (a 10**9-day period used to answer 500)."""
    late = dt.datetime(9990, 1, 1, tzinfo=dt.UTC)
    assert period_window(late, MAX_PERIOD_DAYS, late) == (late, None)
    assert period_window(T0, 10**9, T0) == (T0, T0 + dt.timedelta(days=MAX_PERIOD_DAYS))
    assert period_window(T0, 0, T0) == (T0, T0 + dt.timedelta(days=1))

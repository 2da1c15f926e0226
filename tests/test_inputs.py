"""``enclave/inputs.py`` and the summary's decimal text: any text gives a UTC datetime in the
bounded years or a ``ValueError`` (never another exception), and exact decimals survive."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.audit.log import decimal_text
from enclave.inputs import MAX_YEAR, MIN_YEAR, parse_when, read_string
from enclave.ledger.grid import Amount


@given(st.text(max_size=60))
def test_any_text_parses_in_range_or_is_a_value_error(text: str) -> None:
    try:
        when = parse_when(text)
    except ValueError:
        return
    assert when.tzinfo == dt.UTC and MIN_YEAR <= when.year <= MAX_YEAR


@given(
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_every_zone_shift_is_in_range_or_refused(naive: dt.datetime, minutes: int) -> None:
    zone = dt.timezone(dt.timedelta(minutes=minutes))
    text = naive.replace(tzinfo=zone).isoformat()
    try:
        when = parse_when(text)
    except ValueError as exc:
        assert "between the years" in str(exc)
        return
    assert when == naive.replace(tzinfo=zone)


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2027-12-31", True, dt.datetime(2027, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)),
        ("2027-12-31", False, dt.datetime(2027, 12, 31, tzinfo=dt.UTC)),
        ("2027-12-31T10:00:00Z", True, dt.datetime(2027, 12, 31, 10, tzinfo=dt.UTC)),
        ("9999-12-31", True, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)),
        ("2027-12-31T01:00:00+02:00", False, dt.datetime(2027, 12, 30, 23, tzinfo=dt.UTC)),
    ],
)
def test_date_semantics(text: str, end_of_day: bool, expected: dt.datetime) -> None:
    assert parse_when(text, end_of_day=end_of_day) == expected


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-01:00", "1969-12-31", "x" * 41]
)
def test_out_of_range_or_too_long(text: str) -> None:
    with pytest.raises(ValueError):
        parse_when(text)


def test_read_string_lists_a_problem_and_strips() -> None:
    problems: list[str] = []
    assert read_string(problems, "  alice ", "subject", 10) == "alice"
    assert read_string(problems, "x" * 11, "subject", 10) is None
    assert read_string(problems, None, "reason", 10, required=False) is None
    assert read_string(problems, "", "purpose", 10) is None
    assert problems == ["subject: at most 10 characters", "purpose: required, a non-empty string"]


def test_read_string_refuses_text_no_store_can_keep() -> None:
    """A NUL, or a lone surrogate (a non-UTF-8 command-line argument decodes to one)."""
    problems: list[str] = []
    assert read_string(problems, "a\x00b", "subject", 10) is None
    assert read_string(problems, "a\udcffb", "organization", 10) is None
    assert problems == [
        "subject: must not contain NUL characters",
        "organization: holds a lone surrogate, which is not valid Unicode text",
    ]


@given(st.lists(st.decimals(min_value=0, max_value=10**6, places=8), max_size=20))
def test_decimal_text_is_exact(values: list[Decimal]) -> None:
    total = sum(values, Decimal(0))  # at most 15 significant digits: exact in the context
    text = decimal_text(total)
    assert Decimal(text) == total and "E" not in text and "e" not in text
    assert text == "0" or not text.endswith(".")


def test_the_reported_float_sum_is_exact_now() -> None:
    total = Amount.charge("4.25").plus(Amount.charge("0.3")).plus(Amount.charge("0.1", "1e-15"))
    assert decimal_text(total.epsilon_decimal) == "4.65"
    assert decimal_text(total.delta_decimal) == "0.000000000000001"
    assert decimal_text(Decimal("0.000001") * 3) == "0.000003"
    assert decimal_text(Decimal("5.0")) == "5" and decimal_text(Decimal("100")) == "100"

"""Bounding makes values total and clamps floats inward (``engine/bounding.py``): NaN, infinities,
dates outside years 1..9999 and values that do not fit become NULL in every column, so nothing
after the data is read can fail on them; stored float values never leave the declared bounds."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.engine.bounding import bound_dataset
from enclave.engine.layout import clamped_name, stored_bounds
from enclave.models import ColumnSpec
from tests.engine.test_bounding import make_spec

HOSTILE = """
CREATE TABLE visits AS SELECT * FROM (VALUES
    ('a', 30::HUGEINT, 'F', 'north', 1.5::DOUBLE, DATE '2020-01-01'),
    ('b', 170141183460469231731687303715884105727::HUGEINT, 'M', 'south',
        'NaN'::DOUBLE, DATE '0001-01-01'),
    ('c', 40::HUGEINT, 'F', 'east', 'inf'::DOUBLE, DATE '9999-12-31'),
    ('d', 50::HUGEINT, 'M', 'west', '-inf'::DOUBLE, DATE '10000-01-01'),
    ('e', 60::HUGEINT, 'F', 'central', 2.5::DOUBLE, 'infinity'::DATE),
    ('f', 70::HUGEINT, 'M', 'north', 3.5::DOUBLE, DATE '0044-03-15 (BC)'),
    ('g', 80::HUGEINT, 'F', 'north', 4.5::DOUBLE, '-infinity'::DATE)
) t(person_id, age, sex, region, cost, visit_date)
"""


def hostile_source(tmp_path: Path, sql: str = HOSTILE) -> Path:
    path = tmp_path / "hostile.duckdb"
    con = duckdb.connect(str(path))
    con.execute(sql)
    con.close()
    return path


def bounded_rows(path: Path) -> dict[str, tuple[object, ...]]:
    con = duckdb.connect()
    rows = con.execute(
        'SELECT person_id, age, cost, visit_date, "age#clamped", "cost#clamped"'
        " FROM read_parquet(?)",
        [str(path)],
    ).fetchall()  # Python values: this alone fails on a date beyond year 9999
    con.close()
    return {str(r[0]): r[1:] for r in rows}


def test_nan_infinities_overflow_and_far_dates_become_null(tmp_path: Path) -> None:
    spec = make_spec(hostile_source(tmp_path), table="visits")
    rows = bounded_rows(bound_dataset(spec, tmp_path / "state").path)
    assert rows["a"] == (30, 1.5, dt.date(2020, 1, 1), 30, Decimal("1.500000"))
    assert rows["b"] == (None, None, dt.date(1, 1, 1), None, None)  # HUGEINT overflow, NaN
    assert rows["c"] == (40, None, dt.date(9999, 12, 31), 40, None)  # +inf
    assert rows["d"][1:3] == (None, None)  # -inf, year 10000
    assert rows["e"][2] is None and rows["f"][2] is None and rows["g"][2] is None
    for values in rows.values():
        for v in values:
            assert not (isinstance(v, float) and not math.isfinite(v))


def test_keys_and_units_are_made_total_too(tmp_path: Path) -> None:
    """A float or date used as a category or unit: its text, never an error; NaN units stay
    units (text 'nan'), a NULL after the cast drops the row."""
    src = hostile_source(
        tmp_path,
        "CREATE TABLE visits AS SELECT * FROM (VALUES"
        " ('NaN'::DOUBLE, 'inf'::DOUBLE, 1.0::DOUBLE),"
        " ('1'::DOUBLE, 'NaN'::DOUBLE, 2.0::DOUBLE)) t(person_id, region, cost)",
    )
    spec = make_spec(src, table="visits")
    spec = replace(
        spec,
        columns=(
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("region", "category", None, ("inf", "nan")),
            ColumnSpec("cost", "float", (0, 10)),
        ),
    )
    target = bound_dataset(spec, tmp_path / "state")
    con = duckdb.connect()
    rows = con.execute(
        "SELECT person_id, region FROM read_parquet(?) ORDER BY 1", [str(target.path)]
    ).fetchall()
    con.close()
    assert rows == [("1.0", "nan"), ("nan", "inf")]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ((0, 50000), ("0", "50000")),
        ((0.1, 0.9), ("0.100000", "0.900000")),
        ((0.1000004, 0.9999996), ("0.100001", "0.999999")),
        ((-0.0000015, 0.0000015), ("-0.000001", "0.000001")),
        ((0, 5e-7), ("0.000000", "0.000000")),
    ],
)
def test_stored_bounds_round_inward(bounds: tuple[float, float], expected: tuple[str, str]) -> None:
    lo, hi = stored_bounds(ColumnSpec("cost", "float", bounds))
    assert (lo, hi) == (Decimal(expected[0]), Decimal(expected[1]))
    assert Decimal(repr(float(bounds[0]))) <= lo <= hi <= Decimal(repr(float(bounds[1])))


def test_no_stored_value_within_the_bounds_is_an_error() -> None:
    with pytest.raises(ValueError, match="no stored value"):
        stored_bounds(ColumnSpec("cost", "float", (1e-7, 5e-7)))


@settings(max_examples=10, deadline=None)
@given(
    low=st.floats(-1e6, 1e6, allow_nan=False),
    width=st.floats(1e-5, 1e6, allow_nan=False),
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20),
)
def test_stored_float_values_never_leave_the_declared_bounds(
    tmp_path_factory: pytest.TempPathFactory, low: float, width: float, values: list[float]
) -> None:
    """Old code rounded a value clamped to an off-grid bound to the nearest grid point,
    which can lie outside the bound (the declared sensitivity then does not hold)."""
    high = low + width
    tmp = tmp_path_factory.mktemp("clamp")
    near = [low, high, low - 4e-7, high + 4e-7, low + 4e-7, high - 4e-7]
    rows = ", ".join(f"('u{i}', '{v!r}'::DOUBLE)" for i, v in enumerate([*values, *near]))
    table = "CREATE TABLE visits AS SELECT * FROM (VALUES {}) t(person_id, cost)"
    src = hostile_source(tmp, table.format(rows))
    spec = replace(
        make_spec(src, table="visits"),
        columns=(ColumnSpec("person_id", "identifier"), ColumnSpec("cost", "float", (low, high))),
    )
    try:
        lo, hi = stored_bounds(spec.columns[1])
    except ValueError:
        return  # such bounds are refused by the policy layer
    target = bound_dataset(spec, tmp / "state", threads=1, memory_limit="256MB")
    con = duckdb.connect()
    assert clamped_name("cost") == "cost#clamped"
    stored = con.execute(
        'SELECT "cost#clamped" FROM read_parquet(?)', [str(target.path)]
    ).fetchall()
    con.close()
    for (v,) in stored:
        assert v is None or lo <= v <= hi
        assert v is None or Decimal(repr(low)) <= v <= Decimal(repr(high))

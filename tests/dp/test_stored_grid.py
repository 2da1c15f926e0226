"""Sensitivity from what is stored: ``stored_float`` is DuckDB's cast, and a float SUM's
sensitivity is ``k`` times the largest stored bound, rounded up."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import duckdb
import pytest

from enclave.dp.mechanisms import price_plan, stored_sensitivity
from enclave.models import ColumnSpec, DatasetSpec, Tier, stored_float
from enclave.query.parse import parse_query


def _values() -> list[float]:
    """30,000 test values: any float in range, values on and near the grid, halfway points."""
    rng = random.Random(5)
    out = [5e-7, -5e-7, 1.5e-6, 2.5e-6, 0.1000005, 123456789012345.67, 1e15, -1e15, 0.0]
    for _ in range(10_000):
        out.append(rng.uniform(-1, 1) * 10 ** rng.randint(-7, 15))
        out.append(rng.randint(-(10**17), 10**17) / 1e6)
        out.append(rng.randint(-(10**11), 10**11) / 1e6 + 5e-7)
    return out


@pytest.mark.parametrize("kind", ["DECIMAL(18,6)", "DECIMAL(38,6)"])
def test_stored_float_is_duckdbs_cast(kind: str) -> None:
    limit = 1e11 if kind == "DECIMAL(18,6)" else 1e15
    values = [v for v in _values() if abs(v) <= limit]
    got = (
        duckdb.connect()
        .execute(f"SELECT CAST(v AS {kind}) FROM (SELECT unnest(?::DOUBLE[]) AS v)", [values])  # noqa: S608
        .fetchall()
    )
    assert len(got) == len(values) > 20_000
    wrong = [(v, g[0]) for v, g in zip(values, got, strict=True) if stored_float(v) != g[0]]
    assert wrong == []


def test_halfway_values_round_away_from_zero() -> None:
    assert stored_float(5e-7) == Decimal("0.000001")
    assert stored_float(-5e-7) == Decimal("-0.000001")
    assert stored_float(0.1) == Decimal("0.1")


@pytest.mark.parametrize(
    ("k", "low", "high", "exact"),
    [
        (1, 0.0, 5e-7, Decimal("0.000001")),  # stored as twice the bound: priced as stored
        (3, 0.0, 0.3, Decimal("0.9")),  # 3 * 0.3 is 0.8999999999999999 in floats: round up
        (5, -50000.0, 100.0, Decimal(250000)),
        (7, -0.1, 0.000001, Decimal("0.7")),
    ],
)
def test_float_sum_sensitivity_is_k_times_the_stored_bound_rounded_up(
    k: int, low: float, high: float, exact: Decimal
) -> None:
    got = stored_sensitivity(k, low, high)
    assert Decimal(got) >= exact
    assert Decimal(math.nextafter(got, -math.inf)) < exact  # the smallest such float


def test_priced_sum_uses_the_stored_sensitivity() -> None:
    spec = DatasetSpec(
        name="t",
        description="",
        source="t.parquet",
        source_path="/nonexistent/t.parquet",
        privacy_unit="pid",
        max_rows_per_unit=3,
        min_tier=("standard",),
        allowed_jurisdictions=None,
        columns=(
            ColumnSpec("pid", "identifier"),
            ColumnSpec("x", "float", bounds=(0.0, 0.3)),
        ),
    )
    tier = Tier("standard", "", frozenset({"count", "sum"}), Decimal(1), Decimal(10), Decimal(0))
    priced = price_plan(parse_query("SELECT SUM(x) FROM t", spec), spec, tier, Decimal(1), None)
    (agg,) = priced.aggregates
    assert Decimal(agg.d_in) >= Decimal("0.9")
    assert float(agg.measurement.map(agg.d_in)) <= 1.0

"""Nothing between the exact result and the response fails on data.

Once data has been read, a failure that depends on the data is an oracle (one dataset fails,
its neighbour answers). These tests feed the release step what real DuckDB hands back for
hostile data: integer sums at and beyond the i64 range (DuckDB sums BIGINT as HUGEINT), NaN
and infinite group keys, dates beyond year 9999 (DuckDB returns them as text) and mixed
types; every one must release, with plain JSON cells and a digest, and say nothing about the
values in any error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from enclave.audit.record import dumps
from enclave.dp.mechanisms import price_plan
from enclave.dp.partition import I64_MAX
from enclave.dp.release import NoisyTable, release
from enclave.dp.values import json_value, result_digest, row_sort_key, sort_key
from enclave.models import ColumnSpec, DatasetSpec
from enclave.query.compile import assemble, compile_plan
from enclave.query.parse import parse_query
from enclave.query.plan import Aggregate, ExactGroups, GroupColumn, OrderItem, Plan
from tests.dp.test_mechanisms import make_spec, make_tier
from tests.query.test_compile import bounded_layout

BIG = 2**53  # the largest int bound the admin API accepts


def big_spec() -> DatasetSpec:
    return DatasetSpec(
        name="visits",
        description="hostile values",
        source="visits.parquet",
        source_path="/nonexistent/visits.parquet",
        privacy_unit="person_id",
        max_rows_per_unit=1,
        min_tier=("standard",),
        allowed_jurisdictions=None,
        columns=(
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("big", "int", (0, BIG)),
            ColumnSpec("x", "float", (0.0, 100.0)),
            ColumnSpec("day", "date", (dt.date(2015, 1, 1), dt.date(2025, 12, 31))),
        ),
    )


def release_sql(spec: DatasetSpec, raw_sql: str, sql: str, eps: str = "1.0") -> NoisyTable:
    """Real DuckDB over a bounded table of ``raw_sql``'s rows, then the real release."""
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TABLE raw AS {raw_sql}")
        bounded_layout(con, spec, "bounded", "raw")
        plan = parse_query(sql, spec)
        compiled = compile_plan(plan, spec, "bounded")
        exact = assemble(compiled, con.execute(compiled.sql, list(compiled.params)).fetchall())
    finally:
        con.close()
    tier = make_tier(allow_undeclared_keys=True, budget_delta=Decimal("1e-3"))
    n_groups = None if plan.group_by else 1
    priced = price_plan(plan, spec, tier, Decimal(eps), n_groups)
    return release(plan, spec, tier, priced, exact)


def assert_plain_json(out: NoisyTable) -> None:
    body = {"columns": list(out.columns), "rows": [list(r) for r in out.rows]}
    json.dumps(body, allow_nan=False)  # the response and the stored release encode
    dumps(body)
    assert out.result_sha256 == result_digest(out.columns, list(out.rows))


@pytest.mark.parametrize("extra_units", [0, 1])
def test_integer_sum_at_and_beyond_i64_releases(extra_units: int) -> None:
    """1023 units at 2^53 and one at 2^53 - 1 sum to 2^63 - 1; one more unit of 1 is 2^63."""
    rows = [f"('p{i}', {BIG})" for i in range(1023)] + [f"('q', {BIG - 1})"]
    rows += [f"('r{i}', 1)" for i in range(extra_units)]
    raw = f"SELECT * FROM (VALUES {', '.join(rows)}) t(person_id, big)"  # noqa: S608
    raw = f"SELECT person_id, big, 1.0 AS x, DATE '2020-01-01' AS day FROM ({raw})"  # noqa: S608
    out = release_sql(big_spec(), raw, "SELECT SUM(big) AS s FROM visits", eps="1.0")
    (value,) = out.rows[0]
    assert isinstance(value, int) and value <= I64_MAX  # clipped into the mechanism's domain
    assert value > 2**62  # noise at scale 2^53 is far smaller than the sum
    assert_plain_json(out)


def test_exact_sums_beyond_every_domain_release_directly() -> None:
    spec, tier = big_spec(), make_tier()
    plan = Plan("visits", (Aggregate("sum", "s", "big"), Aggregate("sum", "f", "x")))
    priced = price_plan(plan, spec, tier, Decimal(1), 1)
    for huge in (2**63, 2**200, -(2**200), None, "junk"):
        for fsum in (Decimal("1e400"), Decimal("-1e400"), Decimal("NaN"), float("inf")):
            exact = ExactGroups((), ((),), {"a0_sum": (huge,), "a1_sum": (fsum,)})
            out = release(plan, spec, tier, priced, exact)
            assert math.isfinite(out.rows[0][1])
            assert_plain_json(out)


def test_nan_and_infinite_group_keys_release_from_real_duckdb() -> None:
    values = ["'nan'::DOUBLE", "'-nan'::DOUBLE", "'inf'::DOUBLE", "'-inf'::DOUBLE", "NULL", "5"]
    unions = " UNION ALL ".join(
        f"SELECT 'p' || i AS person_id, 1 AS big, {v} AS x, DATE '2020-01-01' AS day "  # noqa: S608
        f"FROM range({2000 + j}) r(i)"
        for j, v in enumerate(values)
    )
    sql = "SELECT x, COUNT(*) AS n FROM visits GROUP BY x ORDER BY x DESC"
    out = release_sql(big_spec(), unions, sql, eps="2.0")
    assert 1 <= len(out.rows) <= 5  # NaN, inf, -inf, NULL and 5 are the five groups
    assert {r[0] for r in out.rows} <= {None, 5.0}  # NaN and infinities released as NULL
    assert_plain_json(out)


def test_dates_beyond_year_9999_release_and_sort() -> None:
    """DuckDB returns such dates as text: WHERE on any value must release the same way."""
    raw = (
        "SELECT 'p' || i AS person_id, 1 AS big, 1.0 AS x, "
        "CASE WHEN i % 2 = 0 THEN DATE '10000-01-01' ELSE DATE '2020-01-01' END AS day "
        "FROM range(6000) r(i)"
    )
    for where in ("big = 1", "big = 2"):
        sql = f"SELECT day, COUNT(*) AS n FROM visits WHERE {where} GROUP BY day ORDER BY day"  # noqa: S608
        out = release_sql(big_spec(), raw, sql, eps="2.0")
        assert all(isinstance(r[0], str) for r in out.rows)
        assert_plain_json(out)


def test_order_by_and_key_order_are_total_over_mixed_values() -> None:
    mixed: list[Any] = [
        None, "b", 3, 2.5, float("nan"), Decimal("NaN"), Decimal("1.5"), True,
        dt.date(2020, 1, 1), dt.datetime(2020, 1, 1, 5), "10000-01-01", b"\x00", [1, 2],
        float("inf"), -(2**80), dt.time(1, 2), dt.timedelta(days=1),
    ]  # fmt: skip
    keys = sorted(mixed, key=sort_key)
    assert keys[-1] is None and keys == sorted(reversed(mixed), key=sort_key)  # deterministic
    assert sorted([(v,) for v in mixed], key=row_sort_key)[-1] == (None,)
    for v in mixed:
        json.dumps(json_value(v), allow_nan=False)
    plan = Plan(
        "visits",
        (GroupColumn("code", "code"), Aggregate("count", "n")),
        group_by=("code",),
        order_by=(OrderItem("code", True),),
    )
    exact = ExactGroups(
        ("code",),
        tuple((v,) for v in mixed),
        {"_n": (10**6,) * len(mixed), "a0_count": (10**6,) * len(mixed)},
    )
    spec, tier = make_spec(), make_tier(allow_undeclared_keys=True, budget_delta=Decimal("0.01"))
    priced = price_plan(plan, spec, tier, Decimal(1), None)
    out = release(plan, spec, tier, priced, exact)
    assert len(out.rows) == len(mixed)  # every key is far above the threshold
    assert out.rows[-1][0] is None  # NULLs last, also descending
    assert_plain_json(out)

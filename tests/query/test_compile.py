"""Plan → DuckDB SQL, run for real in an in-memory DuckDB and checked against a plain-Python
reference computed from the same rows (clamping, exact sums, NULLs, groups, WHERE logic)."""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from enclave.dp.quantile import histogram_arrays
from enclave.dp.values import row_sort_key
from enclave.engine.layout import clamped_columns_sql, ident
from enclave.models import ColumnSpec, DatasetSpec
from enclave.query.compile import assemble, compile_plan
from enclave.query.parse import parse_query
from enclave.query.plan import (
    And,
    Between,
    Comparison,
    CompiledQuery,
    ExactGroups,
    InList,
    IsNull,
    Not,
    Or,
    Predicate,
)
from enclave.query.stats import quantile_candidates
from tests.query.test_parse import SPEC, visits_spec

TABLE = 'bounded "visits" v1'  # a name that needs quoting
D = dt.date
# person_id, age, sex, region, cost, visit_date: out-of-bound values, NULLs, undeclared keys
ROWS: list[tuple[Any, ...]] = [
    (1, 200, "F", "north", 60000.5, D(2020, 1, 1)),
    (1, -5, "F", "north", 0.1, D(2020, 6, 1)),
    (1, 30, "F", "south", -3.0, D(2014, 1, 1)),
    (2, None, "M", "north", None, None),
    (2, 45, "M", "east", 12.345678, D(2021, 3, 4)),
    (3, 30, "X", "mars", 10.5, D(2021, 1, 1)),
    (4, 40, None, "south", 20.25, D(2022, 1, 1)),
    (5, 110, "M", None, 49999.999999, D(2025, 12, 31)),
    (6, 0, "F", "west", 0.1, D(2019, 12, 31)),
] + [(7, 65, "F", "central", 0.1, D(2023, 1, 1))] * 10
COLUMNS = ("person_id", "age", "sex", "region", "cost", "visit_date")


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE raw (person_id INTEGER, age INTEGER, sex VARCHAR, "
        "region VARCHAR, cost DOUBLE, visit_date DATE)"
    )
    conn.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?)", ROWS)
    yield conn
    conn.close()


def bounded_layout(
    con: duckdb.DuckDBPyConnection, spec: DatasetSpec, table: str = TABLE, raw: str = "raw"
) -> None:
    """``table``: the rows of ``raw`` plus the clamped columns bounding adds for ``spec``."""
    extra = "".join(", " + c for c in clamped_columns_sql(spec))
    sql = f"CREATE OR REPLACE TABLE {ident(table)} AS SELECT *{extra} FROM {raw}"  # noqa: S608
    con.execute(sql)


def run(
    con: duckdb.DuckDBPyConnection, sql: str, spec: DatasetSpec = SPEC
) -> tuple[CompiledQuery, ExactGroups]:
    bounded_layout(con, spec)
    compiled = compile_plan(parse_query(sql, spec), spec, TABLE)
    rows = con.execute(compiled.sql, list(compiled.params)).fetchall()
    return compiled, assemble(compiled, rows)


def quantile_input(hist: Any) -> list[float]:
    """Every value a quantile histogram stands for (each key repeated by its count)."""
    keys, counts = histogram_arrays(hist)
    return [float(k) for k, n in zip(keys, counts, strict=True) for _ in range(n)]


def clamp(value: Any, low: Any, high: Any) -> Any:
    return None if value is None else min(max(value, low), high)


def same_scores(hist: Any, values: list[Any], cands: tuple[float, ...]) -> bool:
    """Every candidate sees as many values below, equal and above in ``hist`` as in ``values``.

    These three counts are all OpenDP's quantile score reads.
    """
    got = quantile_input(hist)
    if len(got) != len(values):
        return False

    def profile(vals: list[float]) -> list[tuple[int, int, int]]:
        ordered = sorted(vals)
        out = []
        for c in cands:
            below, upto = bisect.bisect_left(ordered, c), bisect.bisect_right(ordered, c)
            out.append((below, upto - below, len(ordered) - upto))
        return out

    return profile(got) == profile([float(v) for v in values])


def records(rows: list[tuple[Any, ...]] = ROWS) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def test_ungrouped_clamps_and_sums_exactly(con: duckdb.DuckDBPyConnection) -> None:
    compiled, groups = run(
        con,
        "SELECT COUNT(*), COUNT(DISTINCT person_id), SUM(age), AVG(cost), SUM(cost), "
        "MEDIAN(age), QUANTILE_CONT(cost, 0.9) FROM visits",
    )
    assert compiled.declared_keys == ((),)
    assert tuple(s.name for s in compiled.stats) == (
        "a0_count",
        "a1_units",
        "a2_sum",
        "a3_sum",
        "a3_count",
        "a4_sum",
        "a5_values",
        "a6_values",
        "_n",
    )
    recs = records()
    ages = [clamp(r["age"], 0, 110) for r in recs if r["age"] is not None]
    costs = [clamp(r["cost"], 0, 50000) for r in recs if r["cost"] is not None]
    exact_cost = sum(Decimal(str(c)) for c in costs)
    assert groups.keys == ((),)
    s = {name: values[0] for name, values in groups.stats.items()}
    assert s["a0_count"] == s["_n"] == len(ROWS)
    assert s["a1_units"] == len({r["person_id"] for r in recs})
    assert s["a2_sum"] == sum(ages) and isinstance(s["a2_sum"], int)
    assert s["a3_sum"] == s["a4_sum"] == exact_cost and isinstance(s["a3_sum"], Decimal)
    assert s["a3_count"] == len(costs) < len(ROWS)  # AVG's count skips NULLs
    # integer candidates: the histogram holds the clamped values themselves
    assert sorted(quantile_input(s["a5_values"])) == sorted(ages)  # 200 -> 110, -5 -> 0
    assert max(s["a5_values"]) == 110 and min(s["a5_values"]) == 0  # NULL dropped
    # float grid: values between two candidates become one representative of that gap
    cost_col = SPEC.column("cost")
    assert cost_col is not None
    assert same_scores(s["a6_values"], costs, quantile_candidates(cost_col))
    assert 50000.0 in s["a6_values"] and 0.0 in s["a6_values"]  # candidates keep their value


def test_decimal_sum_of_tenths_is_exact(con: duckdb.DuckDBPyConnection) -> None:
    _, groups = run(con, "SELECT SUM(cost) FROM visits WHERE region = 'central'")
    assert groups.stats["a0_sum"] == (Decimal("1.000000"),)
    assert sum([0.1] * 10) != 1.0  # what a DOUBLE sum would have given


def test_declared_groups_are_all_present_in_order(con: duckdb.DuckDBPyConnection) -> None:
    compiled, groups = run(
        con,
        "SELECT sex, region, COUNT(*), COUNT(DISTINCT person_id), SUM(age), AVG(cost), "
        "MEDIAN(age) FROM visits GROUP BY region, sex",
    )
    regions = ("north", "south", "east", "west", "central")
    expected_keys = tuple((r, s) for r in regions for s in ("F", "M"))
    assert compiled.declared_keys == expected_keys
    assert groups.keys == expected_keys
    assert groups.group_columns == ("region", "sex")
    recs = records()
    for i, (region, sex) in enumerate(expected_keys):
        mine = [r for r in recs if r["region"] == region and r["sex"] == sex]
        ages = [clamp(r["age"], 0, 110) for r in mine if r["age"] is not None]
        costs = [clamp(r["cost"], 0, 50000) for r in mine if r["cost"] is not None]
        assert groups.stats["a0_count"][i] == groups.stats["_n"][i] == len(mine)
        assert groups.stats["a1_units"][i] == len({r["person_id"] for r in mine})
        assert groups.stats["a2_sum"][i] == sum(ages)
        assert groups.stats["a3_sum"][i] == sum(Decimal(str(c)) for c in costs)
        assert groups.stats["a3_count"][i] == len(costs)
        assert sorted(quantile_input(groups.stats["a4_values"][i])) == sorted(ages)
    # rows outside the declared values (sex 'X', NULL sex, region 'mars', NULL region) vanish
    assert sum(groups.stats["_n"]) == sum(
        1 for r in recs if r["sex"] in ("F", "M") and r["region"] in regions
    )
    empty = expected_keys.index(("west", "M"))
    assert groups.stats["a0_count"][empty] == 0
    assert groups.stats["a2_sum"][empty] == 0
    assert groups.stats["a4_values"][empty] == {}


def test_undeclared_keys_come_from_the_data(con: duckdb.DuckDBPyConnection) -> None:
    compiled, groups = run(con, "SELECT age, COUNT(*) FROM visits GROUP BY age")
    assert compiled.declared_keys is None
    raw = [r[1] for r in ROWS]
    expected = sorted({a for a in raw if a is not None}) + [None]
    found = dict(zip(groups.keys, groups.stats["a0_count"], strict=True))  # the engine's order
    assert sorted(found, key=row_sort_key) == [(a,) for a in expected]
    assert [found[(a,)] for a in expected] == [raw.count(a) for a in expected]


def test_mixed_groups_still_restrict_categories(con: duckdb.DuckDBPyConnection) -> None:
    compiled, groups = run(
        con, "SELECT sex, visit_date, COUNT(*) FROM visits GROUP BY sex, visit_date"
    )
    assert compiled.declared_keys is None
    assert {k[0] for k in groups.keys} == {"F", "M"}
    assert sum(groups.stats["_n"]) == sum(1 for r in ROWS if r[2] in ("F", "M"))


def test_no_matching_rows(con: duckdb.DuckDBPyConnection) -> None:
    _, flat = run(con, "SELECT COUNT(*), SUM(cost), MEDIAN(age) FROM visits WHERE age > 1000")
    assert flat.stats == {"a0_count": (0,), "a1_sum": (0,), "a2_values": ({},), "_n": (0,)}
    _, grouped = run(con, "SELECT sex, COUNT(*) FROM visits WHERE age > 1000 GROUP BY sex")
    assert grouped.keys == (("F",), ("M",)) and grouped.stats["a0_count"] == (0, 0)


WHERES = [
    "age >= 30",
    "age < 30 OR age IS NULL",
    "NOT (age < 30)",
    "age NOT IN (30, 45)",
    "age IN (30, 45, 999)",
    "age BETWEEN 0 AND 45",
    "age NOT BETWEEN 0 AND 45",
    "cost > 10.5",
    "cost <= 0.1",
    "cost IS NOT NULL AND age <> 30",
    "sex = 'F' AND (region = 'north' OR region IN ('east', 'west'))",
    "sex != 'F'",
    "NOT (sex = 'F' OR region = 'south')",
    "region IS NULL OR sex IS NULL",
    "visit_date >= '2020-06-01'",
    "visit_date BETWEEN DATE '2015-01-01' AND '2021-12-31'",
    "visit_date < '2015-01-01' OR visit_date > DATE '2025-01-01'",
    "NOT visit_date IS NULL AND NOT age BETWEEN 31 AND 100",
]


def holds(pred: Predicate, row: dict[str, Any]) -> bool | None:
    """SQL three-valued logic, in Python."""
    if isinstance(pred, And):
        vals = [holds(p, row) for p in pred.items]
        return False if False in vals else None if None in vals else True
    if isinstance(pred, Or):
        vals = [holds(p, row) for p in pred.items]
        return True if True in vals else None if None in vals else False
    if isinstance(pred, Not):
        inner = holds(pred.item, row)
        return None if inner is None else not inner
    value = row[pred.column]
    if isinstance(pred, IsNull):
        return (value is not None) if pred.negated else (value is None)
    if value is None:
        return None
    if isinstance(pred, Comparison):
        ops = {
            "=": value == pred.value,
            "!=": value != pred.value,
            "<": value < pred.value,
            "<=": value <= pred.value,
            ">": value > pred.value,
            ">=": value >= pred.value,
        }
        return bool(ops[pred.op])
    if isinstance(pred, InList):
        return bool((value in pred.values) != pred.negated)
    assert isinstance(pred, Between)
    return bool((pred.low <= value <= pred.high) != pred.negated)


@pytest.mark.parametrize("where", WHERES)
def test_where_matches_three_valued_reference(con: duckdb.DuckDBPyConnection, where: str) -> None:
    sql = f"SELECT COUNT(*) FROM visits WHERE {where}"  # noqa: S608
    plan = parse_query(sql, SPEC)
    assert plan.where is not None
    _, groups = run(con, sql)
    expected = sum(1 for r in records() if holds(plan.where, r) is True)
    assert groups.stats["a0_count"] == (expected,)


def test_sql_text_holds_no_user_literal() -> None:
    sql = (
        "SELECT region, COUNT(*), SUM(cost) FROM visits WHERE sex > 'F'' OR 1=1 --' AND "
        "age IN (4242, 4343) AND cost > 777.25 AND visit_date BETWEEN '2019-02-03' "
        "AND DATE '2020-03-04' GROUP BY region"
    )
    compiled = compile_plan(parse_query(sql, SPEC), SPEC, TABLE)
    assert "'" not in compiled.sql  # no string literal at all
    for literal in ("4242", "4343", "777", "2019", "2020", "OR 1=1", "--"):
        assert literal not in compiled.sql
    assert "F' OR 1=1 --" in compiled.params
    assert {4242, 4343, 777.25, D(2019, 2, 3), D(2020, 3, 4)} <= set(compiled.params)
    assert compiled.sql.count("?") == len(compiled.params)


def test_identifiers_are_quoted_from_the_spec() -> None:
    spec = visits_spec(
        name="odd",
        privacy_unit='u"id',
        columns=(
            ColumnSpec('u"id', "identifier"),
            ColumnSpec("select", "int", bounds=(0, 10)),
            ColumnSpec("Grp Col", "category", values=("a", "b")),
        ),
    )
    conn = duckdb.connect()
    conn.execute('CREATE TABLE raw ("u""id" INTEGER, "select" INTEGER, "Grp Col" VARCHAR)')
    conn.executemany(
        "INSERT INTO raw VALUES (?, ?, ?)", [(1, 50, "a"), (1, 3, "a"), (2, None, "b")]
    )
    bounded_layout(conn, spec, 't"x')
    plan = parse_query(
        'SELECT "grp col", COUNT(DISTINCT "U""ID"), SUM("SELECT") FROM odd GROUP BY "GRP COL"', spec
    )
    compiled = compile_plan(plan, spec, 't"x')
    groups = assemble(compiled, conn.execute(compiled.sql, list(compiled.params)).fetchall())
    conn.close()
    stats = {k: (groups.stats["a0_units"][i], groups.stats["a1_sum"][i])
             for i, k in enumerate(groups.keys)}  # fmt: skip
    assert stats == {("a",): (1, 13), ("b",): (1, 0)}  # 50 clamped to 10, plus 3; NULL -> 0


def test_ident_refuses_nul() -> None:
    assert ident('a"b') == '"a""b"'
    with pytest.raises(ValueError):
        ident("a\x00b")


def test_assemble_rejects_a_row_of_the_wrong_width() -> None:
    compiled = compile_plan(parse_query("SELECT COUNT(*) FROM visits", SPEC), SPEC, TABLE)
    with pytest.raises(ValueError):
        assemble(compiled, [(1, 2, 3)])


def test_nulls_are_not_clamped_to_a_bound(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's GREATEST(NULL, lo) is lo; a NULL must stay out of sums, not count as lo."""
    spec = visits_spec(
        columns=(
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("age", "int", bounds=(20, 100)),
            ColumnSpec("cost", "float", bounds=(5, 100)),
        )
    )
    _, groups = run(con, "SELECT SUM(age), AVG(cost), MEDIAN(age) FROM visits", spec)
    ages = [clamp(r[1], 20, 100) for r in ROWS if r[1] is not None]
    costs = [clamp(r[4], 5.0, 100.0) for r in ROWS if r[4] is not None]
    assert groups.stats["a0_sum"] == (sum(ages),)
    assert groups.stats["a1_sum"] == (sum(Decimal(str(c)) for c in costs),)
    assert groups.stats["a1_count"] == (len(costs),)
    assert sorted(quantile_input(groups.stats["a2_values"][0])) == sorted(ages)


def _edge_values(low: float, high: float, cands: tuple[float, ...]) -> list[Any]:
    """Random values plus every candidate, its float neighbours and out-of-bound values."""
    import math
    import random

    rng = random.Random(5)
    width = high - low
    vals: list[Any] = [rng.uniform(low - width / 10, high + width / 10) for _ in range(3000)]
    for c in cands[:: max(1, len(cands) // 64)] + (cands[-1],):
        vals += [c, math.nextafter(c, -math.inf), math.nextafter(c, math.inf)]
    return [*vals, None, low - 1e6, high + 1e6]


@pytest.mark.parametrize(
    ("kind", "bounds"),
    [
        ("float", (0.0, 50000.0)),
        ("float", (-1.0, 1.0)),
        ("float", (-7.25, 1e11 + 0.5)),
        ("float", (1e15 - 1.0, 1e15)),  # step too fine for the grid: exact values
        ("int", (0, 110)),  # consecutive integers
        ("int", (-3, 100_000)),  # an int column on the float grid
    ],
)
def test_quantile_histogram_keeps_every_candidate_score(kind: str, bounds: tuple[Any, Any]) -> None:
    col = ColumnSpec("v", kind, bounds=bounds)  # type: ignore[arg-type]
    spec = visits_spec(columns=(ColumnSpec("person_id", "identifier"), col))
    cands = quantile_candidates(col)
    low, high = bounds
    values = _edge_values(float(low), float(high), cands)
    if kind == "int":
        values = [None if v is None else max(min(round(v), 2**62), -(2**62)) for v in values]
    conn = duckdb.connect()
    conn.execute(
        f"CREATE TABLE raw (person_id INTEGER, v {'BIGINT' if kind == 'int' else 'DOUBLE'})"
    )
    sql_type = "BIGINT" if kind == "int" else "DOUBLE"
    conn.execute(f"INSERT INTO raw SELECT 1, unnest(?::{sql_type}[])", [values])
    bounded_layout(conn, spec)
    compiled = compile_plan(parse_query("SELECT MEDIAN(v) FROM visits", spec), spec, TABLE)
    groups = assemble(compiled, conn.execute(compiled.sql, list(compiled.params)).fetchall())
    conn.close()
    hist = groups.stats["a0_values"][0]
    clamped = [clamp(v, low, high) for v in values if v is not None]
    assert same_scores(hist, clamped, cands)
    assert len(hist) <= 2 * len(cands) + 200  # few keys leave DuckDB (edge values are exact)


def test_quantile_candidates_are_the_priced_ones() -> None:
    from decimal import Decimal as Dec

    from enclave.dp.mechanisms import price_plan
    from tests.dp.test_mechanisms import make_tier

    for sql, column in (
        ("SELECT MEDIAN(cost) FROM visits", "cost"),
        ("SELECT MEDIAN(age) FROM visits", "age"),
    ):
        plan = parse_query(sql, SPEC)
        priced = price_plan(plan, SPEC, make_tier(), Dec("1.0"), None)
        meas = next(p for p in priced.aggregates if p.kind == "quantile").measurement
        col = SPEC.column(column)
        assert col is not None
        priced_cands = tuple(meas.__opendp_dict__["__kwargs__"]["candidates"])
        assert priced_cands == quantile_candidates(col)


def test_declared_groups_have_no_row_filter_and_discard_other_keys(
    con: duckdb.DuckDBPyConnection,
) -> None:
    compiled, groups = run(con, "SELECT region, COUNT(*) FROM visits GROUP BY region")
    assert compiled.params == () and " WHERE " not in compiled.sql
    raw_keys = {r[0] for r in con.execute(compiled.sql).fetchall()}
    assert {"mars", None} <= raw_keys  # DuckDB computes them ...
    assert set(groups.keys) == {(r,) for r in ("north", "south", "east", "west", "central")}


def test_decimal18_rounds_like_decimal38() -> None:
    import random

    rng = random.Random(3)
    values = [rng.uniform(-1e11, 1e11) for _ in range(2000)] + [
        rng.randint(-(10**9), 10**9) / 10**6 + 5e-7 for _ in range(2000)
    ]
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (x DOUBLE)")
    conn.execute("INSERT INTO t SELECT unnest(?::DOUBLE[])", [values])
    bad = conn.execute(
        "SELECT count(*) FROM t WHERE CAST(CAST(x AS DECIMAL(18,6)) AS DECIMAL(38,6)) "
        "<> CAST(x AS DECIMAL(38,6))"
    ).fetchone()
    conn.close()
    assert bad == (0,)

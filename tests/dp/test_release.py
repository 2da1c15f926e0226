"""Release: shape of the noisy table, suppression, partition selection, ORDER BY/LIMIT."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import duckdb
import opendp.prelude as dp
import pytest

from enclave.dp.mechanisms import PricedPlan, enable_dp, price_plan
from enclave.dp.release import NoisyTable, release
from enclave.dp.values import result_digest
from enclave.engine.layout import clamped_columns_sql
from enclave.errors import EnclaveError
from enclave.query.compile import assemble, compile_plan
from enclave.query.plan import Aggregate, ExactGroups, GroupColumn, OrderItem, Plan
from enclave.query.stats import quantile_candidates
from tests.dp.test_mechanisms import CODES, REGIONS, make_plan, make_spec, make_tier
from tests.query.test_compile import quantile_input


def run(
    plan: Plan,
    exact: ExactGroups,
    eps: str = "1.0",
    groups: int | None = 5,
    **tier: Any,
) -> tuple[PricedPlan, NoisyTable]:
    spec, t = make_spec(), make_tier(**tier)
    priced = price_plan(plan, spec, t, Decimal(eps), groups)
    return priced, release(plan, spec, t, priced, exact)


def region_groups(**stats: tuple[Any, ...]) -> ExactGroups:
    return ExactGroups(("region",), tuple((r,) for r in REGIONS), dict(stats))


def code_plan(*aggs: Aggregate, **over: Any) -> Plan:
    return Plan("visits", (GroupColumn("code", "code"), *aggs), group_by=("code",), **over)


def code_groups(keys: tuple[str, ...], **stats: tuple[Any, ...]) -> ExactGroups:
    return ExactGroups(("code",), tuple((c,) for c in keys), dict(stats))


def test_release_shape_types_and_digest() -> None:
    plan = make_plan(
        Aggregate("count", "n"),
        Aggregate("sum", "total", "cost"),
        Aggregate("sum", "years", "age"),
        Aggregate("avg", "mean_cost", "cost"),
    )
    exact = region_groups(
        _n=(100, 200, 0, 50, 10),
        a0_count=(100, 200, 0, 50, 10),
        a1_sum=(Decimal("1000.5"), Decimal(2000), None, Decimal(5), Decimal(1)),
        a2_sum=(4000, 8000, None, 2000, 400),
        a3_sum=(Decimal("1000.5"), Decimal(2000), None, Decimal(5), Decimal(1)),
        a3_count=(100, 200, 0, 50, 10),
    )
    priced, out = run(plan, exact)
    assert out.columns == ("region", "n", "total", "years", "mean_cost")
    assert [r[0] for r in out.rows] == list(REGIONS)  # every declared key, in declared order
    for row in out.rows:
        assert type(row[1]) is int and type(row[3]) is int
        assert type(row[2]) is float and 0.0 <= row[4] <= 50000.0
    assert out.suppressed_groups == 0
    body = {"columns": list(out.columns), "rows": [list(r) for r in out.rows]}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert out.result_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert out.accuracy["n"] == priced.accuracy["n"]
    avg_ci = out.accuracy["mean_cost"]["ci95"]
    assert avg_ci is not None and 0.0 < avg_ci <= 50000.0
    assert priced.accuracy["mean_cost"]["ci95"] is None  # unknown until noisy values exist


def test_select_order_is_kept_and_ungrouped_gives_one_row() -> None:
    plan = Plan("visits", (Aggregate("count", "n"), GroupColumn("region", "r")), ("region",))
    _, out = run(plan, region_groups(_n=(1,) * 5, a0_count=(1,) * 5))
    assert out.columns == ("n", "r") and [r[1] for r in out.rows] == list(REGIONS)
    flat = make_plan(Aggregate("count", "n"), grouped=False)
    _, one = run(flat, ExactGroups((), ((),), {"_n": (7,), "a0_count": (7,)}), groups=None)
    assert one.columns == ("n",) and len(one.rows) == 1


def test_exact_groups_must_match_the_declared_set() -> None:
    plan = make_plan(Aggregate("count", "n"))
    short = ExactGroups(("region",), (("north",),), {"_n": (3,), "a0_count": (3,)})
    with pytest.raises(EnclaveError):
        run(plan, short)
    with pytest.raises(EnclaveError):
        run(plan, region_groups(_n=(1,) * 5))  # a0_count missing
    odd = ExactGroups(
        ("region",), tuple((r,) for r in (*REGIONS[:4], "nowhere")), {"a0_count": (1,) * 5}
    )
    with pytest.raises(EnclaveError):
        run(plan, odd)  # a key that is not a declared value never passes through
    spec, tier = make_spec(), make_tier()
    priced = price_plan(make_plan(Aggregate("count", "other")), spec, tier, Decimal(1), 5)
    with pytest.raises(EnclaveError):
        release(plan, spec, tier, priced, region_groups(_n=(1,) * 5, a0_count=(1,) * 5))


def test_suppression_uses_noisy_counts_only() -> None:
    # every exact count equals the minimum: suppression on exact counts would keep all 40
    plan = code_plan(Aggregate("count", "n"))
    exact = code_groups(CODES, _n=(10,) * 40, a0_count=(10,) * 40)
    priced, out = run(plan, exact, eps="0.5", groups=40, min_noisy_count=10)
    assert 4 <= out.suppressed_groups <= 36  # noise (scale 10) pushes about half below 10
    assert len(out.rows) + out.suppressed_groups == 40
    assert all(row[1] >= 10 for row in out.rows)  # the released noisy counts decided it
    assert priced.aggregates[priced.suppress_with or 0].alias == "n"


def test_hidden_count_suppresses_empty_groups() -> None:
    plan = make_plan(Aggregate("sum", "total", "cost"))
    exact = region_groups(_n=(5000, 0, 5000, 0, 5000), a0_sum=(Decimal(1),) * 5)
    _, out = run(plan, exact, eps="4.0", min_noisy_count=100)
    assert [r[0] for r in out.rows] == ["north", "east", "central"]
    assert out.suppressed_groups == 2 and out.columns == ("region", "total")


def test_partition_selection_keeps_common_keys_drops_rare_and_reports_delta() -> None:
    common = tuple(f"k{i}" for i in range(6))
    rare = tuple(f"r{i}" for i in range(30))
    keys = common + rare
    n = tuple([100_000 + 10_000 * i for i in range(6)] + [1, 2, 3] * 10)
    plan = code_plan(Aggregate("count", "n"))
    exact = code_groups(keys, _n=n, a0_count=n)
    priced, out = run(plan, exact, groups=None, allow_undeclared_keys=True)
    assert priced.delta == Decimal("1e-7") and 0 < priced.opendp_delta <= 1e-7
    assert {r[0] for r in out.rows} == set(common)
    capped, few = run(plan, exact, groups=None, allow_undeclared_keys=True, group_by_max_groups=3)
    assert {r[0] for r in few.rows} == {"k3", "k4", "k5"}  # largest noisy counts first
    assert capped.opendp_epsilon <= 1.0


def test_partition_selection_with_tuple_and_date_keys() -> None:
    import datetime as dt

    plan = Plan(
        "visits",
        (GroupColumn("code", "code"), GroupColumn("day", "day"), Aggregate("count", "n")),
        group_by=("code", "day"),
    )
    keys = (("a", dt.date(2020, 1, 1)), ("a", dt.date(2020, 1, 2)), ("b", None))
    exact = ExactGroups(("code", "day"), keys, {"_n": (50_000, 3, 60_000), "a0_count": (1,) * 3})
    _, out = run(plan, exact, groups=None, allow_undeclared_keys=True)
    # released cells are plain JSON (dates as ISO text): the response, the stored release and
    # the digest hold the same values
    assert [r[:2] for r in out.rows] == [("a", "2020-01-01"), ("b", None)]
    assert len(out.result_sha256) == 64


def test_order_by_and_limit_apply_to_noisy_rows() -> None:
    plan = make_plan(Aggregate("count", "n"), order_by=(OrderItem("n", True),), limit=3)
    exact = region_groups(_n=(100,) * 5, a0_count=(100,) * 5)
    firsts = set()
    for _ in range(30):
        _, out = run(plan, exact, eps="0.5")
        counts = [r[1] for r in out.rows]
        assert len(out.rows) == 3 and counts == sorted(counts, reverse=True)
        firsts.add(out.rows[0][0])
    assert len(firsts) >= 2  # equal exact counts: the order comes from the noise
    by_name = make_plan(Aggregate("count", "n"), order_by=(OrderItem("region"),))
    _, out = run(by_name, exact)
    assert [r[0] for r in out.rows] == sorted(REGIONS)


def test_quantile_lands_near_the_true_median_on_easy_data() -> None:
    values = tuple(50000 * i / 9999 for i in range(10_000))  # spans the bounds, median 25000
    plan = make_plan(Aggregate("quantile", "med", "cost", 0.5), grouped=False)
    exact = ExactGroups((), ((),), {"_n": (10_000,), "a0_values": (values,)})
    spec = make_spec(k=1)
    priced = price_plan(plan, spec, make_tier(), Decimal("1.0"), None)
    out = release(plan, spec, make_tier(), priced, exact)
    assert abs(out.rows[0][0] - 25000.0) <= 500.0  # 512 candidates: grid step ~98
    fine = Plan("visits", (Aggregate("quantile", "q", "age", 0.25),))
    ages = tuple(i % 101 for i in range(10_000))  # 0..100, lower quartile 25
    priced = price_plan(fine, spec, make_tier(), Decimal("1.0"), None)
    got = release(fine, spec, make_tier(), priced, ExactGroups((), ((),), {"a0_values": (ages,)}))
    assert abs(got.rows[0][0] - 25.0) <= 3.0
    assert got.accuracy["q"]["ci95"] is None and got.accuracy["q"]["resolution"] == 1.0


def test_empty_groups_get_noise_and_a_quantile() -> None:
    plan = make_plan(Aggregate("count", "n"), Aggregate("quantile", "q", "age", 0.5))
    exact = region_groups(_n=(0,) * 5, a0_count=(0,) * 5, a1_values=(None, (), (), (), ()))
    seen: set[int] = set()
    for _ in range(5):
        _, out = run(plan, exact, eps="0.5")
        assert len(out.rows) == 5 and all(0.0 <= r[2] <= 110.0 for r in out.rows)
        seen.update(r[1] for r in out.rows)
    assert seen != {0}


def test_result_digest_handles_dates_and_is_canonical() -> None:
    import datetime as dt

    a = result_digest(("d", "n"), [(dt.date(2020, 1, 1), 3)])
    assert a == result_digest(("d", "n"), [("2020-01-01", 3)])
    assert a != result_digest(("d", "n"), [("2020-01-01", 4)])


def _histogram_and_values(column: str, sql_values: str) -> tuple[ExactGroups, list[float]]:
    """Real DuckDB: the compiled quantile histogram, and every clamped value it stands for."""
    spec = make_spec()
    col = spec.column(column)
    assert col is not None and col.bounds is not None
    con = duckdb.connect()
    con.execute(f"CREATE TABLE src AS SELECT {sql_values} AS v FROM range(20000) t(i)")  # noqa: S608
    con.execute(
        "CREATE TABLE raw AS SELECT CAST(v AS BIGINT) AS age, CAST(v AS DOUBLE) AS cost, "
        "CAST(v AS DOUBLE) AS delta_t FROM src"
    )
    extra = "".join(", " + c for c in clamped_columns_sql(spec, "raw."))
    con.execute(f"CREATE TABLE b AS SELECT raw.*{extra} FROM raw")  # noqa: S608
    plan = Plan("visits", (Aggregate("quantile", "q", column, 0.5),))
    compiled = compile_plan(plan, spec, "b")
    exact = assemble(compiled, con.execute(compiled.sql, list(compiled.params)).fetchall())
    low, high = col.bounds
    rows = con.execute(f"SELECT {column} FROM raw WHERE {column} IS NOT NULL").fetchall()  # noqa: S608
    con.close()
    return exact, [float(min(max(r[0], low), high)) for r in rows]


@pytest.mark.parametrize(
    ("column", "sql_values"),
    [
        ("cost", "CASE WHEN i % 97 = 0 THEN NULL ELSE (i * 7919 % 20011) * 3.1 - 500 END"),
        ("delta_t", "((i * 31) % 1000) / 25.0 - 25"),
        ("age", "(i * 13) % 130 - 5"),
    ],
)
def test_quantile_from_histogram_is_the_priced_measurement_on_the_same_scores(
    column: str, sql_values: str
) -> None:
    """The histogram reaches the very measurement priced (same privacy map), and at a huge
    epsilon (almost no noise) selects the same candidate as every clamped value would."""
    enable_dp()
    exact, values = _histogram_and_values(column, sql_values)
    col = make_spec().column(column)
    assert col is not None and col.bounds is not None
    score = dp.t.make_quantile_score_candidates(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        list(quantile_candidates(col)),
        0.5,
    )
    expanded = quantile_input(exact.stats["a0_values"][0])
    assert score(expanded) == score(values)  # OpenDP's own scores: identical
    plan = Plan("visits", (Aggregate("quantile", "q", column, 0.5),))
    spec, tier = make_spec(), make_tier(max_epsilon_per_query=1e9, budget_epsilon=1e9)
    for eps in ("1e7", "1.0"):
        priced = price_plan(plan, spec, tier, Decimal(eps), None)
        p = next(a for a in priced.aggregates if a.kind == "quantile")
        assert p.measurement.map(p.d_in) == p.epsilon <= float(eps)
        assert p.d_in == spec.max_rows_per_unit
        assert len(expanded) == len(values) <= 20000
        # the release scores the histogram itself: OpenDP's scores of every value, exactly
        assert p.mechanism.scores(exact.stats["a0_values"][0]).tolist() == score(values)
        got = release(plan, spec, tier, priced, exact).rows[0][0]
        if eps == "1e7":  # almost no noise: a best-scoring candidate, as on every value
            cands = list(quantile_candidates(col))
            scores = score(values)
            direct = float(p.measurement(values))
            assert scores[cands.index(got)] == scores[cands.index(direct)]
        else:
            # every point between the lower and the upper median is an exact median (the age
            # data has gaps there), so measure the distance to that interval
            ordered = sorted(values)
            lower, upper = ordered[(len(ordered) - 1) // 2], ordered[len(ordered) // 2]
            low, high = col.bounds
            assert max(0.0, lower - got, got - upper) <= (high - low) / 20

"""Pricing: sensitivities, the epsilon split, calibration and exact OpenDP costs."""

from __future__ import annotations

import secrets
from decimal import Context, Decimal, localcontext
from typing import Any, ClassVar

import opendp.prelude as dp
import pytest

from enclave.dp.calibrate import (
    Builder,
    calibrate,
    count_builder,
    decimal_sum,
    even_share,
    float_builder,
    largest_float_at_most,
    quantile_builder,
    release_delta,
    threshold_builder,
)
from enclave.dp.mechanisms import PricedPlan, check_plan, enable_dp, price_plan
from enclave.dp.release import release
from enclave.errors import BadRequest, TierRefused, UnsupportedQuery
from enclave.models import ColumnSpec, DatasetSpec, Tier
from enclave.query.plan import Aggregate, ExactGroups, GroupColumn, Plan
from enclave.query.stats import QUANTILE_CANDIDATES, candidate_grid

K = 5
REGIONS = ("north", "south", "east", "west", "central")
CODES = tuple(f"c{i:02d}" for i in range(40))


def make_spec(k: int = K) -> DatasetSpec:
    return DatasetSpec(
        name="visits",
        description="synthetic",
        source="visits.parquet",
        source_path="/nonexistent/visits.parquet",
        privacy_unit="person_id",
        max_rows_per_unit=k,
        min_tier=("standard",),
        allowed_jurisdictions=None,
        columns=(
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("age", "int", (0, 110)),
            ColumnSpec("region", "category", None, REGIONS),
            ColumnSpec("cost", "float", (0.0, 50000.0)),
            ColumnSpec("delta_t", "float", (-20.0, 10.0)),
            ColumnSpec("code", "category", None, CODES),
        ),
    )


def make_tier(**over: Any) -> Tier:
    values: dict[str, Any] = {
        "name": "standard",
        "description": "test tier",
        "aggregates": frozenset({"count", "count_distinct_units", "sum", "avg", "quantile"}),
        "max_epsilon_per_query": Decimal("5"),
        "budget_epsilon": Decimal("50"),
        "budget_delta": Decimal("1e-6"),
        "min_noisy_count": 0,
    }
    values.update(over)
    return Tier(**values)


def make_plan(*aggs: Aggregate, grouped: bool = True, **over: Any) -> Plan:
    select: tuple[Any, ...] = ((GroupColumn("region", "region"),) if grouped else ()) + aggs
    return Plan(dataset="visits", select=select, group_by=("region",) if grouped else (), **over)


def price(plan: Plan, eps: str = "1.0", groups: int | None = 5, **tier: Any) -> PricedPlan:
    return price_plan(plan, make_spec(), make_tier(**tier), Decimal(eps), groups)


def by_alias(p: PricedPlan, alias: str, part: str = "value") -> Any:
    return next(a for a in p.aggregates if a.alias == alias and a.part == part)


def test_enable_dp_is_idempotent() -> None:
    enable_dp()
    enable_dp()
    meas: Any = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), 1.0)
    assert meas.map(1) == 1.0


def test_count_and_sum_split_epsilon_and_costs_are_exact() -> None:
    p = price(make_plan(Aggregate("count", "n"), Aggregate("sum", "total", "cost")))
    n, total = by_alias(p, "n"), by_alias(p, "total")
    assert p.share == 0.5
    assert (n.d_in, total.d_in) == (K, K * 50000.0)
    assert n.epsilon == n.measurement.map(K) <= 0.5
    assert total.epsilon == total.measurement.map(K * 50000.0) <= 0.5
    assert n.scale == pytest.approx(K / 0.5, rel=1e-12) and n.scale >= K / 0.5
    assert total.scale == pytest.approx(K * 50000.0 / 0.5, rel=1e-12)
    # different domains (i64 counts, float sums): the composition is the exact sum of the maps
    with localcontext(Context(prec=100)):
        assert Decimal(p.opendp_epsilon) == Decimal(n.epsilon) + Decimal(total.epsilon)
    assert p.opendp_epsilon <= 1.0
    assert p.epsilon == Decimal("1.0") and p.delta == 0
    assert p.accuracy["n"]["ci95"] == dp.discrete_laplacian_scale_to_accuracy(n.scale, 0.05)
    assert p.accuracy["total"]["ci95"] == dp.laplacian_scale_to_accuracy(total.scale, 0.05)
    assert (n.integer, total.integer) == (True, False)


def test_same_domain_measurements_use_make_composition() -> None:
    p = price(make_plan(Aggregate("count", "a"), Aggregate("count", "b")), eps="0.6")
    a, b = by_alias(p, "a"), by_alias(p, "b")
    meas: Any = dp.c.make_composition([a.measurement, b.measurement])
    composed = meas.map(K)
    assert p.opendp_epsilon == composed
    assert composed <= 0.6


def test_count_distinct_units_sensitivity_is_min_k_groups() -> None:
    agg = Aggregate("count_distinct_units", "u")
    assert by_alias(price(make_plan(agg), groups=2), "u").d_in == 2
    assert by_alias(price(make_plan(agg), groups=40), "u").d_in == K
    assert by_alias(price(make_plan(agg, grouped=False), groups=None), "u").d_in == 1


def test_sum_sensitivity_uses_largest_absolute_bound() -> None:
    p = price(make_plan(Aggregate("sum", "s", "delta_t"), Aggregate("sum", "ages", "age")))
    assert by_alias(p, "s").d_in == K * 20.0
    ages = by_alias(p, "ages")
    assert ages.d_in == K * 110 and isinstance(ages.d_in, int)
    assert ages.integer and str(ages.measurement.input_domain) == "VectorDomain(AtomDomain(T=i64))"


def test_avg_splits_its_share_in_half() -> None:
    p = price(make_plan(Aggregate("count", "n"), Aggregate("avg", "m", "cost")), eps="1.0")
    s, c = by_alias(p, "m", "avg_sum"), by_alias(p, "m", "avg_count")
    assert (s.d_in, c.d_in) == (K * 50000.0, K)
    assert s.epsilon <= 0.25 and c.epsilon <= 0.25
    assert s.epsilon == pytest.approx(0.25, rel=1e-12)
    assert p.accuracy["m"] == {"ci95": None}
    assert (s.stat, c.stat) == ("a1_sum", "a1_count")


@pytest.mark.parametrize("eps", ["0.50022", "0.50066", "0.50076", "0.5011", "0.50181"])
def test_composition_rounding_never_refuses_a_valid_epsilon(eps: str) -> None:
    """OpenDP rounds composed losses upward: these epsilons once overshot by an ulp (a 500).
    The share shrinks until the composition fits; the charge stays exactly epsilon."""
    p = price(make_plan(Aggregate("count", "n"), Aggregate("avg", "m", "cost")), eps=eps)
    assert p.epsilon == Decimal(eps)
    assert Decimal(p.opendp_epsilon) <= Decimal(eps)
    assert p.opendp_epsilon == pytest.approx(float(eps), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 0.1, 0.9, 0.25])
def test_quantile_privacy_map_is_linear_in_d_in(alpha: float) -> None:
    enable_dp()
    cands = candidate_grid(0.0, 100.0, integer=False)
    m = quantile_builder(cands, alpha)(3.0)
    one = m.map(1)
    for d in range(1, 4 * K + 1):
        assert m.map(d) == pytest.approx(d * one, rel=1e-12)
        assert m.map(d) <= d * one * (1 + 1e-12)


def test_quantile_charged_once_at_k_whatever_the_groups() -> None:
    agg = Aggregate("quantile", "med", "cost", 0.5)
    few, many = price(make_plan(agg), groups=2), price(make_plan(agg), groups=40)
    assert by_alias(few, "med").epsilon == by_alias(many, "med").epsilon
    med = by_alias(few, "med")
    assert med.d_in == K and med.epsilon == med.measurement.map(K) <= 1.0
    assert few.accuracy["med"]["ci95"] is None  # no interval in value units; a rank bound


def test_quantile_candidates_span_declared_bounds() -> None:
    floats = candidate_grid(0.0, 50000.0, integer=False)
    assert len(floats) == QUANTILE_CANDIDATES
    assert floats[0] == 0.0 and floats[-1] == 50000.0
    assert all(a < b for a, b in zip(floats, floats[1:], strict=False))
    assert candidate_grid(0, 110, integer=True) == tuple(float(v) for v in range(111))


@pytest.mark.parametrize("eps", ["0.1", "0.3", "0.7", "1", "1.7", "2.9", "0.0001"])
def test_calibration_never_exceeds_the_share(eps: str) -> None:
    plan = make_plan(
        Aggregate("count", "n"),
        Aggregate("count_distinct_units", "u"),
        Aggregate("sum", "s", "cost"),
        Aggregate("sum", "a", "age"),
        Aggregate("avg", "m", "delta_t"),
        Aggregate("quantile", "q", "age", 0.9),
    )
    p = price(plan, eps=eps)
    assert Decimal(p.share) * 6 <= Decimal(eps)
    for a in p.aggregates:
        cap = p.share / 2 if a.kind == "avg" else p.share
        assert a.epsilon == a.measurement.map(a.d_in) <= cap
        assert a.epsilon >= cap * (1 - 1e-9)  # calibrated tightly, not wastefully
    assert sum(Decimal(a.epsilon) for a in p.aggregates) <= Decimal(eps)
    assert Decimal(p.opendp_epsilon) <= Decimal(eps) == p.epsilon


def test_share_helpers_are_exact_in_decimal() -> None:
    for text in ("0.1", "0.7", "1.3", "2.2"):
        value = Decimal(text)
        assert Decimal(largest_float_at_most(value)) <= value
        for parts in (3, 7, 11):
            assert Decimal(even_share(value, parts)) * parts <= value


def test_hidden_count_added_only_when_needed_for_suppression() -> None:
    only_sum = make_plan(Aggregate("sum", "s", "cost"))
    p = price(only_sum, eps="1.0", min_noisy_count=10)
    hidden = [a for a in p.aggregates if a.part == "hidden_count"]
    assert len(hidden) == 1 and hidden[0].stat == "_n" and hidden[0].d_in == K
    assert p.share == 0.5 and p.suppress_with == p.aggregates.index(hidden[0])
    assert "_n" not in p.accuracy
    assert price(only_sum, min_noisy_count=0).share == 1.0
    with_count = price(make_plan(Aggregate("sum", "s", "cost"), Aggregate("count", "n")),
                       min_noisy_count=10)  # fmt: skip
    assert (
        with_count.share == 0.5
        and with_count.aggregates[with_count.suppress_with or 0].alias == "n"
    )
    with_avg = price(make_plan(Aggregate("avg", "m", "cost")), min_noisy_count=10)
    assert with_avg.share == 1.0
    assert with_avg.aggregates[with_avg.suppress_with or 0].part == "avg_count"


def test_undeclared_keys_use_partition_selection_and_spend_delta() -> None:
    plan = make_plan(Aggregate("sum", "s", "cost"))
    p = price(plan, eps="1.0", groups=None, allow_undeclared_keys=True, min_noisy_count=10)
    part = by_alias(p, "_n", "partition")
    assert p.n_groups is None and p.share == 0.5  # no hidden count: partition counts suppress
    assert p.aggregates[p.suppress_with or 0] is part
    assert p.delta == Decimal("1e-7")
    eps, delta = part.measurement.map((K, K, K))
    assert eps <= 0.5 and delta <= 1e-7 and p.opendp_delta == delta
    assert part.threshold is not None  # released at noisy count >= threshold; charged the
    # map one below (opendp#2922), the smallest threshold whose true delta fits
    assert part.measurement.map((K, K, K)) == (
        threshold_builder(part.threshold - 1)(part.scale).map((K, K, K))
    )
    released = threshold_builder(part.threshold)(part.scale)  # what release() runs (vectorised)
    assert released.map((K, K, K))[1] < delta  # what OpenDP would have under-charged
    assert part.mechanism.threshold == part.threshold and part.mechanism.noise.map(K) == eps
    assert release_delta(part.scale, (K, K, K), part.threshold) == delta
    assert release_delta(part.scale, (K, K, K), part.threshold - 1) > 1e-7
    # count_distinct falls back to the released cap for G
    cd = price(make_plan(Aggregate("count_distinct_units", "u")), groups=None,
               allow_undeclared_keys=True, group_by_max_groups=3)  # fmt: skip
    assert by_alias(cd, "u").d_in == 3


def test_undeclared_keys_refused_without_tier_permission_or_delta() -> None:
    plan = make_plan(Aggregate("count", "n"))
    with pytest.raises(TierRefused):
        price(plan, groups=None)
    with pytest.raises(TierRefused):
        price(plan, groups=None, allow_undeclared_keys=True, budget_delta=Decimal(0))


@pytest.mark.parametrize("eps", ["0", "-1", "NaN", "Infinity"])
def test_bad_epsilon_is_refused(eps: str) -> None:
    with pytest.raises(BadRequest):
        price(make_plan(Aggregate("count", "n")), eps=eps)


def test_unusable_aggregates_are_refused() -> None:
    with pytest.raises(UnsupportedQuery):
        price(make_plan(Aggregate("quantile", "q", "region", 0.5)))
    with pytest.raises(UnsupportedQuery):
        price(make_plan(Aggregate("quantile", "q", "cost", 1.0)))
    with pytest.raises(UnsupportedQuery):
        price(make_plan())
    with pytest.raises(UnsupportedQuery):
        price(make_plan(Aggregate("count", "n"), Aggregate("sum", "n", "cost")))


# -- caches: public inputs only, never stale, measurements reusable ---------------------------


def test_price_is_cached_per_public_inputs_and_never_stale() -> None:
    plan = make_plan(Aggregate("count", "n"), Aggregate("sum", "s", "cost"))
    first = price(plan, eps="0.7")
    assert price(plan, eps="0.7") is first  # same plan, spec, tier, epsilon: one PricedPlan
    assert price(plan, eps="0.70") is not first  # epsilon as written is part of the key
    # a changed bound without a version bump, or a changed tier field: priced afresh
    wider = make_spec()
    cols = tuple(
        ColumnSpec("cost", "float", (0.0, 90000.0)) if c.name == "cost" else c
        for c in wider.columns
    )
    wider = DatasetSpec(**{**wider.__dict__, "columns": cols})
    got = price_plan(plan, wider, make_tier(), Decimal("0.7"), 5)
    assert by_alias(got, "s").d_in == K * 90000.0 != by_alias(first, "s").d_in
    hidden = price(make_plan(Aggregate("sum", "s", "cost")), eps="0.7", min_noisy_count=3)
    assert price(make_plan(Aggregate("sum", "s", "cost")), eps="0.7").suppress_with is None
    assert hidden.suppress_with is not None


def test_a_cached_price_still_meets_every_refusal() -> None:
    plan = make_plan(Aggregate("count", "n"))
    price(plan, groups=None, allow_undeclared_keys=True)  # priced and cached
    with pytest.raises(TierRefused):  # the tier changed: refused, not served from the cache
        price(plan, groups=None, allow_undeclared_keys=False)
    with pytest.raises(TierRefused):
        check_plan(plan, make_spec(), make_tier(), Decimal("1.0"), None)
    check_plan(plan, make_spec(), make_tier(), Decimal("1.0"), 5)


def test_cached_price_releases_fresh_noise_every_time() -> None:
    """OpenDP samples when a measurement is invoked: one cached PricedPlan, many releases."""
    plan = make_plan(Aggregate("count", "n"), Aggregate("sum", "s", "cost"))
    p = price(plan, eps="0.9")
    assert price(plan, eps="0.9") is p
    exact = ExactGroups(
        ("region",),
        tuple((r,) for r in REGIONS),
        {"_n": (50,) * 5, "a0_count": (50,) * 5, "a1_sum": (Decimal(1000),) * 5},
    )
    spec, tier = make_spec(), make_tier()
    outs = [release(plan, spec, tier, p, exact).rows for _ in range(3)]
    assert outs[0] != outs[1] and outs[1] != outs[2]
    counts = {row[1] for out in outs for row in out}
    assert len(counts) > 3  # scale 2k/eps ~ 11: 15 draws are not a handful of values


def test_priced_accuracy_is_read_only() -> None:
    p = price(make_plan(Aggregate("count", "n")), eps="0.4")
    with pytest.raises(TypeError):
        p.accuracy["n"]["ci95"] = 0.0  # type: ignore[index]
    with pytest.raises(TypeError):
        p.accuracy["x"] = {}  # type: ignore[index]


class _CountingBuilder(Builder):
    builds: ClassVar[list[float]] = []

    def __call__(self, scale: float) -> Any:
        self.builds.append(scale)
        return super().__call__(scale)


def test_calibration_is_one_build_and_cached_per_target() -> None:
    b = _CountingBuilder("count")
    b.builds.clear()
    d_in = 7 + secrets.randbelow(10**9)  # a key no earlier run in this process has cached
    first = calibrate(b, d_in, 0.3)
    assert len(b.builds) == 2  # the reference (kept per builder and d_in) and the measurement
    assert calibrate(b, d_in, 0.3) is first and len(b.builds) == 2
    meas, scale, eps = calibrate(b, d_in, 0.2)
    assert len(b.builds) == 3  # one build, one map
    assert eps == meas.map(d_in) <= 0.2 and eps >= 0.2 * (1 - 1e-12)
    # d_in is keyed with its type: a float is not served the i64 measurement priced for an int
    with pytest.raises(TypeError):
        calibrate(b, float(d_in), 0.3)


def test_composed_costs_are_summed_exactly() -> None:
    """The 28-digit default context would round these sums; the UPWARD context never does."""
    values = [0.1, 0.2, 1e-20, 0.49999999999999994]
    with localcontext(Context(prec=2000)):
        exact = sum((Decimal(v) for v in values), Decimal(0))
    assert decimal_sum(values) == exact
    half = Decimal(0.49999999999999994)
    with localcontext(Context(prec=2000)):
        exact_pair = half + half
    assert decimal_sum([0.49999999999999994] * 2) == exact_pair != half + half  # 28 digits


@pytest.mark.parametrize("kind", ["count", "float"])
def test_shared_domain_builds_map_exactly_as_a_fresh_build(kind: str) -> None:
    """Builders reuse one OpenDP domain and metric per space; every measurement they build
    maps exactly as one built from scratch, at every scale and sensitivity tried."""
    build = count_builder() if kind == "count" else float_builder()
    fresh_domain = (
        dp.vector_domain(dp.atom_domain(T="i64"))
        if kind == "count"
        else dp.vector_domain(dp.atom_domain(T=float, nan=False))
    )
    fresh_metric = dp.l1_distance(T="i64") if kind == "count" else dp.l1_distance(T=float)
    for scale in (0.3, 1.0, 7.123456789, 1e6 / 3):
        for d_in in (1, 5, 123457):
            d: Any = d_in if kind == "count" else float(d_in)
            fresh: Any = dp.m.make_laplace(fresh_domain, fresh_metric, scale=scale)
            assert build(scale).map(d) == fresh.map(d)
    assert str(build(1.0).input_domain) == str(fresh_domain)


def test_new_epsilons_are_charged_exactly_opendps_map() -> None:
    """Many distinct epsilons (the bench's pattern): each price's per-aggregate epsilon is
    OpenDP's map of a measurement built from scratch at the priced scale, within the share."""
    plan = make_plan(Aggregate("count", "n"), Aggregate("sum", "s", "age"), grouped=False)
    for i in range(25):
        eps = (
            Decimal("0.5")
            + Decimal(i) / Decimal(10**6)
            + Decimal(secrets.randbelow(10**6)) / 10**12
        )
        priced = price(plan, eps=str(eps), groups=None)
        for p in priced.aggregates:
            fresh: Any = dp.m.make_laplace(
                dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=p.scale
            )
            assert p.epsilon == fresh.map(p.d_in) <= priced.share
        with localcontext(Context(prec=2000)):
            assert Decimal(priced.opendp_epsilon) <= eps == priced.epsilon


def test_plan_text_is_computed_once_and_equal_for_equal_plans() -> None:
    plan = make_plan(Aggregate("count", "n"))
    assert plan.normalized() is plan.normalized()
    again = make_plan(Aggregate("count", "n"))
    assert again.normalized() == plan.normalized()
    assert make_plan(Aggregate("count", "m")).normalized() != plan.normalized()


def test_only_small_plans_without_quantiles_are_priced_on_the_event_loop() -> None:
    from enclave.dp.mechanisms import CHEAP_AGGREGATES, cheap_to_price
    from enclave.query.parse import parse_query
    from tests.query.test_parse import visits_spec

    spec = visits_spec()
    counts = ", ".join(f"COUNT(*) AS c{i}" for i in range(CHEAP_AGGREGATES))
    assert cheap_to_price(parse_query(f"SELECT {counts} FROM visits", spec))  # noqa: S608
    more = counts + ", SUM(cost) AS s"
    assert not cheap_to_price(parse_query(f"SELECT {more} FROM visits", spec))  # noqa: S608
    assert not cheap_to_price(parse_query("SELECT MEDIAN(cost) AS m FROM visits", spec))

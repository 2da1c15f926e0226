"""The accuracy search (``dp/target.py``) against the straightforward one: bisection over the
whole grid, pricing the whole plan (``price_plan``) at every epsilon it tries. Both must choose
the same epsilon and state the same ci95, for any plan, tier and targets; and the search must
do it without pricing the whole plan over and over."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from enclave.dp import mechanisms
from enclave.dp.mechanisms import enable_dp, price_plan
from enclave.dp.target import GALLOP, Chosen, choose_epsilon, smallest_meeting
from enclave.errors import AccuracyUnreachable
from enclave.ledger.grid import epsilon_down, epsilon_up, epsilon_value
from enclave.models import DatasetSpec, Tier
from enclave.query.parse import MAX_AGGREGATES, MAX_QUANTILES, parse_query
from enclave.query.plan import Aggregate, Plan
from tests.dp.test_mechanisms import make_plan, make_spec, make_tier

POOL = (
    Aggregate("count", "n"),
    Aggregate("count_distinct_units", "people"),
    Aggregate("sum", "years", "age"),
    Aggregate("sum", "spend", "cost"),
    Aggregate("sum", "drift", "delta_t"),
    Aggregate("avg", "mean", "cost"),
    Aggregate("quantile", "mid", "age", 0.5),
)
TARGETABLE = ("count", "count_distinct_units", "sum")


@pytest.fixture(autouse=True)
def _dp() -> None:
    enable_dp()


def whole_plan_choice(
    plan: Plan, spec: DatasetSpec, tier: Tier, n_groups: int | None, targets: Mapping[str, float]
) -> Chosen:
    """The reference: the cap, then the tier's minimum, then bisection, each a whole price."""
    low = epsilon_up(tier.min_epsilon_per_query)
    high = epsilon_down(tier.max_epsilon_per_query)

    def achieved(units: int) -> dict[str, float]:
        accuracy = price_plan(plan, spec, tier, epsilon_value(units), n_groups).accuracy
        return {a: float(accuracy[a]["ci95"] or 0.0) for a in targets}

    def meets(units: int) -> bool:
        return all(v <= targets[a] for a, v in achieved(units).items())

    if not meets(high):
        raise AccuracyUnreachable("unreachable")
    if meets(low):
        return Chosen(epsilon_value(low), achieved(low))
    while high - low > 1:
        mid = (low + high) // 2
        if meets(mid):
            high = mid
        else:
            low = mid
    return Chosen(epsilon_value(high), achieved(high))


@st.composite
def requests(draw: Any) -> tuple[Plan, DatasetSpec, Tier, int | None, dict[str, float]]:
    aggs = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=5, unique=True))
    if not any(a.kind in TARGETABLE for a in aggs):
        aggs.append(POOL[0])
    grouped = draw(st.booleans())
    undeclared = grouped and draw(st.booleans())
    high = draw(st.sampled_from(["0.01", "0.5", "1", "5", "100", "1000000"]))
    lows = [m for m in ("0.000001", "0.001", "0.01") if Decimal(m) <= Decimal(high)]
    low = draw(st.sampled_from(lows))
    tier = make_tier(
        max_epsilon_per_query=Decimal(high),
        min_epsilon_per_query=Decimal(low),
        min_noisy_count=draw(st.sampled_from([0, 10])),
        allow_undeclared_keys=undeclared,
    )
    spec = make_spec(draw(st.sampled_from([1, 2, 5, 30])))
    plan = make_plan(*aggs, grouped=grouped)
    n_groups = None if undeclared else (draw(st.sampled_from([1, 5, 40])) if grouped else 1)
    # targets around what the tier can reach: a ci95 the plan has at some grid epsilon
    # (met exactly there), or a multiple of the one at the cap (beyond 1: unreachable)
    top = epsilon_down(tier.max_epsilon_per_query)
    aliases = [a.alias for a in aggs if a.kind in TARGETABLE]
    chosen = draw(st.lists(st.sampled_from(aliases), min_size=1, unique=True))
    targets = {}
    for alias in chosen:
        if draw(st.booleans()):
            units = draw(st.integers(epsilon_up(tier.min_epsilon_per_query), top))
            at = price_plan(plan, spec, tier, epsilon_value(units), n_groups)
        else:
            at = price_plan(plan, spec, tier, epsilon_value(top), n_groups)
        ci95 = at.accuracy[alias]["ci95"]
        assume(ci95 is not None and 0.0 < ci95 < math.inf)  # a request's target is positive
        targets[alias] = ci95 * draw(st.sampled_from([1.0, 1.0, 0.999, 3.7, 120.0, 1e4]))
    return plan, spec, tier, n_groups, targets


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_search_chooses_what_whole_plan_bisection_chooses(request: Any) -> None:
    plan, spec, tier, n_groups, targets = request
    try:
        expected = whole_plan_choice(plan, spec, tier, n_groups, targets)
    except AccuracyUnreachable:
        with pytest.raises(AccuracyUnreachable):
            choose_epsilon(plan, spec, tier, n_groups, targets)
        return
    chosen = choose_epsilon(plan, spec, tier, n_groups, targets)
    assert chosen == expected
    # the promise is the price: what a query at the chosen epsilon states, and one grid unit
    # less misses a target (unless it is the tier's minimum)
    priced = price_plan(plan, spec, tier, chosen.epsilon, n_groups).accuracy
    assert chosen.achieved == {a: priced[a]["ci95"] for a in targets}
    units = epsilon_up(chosen.epsilon)
    if units > epsilon_up(tier.min_epsilon_per_query):
        below = price_plan(plan, spec, tier, epsilon_value(units - 1), n_groups).accuracy
        assert any(float(below[a]["ci95"] or 0.0) > t for a, t in targets.items())


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(-10, 2 * 10**6),
)
def test_the_gallop_finds_the_first_unit_that_meets_from_any_guess(
    low: int, span: int, guess: int
) -> None:
    high = low + span
    first = low + span // 3
    calls: list[int] = []

    def meets(units: int) -> bool:
        calls.append(units)
        assert low <= units <= high
        return units >= first

    assert smallest_meeting(meets, low, high, guess) == first
    assert len(calls) <= 1 + len(GALLOP) + span.bit_length()


def largest_sql() -> str:
    """A query at the parser's caps: MAX_AGGREGATES aggregates, MAX_QUANTILES quantiles."""
    columns = [f"QUANTILE_CONT(cost, {0.05 + 0.09 * i:.2f}) AS q{i}" for i in range(MAX_QUANTILES)]
    kinds = ("COUNT(*)", "SUM(age)", "SUM(cost)", "AVG(cost)")
    columns += [f"{kinds[i % 4]} AS a{i}" for i in range(MAX_AGGREGATES - MAX_QUANTILES)]
    return f"SELECT region, {', '.join(columns)} FROM visits GROUP BY region"  # noqa: S608


def test_a_search_at_the_largest_plan_prices_the_whole_plan_once() -> None:
    """The search fits the share at a few epsilons and builds no release object (the ten
    quantiles' scoring is most of a whole price): the query at the chosen epsilon is then the
    one whole price, and reuses the search's fit."""
    spec, tier = make_spec(), make_tier()
    plan = parse_query(largest_sql(), spec)
    assert len(plan.aggregates) == MAX_AGGREGATES
    targets = {"a0": 401.5, "a1": 50_003.0}
    whole = mechanisms._priced.cache_info().misses
    chosen = choose_epsilon(plan, spec, tier, 5, targets)
    assert mechanisms._priced.cache_info().misses == whole  # no whole price in the search
    fits = mechanisms._fitted.cache_info()
    priced = price_plan(plan, spec, tier, chosen.epsilon, 5)
    assert mechanisms._fitted.cache_info().hits == fits.hits + 1  # the search's fit, reused
    assert mechanisms._priced.cache_info().misses == whole + 1
    assert chosen.achieved == {a: priced.accuracy[a]["ci95"] for a in targets}

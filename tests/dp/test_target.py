"""The accuracy-target search (``dp/target.py``), exactly: the chosen epsilon meets every
target and one grid step less does not; its price is the one a query at that epsilon gets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from enclave.dp.mechanisms import enable_dp, price_plan
from enclave.dp.target import check_targets, choose_epsilon
from enclave.errors import AccuracyUnreachable, BadRequest
from enclave.ledger.grid import EPSILON_UNIT
from enclave.query.plan import Aggregate, Plan
from tests.dp.test_mechanisms import make_plan, make_spec, make_tier

COUNT = Aggregate("count", "n")
UNITS = Aggregate("count_distinct_units", "people")
INT_SUM = Aggregate("sum", "years", "age")
FLOAT_SUM = Aggregate("sum", "spend", "cost")
AVG = Aggregate("avg", "mean", "cost")
MEDIAN = Aggregate("quantile", "mid", "age", 0.5)


@pytest.fixture(autouse=True)
def _dp() -> None:
    enable_dp()


def ci95(plan: Plan, epsilon: Decimal, alias: str, groups: int | None = 5, **tier: object) -> float:
    priced = price_plan(plan, make_spec(), make_tier(**tier), epsilon, groups)
    value = priced.accuracy[alias]["ci95"]
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("aggs", "targets"),
    [
        ((COUNT,), {"n": 50.0}),
        ((COUNT,), {"n": 7.25}),
        ((UNITS,), {"people": 12.0}),
        ((INT_SUM,), {"years": 2500.0}),
        ((FLOAT_SUM,), {"spend": 1.5e6}),
        ((COUNT, INT_SUM, MEDIAN), {"n": 40.0, "years": 4000.0}),
        ((COUNT, FLOAT_SUM, AVG), {"spend": 2e6}),
    ],
)
@pytest.mark.parametrize("grouped", [True, False])
def test_the_chosen_epsilon_meets_every_target_and_one_step_less_does_not(
    aggs: tuple[Aggregate, ...], targets: dict[str, float], grouped: bool
) -> None:
    plan = make_plan(*aggs, grouped=grouped)
    groups = 5 if grouped else 1
    chosen = choose_epsilon(plan, make_spec(), make_tier(), groups, targets)
    assert chosen.epsilon % EPSILON_UNIT == 0
    for alias, target in targets.items():
        got = ci95(plan, chosen.epsilon, alias, groups)
        assert got <= target and chosen.achieved[alias] == got
    below = chosen.epsilon - EPSILON_UNIT
    assert any(ci95(plan, below, alias, groups) > t for alias, t in targets.items())


def test_the_tier_minimum_is_chosen_when_it_already_meets_the_target() -> None:
    plan = make_plan(COUNT)
    tier = make_tier(min_epsilon_per_query=Decimal("0.5"))
    chosen = choose_epsilon(plan, make_spec(), tier, 5, {"n": 10_000.0})
    assert chosen.epsilon == Decimal("0.5")


def test_a_target_beyond_the_cap_names_the_best_ci95() -> None:
    plan = make_plan(COUNT, INT_SUM)
    tier = make_tier(max_epsilon_per_query=Decimal("0.25"))
    best = ci95(plan, Decimal("0.25"), "n", max_epsilon_per_query=Decimal("0.25"))
    with pytest.raises(AccuracyUnreachable) as info:
        choose_epsilon(plan, make_spec(), tier, 5, {"n": 1.0, "years": 1e9})
    assert (
        f"'n': best ci95 {best:.6g} at the tier's max_epsilon_per_query 0.25" in info.value.detail
    )
    assert "'years'" not in info.value.detail  # met at the cap: not named
    assert info.value.status == 422


def test_a_smaller_target_never_costs_less() -> None:
    plan = make_plan(COUNT)
    costs = [
        choose_epsilon(plan, make_spec(), make_tier(), 5, {"n": t}).epsilon
        for t in (80.0, 40.0, 20.0, 10.0)
    ]
    assert costs == sorted(costs) and len(set(costs)) == 4


def test_untargetable_columns_are_refused_with_every_problem() -> None:
    plan = make_plan(COUNT, AVG, MEDIAN)
    with pytest.raises(BadRequest) as info:
        check_targets(plan, {"mean": 1.0, "mid": 1.0, "region": 1.0, "n": 1.0})
    assert len(info.value.problems) == 3
    assert "'region', which is not an aggregate column of the query" in info.value.detail
    assert "(its aggregate columns: n, mean, mid)" in info.value.detail
    check_targets(plan, {"n": 1.0})  # a count is targetable


def test_the_choice_is_deterministic() -> None:
    """Same plan, spec, tier and targets: the same epsilon, however often it is asked (so a
    repeat of an accuracy request is a cached release; that the search reads no data is
    tested over HTTP with the source file removed)."""
    plan = make_plan(COUNT, FLOAT_SUM)
    first = choose_epsilon(plan, make_spec(), make_tier(), 5, {"n": 30.0, "spend": 3e6})
    for _ in range(3):
        again = choose_epsilon(plan, make_spec(), make_tier(), 5, {"n": 30.0, "spend": 3e6})
        assert again == first

"""Partition selection never releases a lone key more often than the delta it charges.

OpenDP's Laplace threshold measurement keeps a key at noisy count ``>= T`` but its privacy map
sums the noise tail strictly above ``T - linf`` (opendp/opendp#2922), under-stating delta by a
factor ``e^(1/scale)``. The gateway charges the delta of the tail the release really has
(``calibrate.release_delta``). Checked two ways: against the exact discrete-Laplace tail in
50-digit Decimal arithmetic, and by measuring how often the real mechanism (the one
``release`` invokes) releases a key held by one unit alone (its neighbour lacks the key, so
this frequency is the delta actually spent), with an exact binomial confidence bound.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest

from enclave.dp.calibrate import release_delta, threshold_builder, threshold_for_delta
from enclave.dp.mechanisms import PricedAggregate, enable_dp, price_plan
from enclave.query.plan import Aggregate, GroupColumn, Plan
from tests.dp.test_mechanisms import make_spec, make_tier

DRAWS = 100_000  # lone keys per run, each with its own noise
FAIL_LEVEL = 1e-7  # chance that a correct mechanism fails the test


def exact_delta(scale: float, k: int, threshold: int) -> Decimal:
    """``1 - (1 - P[Z >= threshold - k])^k`` for discrete Laplace ``Z`` of ``scale``.

    ``P[Z = z] = (1 - a) / (1 + a) * a^|z|`` with ``a = e^(-1/scale)``, so for ``m >= 1``
    ``P[Z >= m] = a^m / (1 + a)``.
    """
    with localcontext() as ctx:
        ctx.prec = 50
        a = (Decimal(-1) / Decimal(scale)).exp()
        tail = a ** (threshold - k) / (1 + a)
        return 1 - (1 - tail) ** k


def binomial_lower_bound(successes: int, n: int, level: float) -> float:
    """Exact one-sided (Clopper-Pearson) lower bound: the p at which P[X >= successes] = level."""
    if successes == 0:
        return 0.0

    def upper_tail(p: float) -> float:
        logs = [
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(successes)
        ]  # fmt: skip
        top = max(logs)
        below = math.exp(top) * sum(math.exp(v - top) for v in logs)
        return 1.0 - below

    low, high = 0.0, successes / n
    for _ in range(100):
        mid = (low + high) / 2
        if upper_tail(mid) < level:
            low = mid
        else:
            high = mid
    return low


def lone_key_partition(k: int, epsilon: str, budget_delta: str) -> PricedAggregate:
    spec = make_spec(k)
    tier = make_tier(allow_undeclared_keys=True, budget_delta=Decimal(budget_delta))
    plan = Plan(
        "visits", (GroupColumn("code", "code"), Aggregate("count", "n")), group_by=("code",)
    )
    priced = price_plan(plan, spec, tier, Decimal(epsilon), None)
    return next(p for p in priced.aggregates if p.part == "partition")


@pytest.mark.parametrize(
    ("scale", "k", "threshold"),
    [(1.0, 1, 6), (2.0, 1, 11), (2.0, 3, 11), (1.5, 2, 8), (3.0, 1, 31), (10.0, 5, 120)],
)
def test_charged_delta_is_the_exact_tail_of_releasing_at_the_threshold(
    scale: float, k: int, threshold: int
) -> None:
    enable_dp()
    d_in = (k, k, k)
    exact = exact_delta(scale, k, threshold)
    charged = Decimal(release_delta(scale, d_in, threshold))
    assert charged >= exact  # never below the true delta (OpenDP rounds its tail upward)
    assert charged <= exact * (1 + Decimal("1e-9"))  # and no looser than rounding
    # OpenDP's own map for the measurement that releases at >= threshold under-states it
    assert Decimal(threshold_builder(threshold)(scale).map(d_in)[1]) < exact


@pytest.mark.parametrize(("k", "epsilon", "budget_delta"), [(1, "1.0", "0.1"), (3, "2.0", "1e-5")])
def test_priced_threshold_is_the_smallest_whose_exact_delta_fits(
    k: int, epsilon: str, budget_delta: str
) -> None:
    part = lone_key_partition(k, epsilon, budget_delta)
    target = Decimal(budget_delta) / 10
    assert part.threshold is not None and part.threshold > k
    exact = exact_delta(part.scale, k, part.threshold)
    assert exact <= Decimal(part.delta) <= target  # charged: exact tail (rounded up), fits
    assert exact_delta(part.scale, k, part.threshold - 1) > target  # one lower would not fit
    assert part.threshold == threshold_for_delta(part.scale, (k, k, k), float(target))
    assert part.measurement.map((k, k, k)) == (part.epsilon, part.delta)


def test_a_lone_key_is_released_no_more_often_than_the_charged_delta() -> None:
    """``max_rows_per_unit: 1``, charged delta 0.01: a unit's own key, many real draws."""
    part = lone_key_partition(1, "1.0", "0.1")
    assert part.delta <= 0.01
    released = 0
    for _ in range(DRAWS // 50_000):
        kept, noisy = part.mechanism(np.ones(50_000, dtype=np.int64))
        assert (noisy >= (part.threshold or 0)).all()
        released += len(kept)
    low = binomial_lower_bound(released, DRAWS, FAIL_LEVEL)
    assert low <= part.delta, (released, low, part.delta)
    # two-sided: the rate is the exact tail (the noise is OpenDP's discrete Laplace at the
    # priced scale), not merely below it
    high = 1 - binomial_lower_bound(DRAWS - released, DRAWS, FAIL_LEVEL)
    assert high >= float(exact_delta(part.scale, 1, part.threshold or 0))


def test_vector_release_has_the_threshold_measurement_s_distribution() -> None:
    """Counts near the threshold: the vectorised release keeps a key as often as OpenDP's
    own ``make_laplace_threshold`` at the same threshold and scale (two-sample check)."""
    part = lone_key_partition(1, "1.0", "0.1")
    assert part.threshold is not None
    n = 40_000
    counts = np.full(n, part.threshold - 1, dtype=np.int64)  # released about 1/(1+a) of the time
    ours = len(part.mechanism(counts)[0])
    theirs = len(threshold_builder(part.threshold)(part.scale)({str(i): int(c) for i, c in
                                                              enumerate(counts)}))  # fmt: skip
    p = (ours + theirs) / (2 * n)
    z = abs(ours - theirs) / math.sqrt(2 * n * p * (1 - p))
    assert z < 5.3, (ours, theirs)  # two-sided, about 1e-7 to fail by chance

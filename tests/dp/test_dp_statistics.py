"""Statistical checks of the released noise: ci95 coverage, spread, bias.

400 releases x 5 groups = 2,000 draws per column. Tolerances are about 4.5 standard errors, so
a correct mechanism fails with probability ~1e-5, while a broken one fails for sure: with half
the scale the coverage of ci95 would be ~99.8%, with double the scale ~78%, with no noise 100%
(all outside [0.925, 0.975]); the spread check (+-10% of sqrt(2) * scale) catches the same.
"""

from __future__ import annotations

import math
import statistics
from decimal import Decimal
from typing import Any

import pytest

from enclave.dp.mechanisms import PricedPlan, price_plan
from enclave.dp.release import release
from enclave.query.plan import Aggregate, ExactGroups
from tests.dp.test_mechanisms import REGIONS, make_plan, make_spec, make_tier

RUNS = 400
COUNTS = (1000, 2000, 500, 50, 5000)
COSTS = (Decimal("1234567.25"), Decimal("2500000"), Decimal("10.5"), Decimal("0"), Decimal("9e6"))
AGES = (40_000, 81_000, 20_500, 2_000, 199_999)
PLAN = make_plan(
    Aggregate("count", "n"),
    Aggregate("count_distinct_units", "u"),
    Aggregate("sum", "total", "cost"),
    Aggregate("sum", "years", "age"),
    Aggregate("avg", "mean_cost", "cost"),
)
EXACT = ExactGroups(
    ("region",),
    tuple((r,) for r in REGIONS),
    {
        "_n": COUNTS,
        "a0_count": COUNTS,
        "a1_units": tuple(c // 3 for c in COUNTS),
        "a2_sum": COSTS,
        "a3_sum": AGES,
        "a4_sum": COSTS,
        "a4_count": COUNTS,
    },
)
TRUE: dict[str, tuple[float, ...]] = {
    "n": tuple(float(c) for c in COUNTS),
    "u": tuple(float(c // 3) for c in COUNTS),
    "total": tuple(float(c) for c in COSTS),
    "years": tuple(float(a) for a in AGES),
    "mean_cost": tuple(min(float(s) / c, 50000.0) for s, c in zip(COSTS, COUNTS, strict=True)),
}


@pytest.fixture(scope="module")
def draws() -> tuple[PricedPlan, dict[str, list[float]], list[float]]:
    """Errors (noisy - exact) per column over RUNS releases, and each release's AVG ci95."""
    spec, tier = make_spec(), make_tier()
    priced = price_plan(PLAN, spec, tier, Decimal("1.0"), len(REGIONS))
    errors: dict[str, list[float]] = {name: [] for name in TRUE}
    avg_ci: list[float] = []
    for _ in range(RUNS):
        out = release(PLAN, spec, tier, priced, EXACT)
        assert [r[0] for r in out.rows] == list(REGIONS)
        for j, name in enumerate(out.columns[1:], start=1):
            errors[name].extend(float(r[j]) - t for r, t in zip(out.rows, TRUE[name], strict=True))
        ci = out.accuracy["mean_cost"]["ci95"]
        assert ci is not None
        avg_ci.extend([ci] * len(out.rows))
    return priced, errors, avg_ci


def _scale(priced: PricedPlan, alias: str) -> Any:
    return next(a for a in priced.aggregates if a.alias == alias and a.part == "value").scale


@pytest.mark.parametrize("alias", ["n", "u", "total", "years"])
def test_ci95_covers_about_95_percent(draws: Any, alias: str) -> None:
    priced, errors, _ = draws
    ci = priced.accuracy[alias]["ci95"]
    errs = errors[alias]
    coverage = sum(abs(e) <= ci for e in errs) / len(errs)
    assert 0.925 <= coverage <= 0.975, coverage
    assert sum(abs(e) <= ci / 2 for e in errs) / len(errs) <= 0.85  # noise is really there


@pytest.mark.parametrize("alias", ["n", "u", "total", "years"])
def test_noise_is_present_unbiased_and_of_the_priced_spread(draws: Any, alias: str) -> None:
    priced, errors, _ = draws
    errs = errors[alias]
    assert any(e != 0 for e in errs)
    sd = math.sqrt(2) * _scale(priced, alias)  # Laplace(b) has standard deviation sqrt(2) b
    assert abs(statistics.fmean(errs)) <= 5 * sd / math.sqrt(len(errs))
    assert 0.9 <= statistics.pstdev(errs) / sd <= 1.1


def test_avg_interval_is_conservative(draws: Any) -> None:
    _, errors, avg_ci = draws
    errs = errors["mean_cost"]
    coverage = sum(abs(e) <= ci for e, ci in zip(errs, avg_ci, strict=True)) / len(errs)
    assert coverage >= 0.95, coverage
    assert any(e != 0 for e in errs)
    assert all(0 < ci <= 50000.0 for ci in avg_ci)


def test_count_outputs_are_integers(draws: Any) -> None:
    _, errors, _ = draws
    assert all(float(e).is_integer() for e in errors["n"] + errors["u"] + errors["years"])

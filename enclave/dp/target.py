"""Accuracy-first requests: the smallest epsilon on the ledger's grid that meets ci95 targets.

A request may give ``"accuracy": {"<output column>": {"ci95": <half-width>}}`` instead of an
epsilon. The ci95 of a COUNT, COUNT(DISTINCT unit) or SUM is the half-width of OpenDP's 95%
interval for the noise at the calibrated scale (``dp/mechanisms.py``): a function of the plan,
the declared bounds, ``k``, the tier and epsilon only, never of data. So is this search.

- Grid: epsilons are whole ledger units (1e-6), from the tier's ``min_epsilon_per_query`` to
  its ``max_epsilon_per_query``. The answer is exactly what pricing at that epsilon states,
  since it *is* that price (``price_plan``); the charge is that epsilon.
- Search: binary search over grid units, keeping ``low`` a unit that misses some target and
  ``high`` one that meets all; it ends when they are adjacent. So the chosen epsilon meets
  every target and the grid step below it does not (unless it is the tier's minimum). The
  ci95 falls as epsilon grows; the invariant holds whatever the rounding in between.
- Refused, for free and before any data is read: a target on a column that is not an
  aggregate output; on a quantile (its accuracy is a grid resolution and a rank error, no
  ci95) or an AVG (its interval is computed from the released values, so none can be promised
  before release); a non-positive or non-finite ci95 (``pipeline.QueryRequest``); and a target
  no epsilon within the cap meets (``AccuracyUnreachable``, 422, stating the best ci95 the cap
  achieves for each missed column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from enclave.dp.mechanisms import price_plan
from enclave.errors import AccuracyUnreachable, BadRequest
from enclave.ledger.grid import epsilon_down, epsilon_up, epsilon_value
from enclave.models import DatasetSpec, Tier
from enclave.query.plan import Plan

TARGETABLE = frozenset({"count", "count_distinct_units", "sum"})
UNTARGETABLE_REASON = {
    "quantile": "a quantile has no ci95 (its accuracy is its grid resolution and a rank "
    "error), so it cannot be given an accuracy target; give an epsilon instead",
    "avg": "an average's ci95 is computed from the released values (a ratio of two noisy "
    "values), so none can be promised before release; target the SUM and COUNT(*) instead, "
    "or give an epsilon",
}


@dataclass(frozen=True)
class Chosen:
    """The epsilon chosen for the targets, and the ci95 it achieves per targeted column."""

    epsilon: Decimal
    achieved: dict[str, float]

    def to_json(self, targets: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """The response's ``epsilon_chosen_for``: each target and the ci95 achieved."""
        return {
            a: {"ci95": float(t), "achieved_ci95": self.achieved[a]} for a, t in targets.items()
        }


def check_targets(plan: Plan, targets: Mapping[str, float]) -> None:
    """Refuse (400, every problem listed) targets that name no targetable output column."""
    kinds = {agg.alias: agg.kind for agg in plan.aggregates}
    problems: list[str] = []
    for alias in targets:
        kind = kinds.get(alias)
        if kind is None:
            names = ", ".join(kinds) or "(none)"
            problems.append(
                f"accuracy names '{alias}', which is not an aggregate column of the query "
                f"(its aggregate columns: {names})"
            )
        elif kind not in TARGETABLE:
            problems.append(f"accuracy for '{alias}': {UNTARGETABLE_REASON[kind]}")
    if problems:
        raise BadRequest("; ".join(problems), problems)


def choose_epsilon(
    plan: Plan, spec: DatasetSpec, tier: Tier, n_groups: int | None, targets: Mapping[str, float]
) -> Chosen:
    """The smallest grid epsilon in the tier's bounds whose ci95 meets every target."""
    check_targets(plan, targets)
    low = epsilon_up(tier.min_epsilon_per_query)
    high = epsilon_down(tier.max_epsilon_per_query)

    def achieved(units: int) -> dict[str, float]:
        accuracy = price_plan(plan, spec, tier, epsilon_value(units), n_groups).accuracy
        return {alias: _ci95(accuracy, alias) for alias in targets}

    def meets(units: int) -> bool:
        got = achieved(units)
        return all(got[a] <= t for a, t in targets.items())

    at_cap = achieved(high)
    missed = {a: v for a, v in at_cap.items() if v > targets[a]}
    if missed:
        best = "; ".join(
            f"'{a}': best ci95 {v:.6g} at the tier's max_epsilon_per_query "
            f"{tier.max_epsilon_per_query} (target {targets[a]:g})"
            for a, v in missed.items()
        )
        raise AccuracyUnreachable(f"no epsilon within the tier's cap meets the target: {best}")
    if meets(low):
        return Chosen(epsilon_value(low), achieved(low))
    while high - low > 1:  # low misses, high meets
        mid = (low + high) // 2
        if meets(mid):
            high = mid
        else:
            low = mid
    return Chosen(epsilon_value(high), achieved(high))


def _ci95(accuracy: Mapping[str, Mapping[str, float | None]], alias: str) -> float:
    value = accuracy[alias]["ci95"]
    if value is None:  # pragma: no cover - check_targets admits only columns with a ci95
        raise BadRequest(f"accuracy for '{alias}': no ci95 can be stated")
    return float(value)

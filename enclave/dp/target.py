"""Accuracy-first requests: the smallest epsilon on the ledger's grid that meets ci95 targets.

A request may give ``"accuracy": {"<output column>": {"ci95": <half-width>}}`` instead of an
epsilon. The ci95 of a COUNT, COUNT(DISTINCT unit) or SUM is the half-width of OpenDP's 95%
interval for the noise at the calibrated scale (``dp/mechanisms.py``): a function of the plan,
the declared bounds, ``k``, the tier and epsilon only, never of data. So is this search.

- Grid: epsilons are whole ledger units (1e-6), from the tier's ``min_epsilon_per_query`` to
  its ``max_epsilon_per_query``. The ci95 at an epsilon is what pricing at that epsilon
  states (``mechanisms.stated_ci95``: the same fit of the share as ``price_plan``, cached
  with it), so the promise is the price; the charge is that epsilon.
- Search: the cap first (a target it misses is refused), then a few secant steps from it
  guess where the answer lies (``_guess``; a ci95 is about inversely proportional to
  epsilon), and ``smallest_meeting`` gallops from the guess to a unit that meets next to one
  that misses, bisecting if the guess was far. So the chosen epsilon meets every target and
  the grid step below it does not (unless it is the tier's minimum), whatever the rounding
  in between; as the ci95 falls as epsilon grows, it is the unit a bisection of the whole
  range finds (``tests/dp/test_target_search.py`` checks both against that bisection).
- Cost: each epsilon tried fits the plan's share (calibrations and OpenDP's composition) but
  builds no release object, and a guess is usually within a unit or two: about five fits per
  search instead of some 25 whole prices (at the parser's largest plan, 64 aggregates of
  which 10 quantiles, about 60 ms of CPU instead of 1.4 s; ``bench/accuracy_search.py``).
  The query at the chosen epsilon then reuses the fit. The search runs in a thread
  (``pipeline._admit``), as several prices are too dear for the event loop.
- Refused, for free and before any data is read: a target on a column that is not an
  aggregate output; on a quantile (its accuracy is a grid resolution and a rank error, no
  ci95) or an AVG (its interval is computed from the released values, so none can be promised
  before release); a non-positive or non-finite ci95 (``pipeline.QueryRequest``); and a target
  no epsilon within the cap meets (``AccuracyUnreachable``, 422, stating the best ci95 the cap
  achieves for each missed column).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from enclave.dp.mechanisms import stated_ci95
from enclave.errors import AccuracyUnreachable, BadRequest
from enclave.ledger.grid import epsilon_down, epsilon_up, epsilon_value
from enclave.models import DatasetSpec, Tier
from enclave.query.plan import Plan

GUESS_STEPS = 3  # secant steps of ``_guess``: each fits the plan at one epsilon
GALLOP = (1, 2, 4, 8, 16, 32)  # units ``smallest_meeting`` steps from its guess, in turn
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
    tried: dict[int, dict[str, float]] = {}

    def achieved(units: int) -> dict[str, float]:
        if units not in tried:
            stated = stated_ci95(plan, spec, tier, epsilon_value(units), n_groups)
            tried[units] = {alias: _ci95(stated, alias) for alias in targets}
        return tried[units]

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
    units = smallest_meeting(meets, low, high, _guess(achieved, targets, low, high))
    return Chosen(epsilon_value(units), achieved(units))


def _guess(
    achieved: Callable[[int], dict[str, float]], targets: Mapping[str, float], low: int, high: int
) -> int:
    """Where ``smallest_meeting`` looks first (the answer never rests on it): secant steps
    from the cap, on the line through the last two units tried in log-log space (a ci95 is
    about a straight line of slope -1 in epsilon there), to where every target would be met.
    """
    before, at = 0, high
    for _ in range(GUESS_STEPS):
        aim = max(_aim(achieved, before, at, alias, t) for alias, t in targets.items())
        nxt = min(max(math.ceil(math.exp(min(aim, math.log(high)))), low), high)
        if nxt == at:
            break
        before, at = at, nxt
    return at


def _aim(
    achieved: Callable[[int], dict[str, float]], before: int, at: int, alias: str, target: float
) -> float:
    """The log of the units where ``alias`` would have a ci95 of ``target`` (-inf: no clue)."""
    got = achieved(at)[alias]
    if not 0.0 < got < math.inf:
        return -math.inf
    slope = -1.0
    prev = achieved(before)[alias] if before else 0.0
    if 0.0 < prev < math.inf:
        fitted = math.log(prev / got) / math.log(before / at)
        slope = fitted if -4.0 < fitted < -0.25 else slope
    ratio = target / got
    return math.inf if ratio == 0.0 else math.log(at) + math.log(ratio) / slope


def smallest_meeting(meets: Callable[[int], bool], low: int, high: int, guess: int) -> int:
    """A unit in ``[low, high]`` that meets whose unit below misses (or is ``low``), given that
    ``high`` meets. As ``meets`` holds from some unit on, that is the smallest unit that meets.

    From ``guess`` it gallops (``GALLOP``: 1, 2, 4, ... units) toward the answer until a unit
    on the other side is found, then bisects what is left between a unit that misses and one
    that meets. A guess off by at most one unit costs two calls of ``meets``; a useless one
    at most ``len(GALLOP) + 1`` more than bisecting the whole range.
    """
    below, above = low - 1, high  # ``above`` meets; ``below`` misses or lies below the range
    at = min(max(guess, low), high)
    found = meets(at)  # True: the answer is ``at`` or below it; False: above it
    if found:
        above = at
    else:
        below = at
    for step in GALLOP:
        if above - below <= 1:
            break
        probe = max(below + 1, above - step) if found else min(above - 1, below + step)
        ok = meets(probe)
        if ok:
            above = probe
        else:
            below = probe
        if ok != found:
            break
    while above - below > 1:
        mid = (below + above) // 2
        if meets(mid):
            above = mid
        else:
            below = mid
    return above


def _ci95(stated: Mapping[str, float | None], alias: str) -> float:
    value = stated[alias]
    if value is None:  # pragma: no cover - check_targets admits only columns with a ci95
        raise BadRequest(f"accuracy for '{alias}': no ci95 can be stated")
    return float(value)

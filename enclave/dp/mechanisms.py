"""Pricing a plan: one OpenDP measurement per aggregate, built before any data is read.

Neighbouring datasets differ by one privacy unit, i.e. by at most ``k = max_rows_per_unit``
rows (truncation happens before any query). Sensitivities come from ``k`` and declared bounds
only, never from data (opendp#2945: a grouped sum with ``Margin`` under-reports epsilon):

==========================  =================  ==============================================
aggregate                   input (per group)  l1 sensitivity of the vector over groups
==========================  =================  ==============================================
COUNT(*)                    i64 count          ``k`` (a unit adds at most k rows in all)
COUNT(DISTINCT unit)        i64 count          ``min(k, G)`` (1 when ungrouped)
SUM(col)                    float / i64 sum    ``k * max(|L|, |U|)``; int bounds use i64;
                                               float bounds as stored (``stored_float``),
                                               rounded up
AVG(col)                    sum and COUNT(col) half the share each: sum as SUM, count as ``k``
MEDIAN / QUANTILE_CONT      clamped values     symmetric distance ``k`` per group
==========================  =================  ==============================================

The query's epsilon is split evenly over its aggregates (plus one hidden count or the
partition selection, below). Each scale is calibrated so that OpenDP's map at the sensitivity
is at most the share; the composition is then checked against the charged epsilon, in exact
Decimal arithmetic over OpenDP's float answers (``calibrate.UPWARD``: exact, never rounded
down). The charged cost is exactly the Decimal epsilon.

Quantile: OpenDP's map for ``make_private_quantile`` is linear in ``d_in`` (``map(d) = d *
map(1)``, asserted in ``tests/dp/test_mechanisms.py``), so a unit whose ``<= k`` rows fall in
several groups costs ``sum map(k_g) = map(sum k_g) <= map(k)``: the aggregate is charged
``map(k)`` once, whatever the number of groups.

Suppression (``tier.min_noisy_count > 0``): groups whose *noisy* count is below the minimum are
dropped (post-processing). The count is the plan's COUNT(*) if any, else an AVG's noisy
COUNT(col), else the partition selection's noisy counts, else one hidden noisy COUNT(*) added
as one more aggregate sharing the split (it costs its share; it is never released).

Undeclared keys (``n_groups is None``): groups come from the data through OpenDP's Laplace
threshold mechanism over the per-group row count ``_n`` (one more share of epsilon; d_in
``(l0, l1, linf) = (k, k, k)``). Per-query delta is ``tier.budget_delta / 10`` (ten such
queries per budget). OpenDP releases a key at noisy count ``>= T`` but its map counts only the
tail above ``T`` (opendp/opendp#2922), so the delta charged for releasing at ``>= T`` is OpenDP's
map at ``T - 1``, the exact discrete-Laplace tail ``1 - (1 - P[Z >= T - k])^k``; ``T`` is the
smallest integer whose delta fits (``calibrate.release_delta``). ``min(k, G)`` then uses
``G = tier.group_by_max_groups`` (the released cap).

Caching: pricing reads public parameters only (the plan, the spec, the tier, epsilon, the
declared group count), so a ``PricedPlan`` is kept in a bounded LRU keyed by
``(plan.normalized(), repr(spec), repr(tier), str(epsilon), n_groups)`` (``repr``: every field,
exactly as written, so a changed bound or tier field is a new key) and shared by every caller,
whatever their licence: it holds no data and no caller's state. Its OpenDP measurements sample
fresh noise each time they are invoked, and its ``accuracy`` is read-only. ``check_plan``
(every refusal pricing can raise) runs on each call, so a cached price never skips a refusal;
calibrations are cached in ``calibrate``. The composition check runs on each new fit.

Two stages, each cached under that key: the fit (``_fit``: every measurement calibrated at the
share whose composition fits the epsilon, which states each column's ci95), then the release
objects built on it once the share is final (``_with_release``: quantile scoring, partition
release; most of a large plan's price). ``stated_ci95`` reads the fit alone: the accuracy
search (``dp/target.py``) asks it at several epsilons, and the query at the one it chooses is
priced from the same fit, so the ci95 promised is the one priced.

Known limit: a float SUM's input is the exact DECIMAL sum rounded to a float, so two
neighbouring inputs can differ by the sensitivity plus one rounding step per group (relative
2^-53 of the sum); OpenDP's Laplace sampling itself is exact. Integer columns avoid this: their
sums use the i64 (discrete Laplace) mechanism.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from types import MappingProxyType
from typing import Any, Literal

import opendp.prelude as dp

from enclave.dp import calibrate as cal
from enclave.dp.accuracy import noise_accuracy, quantile_accuracy
from enclave.dp.calibrate import enable_dp
from enclave.dp.partition import threshold_release
from enclave.dp.quantile import quantile_release
from enclave.errors import BadRequest, EnclaveError, TierRefused, UnsupportedQuery
from enclave.models import ColumnSpec, DatasetSpec, Tier, stored_float
from enclave.query.plan import Aggregate, Plan
from enclave.query.stats import ROWS, aggregate_statistics, integer_bounds, quantile_candidates

__all__ = ["PricedAggregate", "PricedPlan", "check_plan", "enable_dp", "price_plan", "stated_ci95"]

Part = Literal["value", "avg_sum", "avg_count", "hidden_count", "partition"]
HIDDEN_ALIAS = ROWS.name  # the alias of the hidden count and of the partition selection
DELTA_SHARE_OF_BUDGET = Decimal(10)
SHARE_RETRIES = 6  # shrink steps of the share when OpenDP's upward rounding overshoots
PRICE_CACHE_SIZE = 256  # whole PricedPlans kept (LRU)


@dataclass(frozen=True)
class PricedAggregate:
    """One OpenDP measurement of the plan. ``epsilon`` is OpenDP's map at ``d_in``."""

    alias: str  # output alias; HIDDEN_ALIAS for the hidden count and partition selection
    kind: str  # an AggKind, or "partition"
    d_in: int | float  # sensitivity (l1 over groups; symmetric distance k for quantiles)
    scale: float
    epsilon: float
    ci95: float | None
    measurement: Any = field(compare=False, repr=False)
    part: Part = "value"
    stat: str = ""  # the ExactGroups stat the measurement reads
    integer: bool = True  # integer (discrete Laplace) input and output
    delta: float = 0.0
    threshold: int | None = None  # partition selection only: released at noisy count >= it
    space: str = field(default="", compare=False, repr=False)  # domain|metric|measure
    #: what ``release`` invokes, when it is not ``measurement`` itself (whose map is charged):
    #: quantiles score a histogram into OpenDP's noisy max (``dp/quantile.py``); partition
    #: selection releases with the threshold one above the charged one (``release_delta``),
    #: vectorised (``dp/partition.py``)
    release_with: Any = field(default=None, compare=False, repr=False)
    #: the calibrated family; a quantile's release is built from it (``_with_release``)
    builder: cal.Builder | None = field(default=None, compare=False, repr=False)

    @property
    def mechanism(self) -> Any:
        """The callable that releases this aggregate's noisy values."""
        return self.measurement if self.release_with is None else self.release_with

    def map_d_in(self) -> Any:
        """The argument OpenDP's privacy map takes for this measurement."""
        if self.part == "partition":
            k = int(self.d_in)
            return (k, k, k)
        return self.d_in


@dataclass(frozen=True)
class PricedPlan:
    epsilon: Decimal  # charged, exactly the query's epsilon
    delta: Decimal  # charged: 0, or tier.budget_delta / 10 with partition selection
    aggregates: tuple[PricedAggregate, ...]
    accuracy: Mapping[str, Mapping[str, float | None]]  # read-only: a PricedPlan is shared
    opendp_epsilon: float  # composition of OpenDP maps (<= epsilon, checked exactly)
    opendp_delta: float
    share: float  # epsilon share per aggregate
    n_groups: int | None  # None: undeclared keys, selected by the partition measurement
    min_noisy_count: int
    max_groups: int
    suppress_with: int | None  # index in ``aggregates`` of the counts used for suppression
    plan_key: str = ""  # ``plan.normalized()``: release() refuses a plan priced differently


def check_plan(
    plan: Plan, spec: DatasetSpec, tier: Tier, epsilon: Decimal, n_groups: int | None
) -> None:
    """Raise every refusal ``price_plan`` can raise for these inputs; builds nothing."""
    if not epsilon.is_finite() or epsilon <= 0:
        raise BadRequest("epsilon must be a positive number")
    aggs = plan.aggregates
    if not aggs:
        raise UnsupportedQuery("a query needs at least one aggregate")
    if len(set(plan.output_columns)) != len(plan.output_columns):
        raise UnsupportedQuery("output column names must be unique")
    if plan.group_by and n_groups is None:
        if not tier.allow_undeclared_keys:
            raise TierRefused("this tier does not allow grouping by undeclared keys")
        if tier.budget_delta / DELTA_SHARE_OF_BUDGET <= 0:
            raise TierRefused("grouping by undeclared keys needs a delta budget")
    for agg in aggs:
        if agg.kind in ("count", "count_distinct_units"):
            continue
        _numeric_column(spec, agg)
        if agg.kind == "quantile" and not 0.0 < (0.5 if agg.q is None else float(agg.q)) < 1.0:
            raise UnsupportedQuery("a quantile level must lie strictly between 0 and 1")


#: a plan with at most this many aggregates and no quantile prices in well under a
#: millisecond: on the event loop, where a thread hop would cost more (about 10% of distinct
#: small queries/s at 32 clients, measured); a dearer one is priced in a thread
CHEAP_AGGREGATES = 8


def cheap_to_price(plan: Plan) -> bool:
    """Whether pricing ``plan`` is cheap enough for the event loop (``CHEAP_AGGREGATES``)."""
    aggs = plan.aggregates
    return len(aggs) <= CHEAP_AGGREGATES and all(a.kind != "quantile" for a in aggs)


def price_plan(
    plan: Plan, spec: DatasetSpec, tier: Tier, epsilon: Decimal, n_groups: int | None
) -> PricedPlan:
    """Build and cost every measurement of ``plan``; touches no data. Cached (see above)."""
    return _priced(_request(plan, spec, tier, epsilon, n_groups))


def stated_ci95(
    plan: Plan, spec: DatasetSpec, tier: Tier, epsilon: Decimal, n_groups: int | None
) -> dict[str, float | None]:
    """The ``ci95`` that ``price_plan`` at ``epsilon`` states per aggregate column (``None``
    for an AVG or a quantile), from the same fit of the share, which both cache; only the
    release objects (quantile scoring, partition release) are not built. What the accuracy
    search (``dp/target.py``) asks at each epsilon it tries."""
    return _ci95_columns(plan.aggregates, _fitted(_request(plan, spec, tier, epsilon, n_groups)))


def _request(
    plan: Plan, spec: DatasetSpec, tier: Tier, epsilon: Decimal, n_groups: int | None
) -> _Request:
    enable_dp()
    check_plan(plan, spec, tier, epsilon, n_groups)
    key = (plan.normalized(), repr(spec), repr(tier), str(epsilon), n_groups)
    return _Request(key, plan, spec, tier, epsilon, n_groups)


@dataclass(frozen=True)
class _Request:
    """Arguments of one pricing; only ``key`` is hashed and compared (the LRU's key)."""

    key: tuple[str, str, str, str, int | None]
    plan: Plan = field(compare=False)
    spec: DatasetSpec = field(compare=False)
    tier: Tier = field(compare=False)
    epsilon: Decimal = field(compare=False)
    n_groups: int | None = field(compare=False)


@dataclass(frozen=True)
class _Fit:
    """Every measurement of a plan, calibrated at the share whose composition fits."""

    parts: tuple[PricedAggregate, ...]  # without release objects (``_with_release``)
    share: float
    opendp_epsilon: Decimal  # the composition of OpenDP's maps, <= the charged epsilon
    opendp_delta: Decimal
    delta: Decimal  # charged
    n_groups: int | None  # None: undeclared keys


@functools.lru_cache(maxsize=PRICE_CACHE_SIZE)
def _priced(req: _Request) -> PricedPlan:
    return _price(req, _fitted(req))


@functools.lru_cache(maxsize=PRICE_CACHE_SIZE)
def _fitted(req: _Request) -> _Fit:
    return _fit(req.plan, req.spec, req.tier, req.epsilon, req.n_groups)


def _fit(plan: Plan, spec: DatasetSpec, tier: Tier, epsilon: Decimal, n_groups: int | None) -> _Fit:
    aggs = plan.aggregates
    k = spec.max_rows_per_unit
    grouped = bool(plan.group_by)
    undeclared = grouped and n_groups is None
    groups = (tier.group_by_max_groups if undeclared else (n_groups or 1)) if grouped else 1

    has_count = any(a.kind == "count" for a in aggs)
    has_avg = any(a.kind == "avg" for a in aggs)
    hidden = tier.min_noisy_count > 0 and not (has_count or has_avg) and not undeclared
    parts = len(aggs) + (1 if hidden or undeclared else 0)
    share = cal.even_share(epsilon, parts)
    delta = tier.budget_delta / DELTA_SHARE_OF_BUDGET if undeclared else Decimal(0)
    # OpenDP rounds sums of privacy losses upward, so a composition of parts that each fit
    # their share exactly can exceed the total by a few ulps: shrink the share until it fits.
    # (The noise is then a hair larger than needed; the charge stays exactly ``epsilon``.)
    for attempt in range(SHARE_RETRIES):
        priced = _price_parts(aggs, spec, k, groups, share, hidden, undeclared, delta)
        total_eps, total_delta = _compose(priced)
        if total_eps <= epsilon and total_delta <= delta:
            break
        share *= 1.0 - 2.0 ** (-44 + 4 * attempt)
    else:
        raise EnclaveError("privacy accounting failed")  # pragma: no cover - guarded above
    n = None if undeclared else groups
    return _Fit(tuple(priced), share, total_eps, total_delta, delta, n)


def _price(req: _Request, fit: _Fit) -> PricedPlan:
    """The fit with its release objects, and the accuracy it states."""
    priced = [_with_release(p) for p in fit.parts]
    accuracy: dict[str, Mapping[str, float | None]] = {
        alias: {"ci95": ci95} for alias, ci95 in _ci95_columns(req.plan.aggregates, fit).items()
    }
    for p in priced:
        if p.part == "value" and p.kind == "quantile":
            accuracy[p.alias] = quantile_accuracy(p.release_with.candidates.tolist(), p.scale)
    tier = req.tier
    return PricedPlan(
        epsilon=req.epsilon,
        delta=fit.delta,
        aggregates=tuple(priced),
        accuracy=MappingProxyType({a: MappingProxyType(dict(v)) for a, v in accuracy.items()}),
        opendp_epsilon=float(fit.opendp_epsilon),
        opendp_delta=float(fit.opendp_delta),
        share=fit.share,
        n_groups=fit.n_groups,
        min_noisy_count=tier.min_noisy_count,
        max_groups=tier.group_by_max_groups,
        suppress_with=_suppression_source(priced) if tier.min_noisy_count > 0 else None,
        plan_key=req.plan.normalized(),
    )


def _ci95_columns(aggs: tuple[Aggregate, ...], fit: _Fit) -> dict[str, float | None]:
    """Each aggregate column's ``ci95`` (a COUNT's, COUNT(DISTINCT)'s or SUM's; else None)."""
    out: dict[str, float | None] = {a.alias: None for a in aggs}
    for p in fit.parts:
        if p.part == "value" and p.kind != "quantile":
            out[p.alias] = p.ci95
    return out


def _with_release(p: PricedAggregate) -> PricedAggregate:
    """``p`` with what releases it, once its scale is final: a quantile's histogram scoring
    (``dp/quantile.py``), the partition selection's vector release (``dp/partition.py``)."""
    release_with: Any
    if p.part == "value" and p.kind == "quantile":
        assert p.builder is not None  # noqa: S101 - _price_aggregate sets it
        b = p.builder
        release_with = quantile_release(b.candidates, b.alpha, p.scale, int(p.d_in))
    elif p.part == "partition":
        assert p.threshold is not None  # noqa: S101 - _price_partition sets it
        release_with = threshold_release(p.scale, p.threshold, int(p.d_in))
    else:
        return p
    return replace(p, release_with=release_with)


def _price_aggregate(
    i: int, agg: Aggregate, spec: DatasetSpec, k: int, groups: int, share: float
) -> list[PricedAggregate]:
    stats = [s.name for s in aggregate_statistics(i, agg)]  # query/stats.py: what it reads
    if agg.kind == "count":
        return [_price_count(agg.alias, "count", stats[0], k, share)]
    if agg.kind == "count_distinct_units":
        return [_price_count(agg.alias, agg.kind, stats[0], min(k, groups), share)]
    col = _numeric_column(spec, agg)
    if agg.kind == "sum":
        return [_price_sum(agg.alias, "sum", stats[0], col, k, share)]
    if agg.kind == "avg":
        half = share / 2
        total = _price_sum(agg.alias, "avg", stats[0], col, k, half, "avg_sum")
        count = _price_count(agg.alias, "avg", stats[1], k, half, "avg_count")
        return [total, count]
    if agg.kind == "quantile":
        q = 0.5 if agg.q is None else float(agg.q)  # in (0, 1): check_plan refused others
        cands = quantile_candidates(col)
        build = cal.quantile_builder(cands, q)
        meas, scale, eps = cal.calibrate(build, k, share)
        return [
            PricedAggregate(
                agg.alias, "quantile", k, scale, eps, None, meas, "value", stats[0], False,
                space=cal.space_of(build), builder=build,
            )
        ]  # fmt: skip
    raise UnsupportedQuery("unsupported aggregate")  # pragma: no cover - AggKind is closed


def _price_count(
    alias: str, kind: str, stat: str, sensitivity: int, share: float, part: Part = "value"
) -> PricedAggregate:
    build = cal.count_builder()
    meas, scale, eps = cal.calibrate(build, sensitivity, share)
    ci95 = noise_accuracy(scale, True, 0.05)
    return PricedAggregate(
        alias, kind, sensitivity, scale, eps, ci95, meas, part, stat, True,
        space=cal.space_of(build),
    )  # fmt: skip


def _price_sum(
    alias: str, kind: str, stat: str, col: ColumnSpec, k: int, share: float, part: Part = "value"
) -> PricedAggregate:
    assert col.bounds is not None  # noqa: S101 - _numeric_column checked it
    low, high = col.bounds
    integer = integer_bounds(col)
    d_in: int | float
    if integer:
        d_in, build = k * max(abs(int(low)), abs(int(high))), cal.count_builder()
    else:
        d_in, build = stored_sensitivity(k, float(low), float(high)), cal.float_builder()
    meas, scale, eps = cal.calibrate(build, d_in, share)
    ci = None if kind == "avg" else noise_accuracy(scale, integer, 0.05)
    return PricedAggregate(
        alias, kind, d_in, scale, eps, ci, meas, part, stat, integer, space=cal.space_of(build)
    )


def stored_sensitivity(k: int, low: float, high: float) -> float:
    """A float SUM's sensitivity from what the bounded table stores per row (``stored_float``
    of each bound, which can exceed the declared bound), times ``k``, rounded up to a float."""
    with localcontext(cal.UPWARD):
        exact = k * max(abs(stored_float(low)), abs(stored_float(high)))
    out = float(exact)
    while Decimal(out) < exact:
        out = math.nextafter(out, math.inf)
    return out


def _price_partition(k: int, share: float, delta: float) -> PricedAggregate:
    """Partition selection; charged exactly the delta of releasing at ``>=`` the threshold.

    ``measurement`` is OpenDP's threshold measurement one below the released threshold: its
    map is the true (epsilon, delta) of the release (``calibrate.release_delta``). The release
    itself is the same algorithm over a vector of counts (``dp/partition.py``).
    """
    d_in = (k, k, k)
    reference = cal.threshold_builder(k + 1)
    _, scale, _ = cal.calibrate(reference, d_in, share)
    threshold = cal.threshold_for_delta(scale, d_in, delta)
    charged = cal.threshold_builder(threshold - 1)
    meas = charged(scale)
    eps, got_delta = (float(v) for v in meas.map(d_in))
    if eps > share or got_delta > delta:
        raise EnclaveError("partition selection exceeds its share")  # pragma: no cover
    return PricedAggregate(
        HIDDEN_ALIAS, "partition", k, scale, eps, None, meas, "partition", ROWS.name, True,
        got_delta, threshold, space=cal.space_of(charged),
    )  # fmt: skip


def _price_parts(
    aggs: tuple[Aggregate, ...],
    spec: DatasetSpec,
    k: int,
    groups: int,
    share: float,
    hidden: bool,
    undeclared: bool,
    delta: Decimal,
) -> list[PricedAggregate]:
    priced: list[PricedAggregate] = []
    for i, agg in enumerate(aggs):
        priced.extend(_price_aggregate(i, agg, spec, k, groups, share))
    if hidden:
        priced.append(_price_count(HIDDEN_ALIAS, "count", ROWS.name, k, share, "hidden_count"))
    if undeclared:
        priced.append(_price_partition(k, share, cal.largest_float_at_most(delta)))
    return priced


def _compose(priced: list[PricedAggregate]) -> tuple[Decimal, Decimal]:
    """Total (epsilon, delta) of the plan, as exact Decimals of OpenDP's float answers.

    Measurements sharing input domain, metric, measure (OpenDP's own text, ``p.space``) and
    ``d_in`` are composed with ``dp.c.make_composition`` and that map is used; groups that
    cannot be composed (different domains or sensitivities) are added, which is basic
    composition for pure DP. A group of one is its own map at ``d_in``: the answer calibration
    already took from OpenDP (``p.epsilon``, ``p.delta``), not asked for again.
    """
    buckets: dict[tuple[str, str], list[PricedAggregate]] = defaultdict(list)
    for p in priced:
        buckets[(p.space, repr(p.map_d_in()))].append(p)
    epsilons: list[float] = []
    deltas: list[float] = []
    for members in buckets.values():
        d_in = members[0].map_d_in()
        if len(members) == 1:
            only = members[0]
            answer = (only.epsilon, only.delta) if only.part == "partition" else only.epsilon
        else:
            composed: Any = dp.c.make_composition([p.measurement for p in members])
            answer = composed.map(d_in)
        if isinstance(answer, tuple):
            epsilons.append(float(answer[0]))
            deltas.append(float(answer[1]))
        else:
            epsilons.append(float(answer))
    return cal.decimal_sum(epsilons), cal.decimal_sum(deltas)


def _suppression_source(priced: list[PricedAggregate]) -> int | None:
    order = (("count", "value"), ("avg", "avg_count"), ("partition", "partition"))
    for kind, part in order:
        for idx, p in enumerate(priced):
            if p.kind == kind and p.part == part:
                return idx
    for idx, p in enumerate(priced):
        if p.part == "hidden_count":
            return idx
    return None


def _numeric_column(spec: DatasetSpec, agg: Aggregate) -> ColumnSpec:
    col = spec.column(agg.column or "")
    if col is None or col.type not in ("int", "float") or col.bounds is None:
        raise UnsupportedQuery("this aggregate needs a numeric column with declared bounds")
    low, high = col.bounds
    if not (math.isfinite(float(low)) and math.isfinite(float(high)) and low <= high):
        raise UnsupportedQuery("the column's declared bounds are not usable")
    return col

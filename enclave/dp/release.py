"""Releasing a priced plan: exact group statistics in, noisy rows out.

No exact value reaches the output except through an OpenDP measurement priced in
``dp/mechanisms.py``; everything after the measurements (AVG as a ratio, clamping, group
suppression, partition capping, ORDER BY, LIMIT, the AVG interval) is post-processing of noisy
values and public metadata.

- Rows follow the plan's select order (group columns and aggregates as the user wrote them).
- Counts are Python ints (discrete Laplace); they are not clamped at 0, so they stay unbiased.
- AVG = ``noisy_sum / max(noisy_count, 1)``, clamped to the declared bounds.
- Suppression drops a group when its noisy count (see ``PricedPlan.suppress_with``) is below
  ``tier.min_noisy_count``; an ungrouped query is one group and is suppressed the same way.
- Undeclared keys: OpenDP's Laplace threshold (vectorised, ``dp/partition.py``) keeps a key
  if its noisy row count clears the threshold; at most ``tier.group_by_max_groups`` keys are
  kept, largest noisy counts first (ties by key order), then released in key order
  (``values.sort_key``). Counts go to OpenDP by position, never keyed by value, so no key is
  encoded and no key value can make the selection fail.
- Totality: once data is read nothing here raises on data. Exact integer inputs are clipped
  to the i64 domain of their measurement and float inputs to finite doubles (NaN as 0); a
  per-group, data-independent map that is 1-Lipschitz, so the sensitivity is unchanged. Noisy
  floats are clamped to finite doubles. Released cells are plain JSON (``values.json_value``)
  and ORDER BY uses ``values.sort_key``.
- Time: every per-group step is a vector operation; what remains in proportion to the groups
  is OpenDP's noise sampling (see ``bench/timing.py`` and docs/privacy.md).
- ``result_sha256`` = SHA-256 of ``{"columns": [...], "rows": [...]}`` as canonical JSON
  (sorted keys, no whitespace, UTF-8; dates as ISO strings): ``values.result_digest``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from enclave.dp.accuracy import avg_ci95
from enclave.dp.mechanisms import PricedAggregate, PricedPlan
from enclave.dp.partition import i64_array, to_i64
from enclave.dp.values import json_value, result_digest, row_sort_key, sort_key
from enclave.errors import EnclaveError
from enclave.models import DatasetSpec, Tier
from enclave.query.plan import Aggregate, ExactGroups, GroupColumn, Plan
from enclave.query.stats import ROWS

FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True)
class NoisyTable:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    accuracy: dict[str, dict[str, float | None]]
    suppressed_groups: int
    result_sha256: str


def release(
    plan: Plan, spec: DatasetSpec, tier: Tier, priced: PricedPlan, exact: ExactGroups
) -> NoisyTable:
    """Apply every priced measurement to ``exact`` and build the noisy table."""
    if tuple(exact.group_columns) != tuple(plan.group_by):
        raise EnclaveError("exact statistics do not match the plan")
    if priced.plan_key != plan.normalized():
        raise EnclaveError("the plan was priced differently")
    selected = _select_groups(spec, priced, exact)

    noisy: dict[tuple[str, str], list[Any]] = {}  # (alias, part) -> one value per group
    for p in priced.aggregates:
        if p.part != "partition":
            noisy[(p.alias, p.part)] = _measure(p, exact, selected.indices)
    if selected.partition_counts is not None:
        noisy[(ROWS.name, "partition")] = selected.partition_counts

    keep = list(range(len(selected.indices)))
    if priced.suppress_with is not None:
        src = priced.aggregates[priced.suppress_with]
        counts = noisy[(src.alias, src.part)]
        keep = [g for g in keep if counts[g] >= priced.min_noisy_count]
    suppressed = len(selected.indices) - len(keep)

    bounds = {a.alias: _bounds(spec, a) for a in plan.aggregates}
    values: dict[str, list[Any]] = {}
    for agg in plan.aggregates:
        if agg.kind == "avg":
            low, high = bounds[agg.alias]
            sums = noisy[(agg.alias, "avg_sum")]
            cnts = noisy[(agg.alias, "avg_count")]
            values[agg.alias] = [
                min(max(float(s) / max(c, 1), low), high) for s, c in zip(sums, cnts, strict=True)
            ]
        else:
            values[agg.alias] = noisy[(agg.alias, "value")]

    accuracy = {alias: dict(entry) for alias, entry in priced.accuracy.items()}
    for agg in plan.aggregates:
        if agg.kind == "avg":
            accuracy[agg.alias] = {"ci95": _avg_interval(agg, priced, noisy, keep, bounds)}

    key_pos = {name: j for j, name in enumerate(exact.group_columns)}
    rows: list[tuple[Any, ...]] = []
    for g in keep:
        key = exact.keys[selected.indices[g]]
        row: list[Any] = []
        for item in plan.select:
            if isinstance(item, GroupColumn):
                row.append(json_value(key[key_pos[item.column]]))
            else:
                row.append(json_value(values[item.alias][g]))
        rows.append(tuple(row))
    rows = _order_and_limit(plan, rows)
    columns = plan.output_columns
    return NoisyTable(columns, tuple(rows), accuracy, suppressed, result_digest(columns, rows))


@dataclass(frozen=True)
class _Selection:
    indices: list[int]  # positions in exact.keys of the released groups, in release order
    partition_counts: list[int] | None  # noisy counts from partition selection, if used


def _select_groups(spec: DatasetSpec, priced: PricedPlan, exact: ExactGroups) -> _Selection:
    """The groups to release: the declared set, or a DP partition selection over the data.

    Declared keys are released as they are, so they are checked to be distinct, as many as
    priced, and made of declared category values: nothing from the data can pass as a key.
    """
    if priced.n_groups is not None:
        if len(exact.keys) != priced.n_groups or len(set(exact.keys)) != len(exact.keys):
            raise EnclaveError("exact statistics do not cover the declared groups")
        for j, name in enumerate(exact.group_columns):
            col = spec.column(name)
            allowed = set(col.values) if col is not None and col.values is not None else None
            if allowed is None or any(key[j] not in allowed for key in exact.keys):
                raise EnclaveError("a group key is not a declared value")
        return _Selection(list(range(len(exact.keys))), None)
    part = next(p for p in priced.aggregates if p.part == "partition")
    # by position: no key value is encoded, so none can fail; one vector through OpenDP
    kept, noisy = part.mechanism(i64_array(_stat(exact, ROWS.name)))
    # Below, only the keys OpenDP released are touched (their number is a DP output).
    # Cap: largest noisy counts first, ties by key order (then position, for keys that
    # sort equal); release order: key order.
    chosen = sorted(
        zip(kept.tolist(), noisy.tolist(), strict=True),
        key=lambda c: (-c[1], row_sort_key(exact.keys[c[0]]), c[0]),
    )[: priced.max_groups]
    chosen.sort(key=lambda c: (row_sort_key(exact.keys[c[0]]), c[0]))
    return _Selection([i for i, _ in chosen], [n for _, n in chosen])


def _measure(p: PricedAggregate, exact: ExactGroups, indices: list[int]) -> list[Any]:
    column = _stat(exact, p.stat)
    if p.kind == "quantile":
        return [float(p.mechanism(column[i])) for i in indices]
    if p.integer:
        return [int(v) for v in p.mechanism([to_i64(column[i]) for i in indices])]
    noisy = p.mechanism([to_finite(column[i]) for i in indices])
    return [min(max(float(v), -FLOAT_MAX), FLOAT_MAX) for v in noisy]


def to_finite(value: Any) -> float:
    """An exact float statistic as a finite double (NULL, NaN, non-numbers: 0; clipped)."""
    try:
        x = float(value or 0)
    except (TypeError, ValueError, ArithmeticError):
        return 0.0
    if x != x:  # NaN
        return 0.0
    return min(max(x, -FLOAT_MAX), FLOAT_MAX)


def _avg_interval(
    agg: Aggregate,
    priced: PricedPlan,
    noisy: dict[tuple[str, str], list[Any]],
    keep: list[int],
    bounds: dict[str, tuple[float, float]],
) -> float | None:
    if not keep:
        return None
    sum_p = next(p for p in priced.aggregates if p.alias == agg.alias and p.part == "avg_sum")
    cnt_p = next(p for p in priced.aggregates if p.alias == agg.alias and p.part == "avg_count")
    low, high = bounds[agg.alias]
    widths = [
        avg_ci95(
            noisy[(agg.alias, "avg_sum")][g],
            noisy[(agg.alias, "avg_count")][g],
            sum_p.scale,
            sum_p.integer,
            cnt_p.scale,
            low,
            high,
        )
        for g in keep
    ]
    return max(widths)


def _order_and_limit(plan: Plan, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """ORDER BY (stable, NULLs last in either direction) then LIMIT, on the noisy rows."""
    pos = {name: j for j, name in enumerate(plan.output_columns)}
    out = list(rows)
    for item in reversed(plan.order_by):
        if item.name not in pos:
            raise EnclaveError("ORDER BY names an unknown output column")
        j = pos[item.name]
        present = [r for r in out if r[j] is not None]
        missing = [r for r in out if r[j] is None]
        present.sort(key=lambda r: sort_key(r[j]), reverse=item.descending)
        out = present + missing
    if plan.limit is not None:
        out = out[: max(plan.limit, 0)]
    return out


def _bounds(spec: DatasetSpec, agg: Aggregate) -> tuple[float, float]:
    col = spec.column(agg.column or "") if agg.column else None
    if col is None or col.bounds is None:
        return (float("-inf"), float("inf"))
    return (float(col.bounds[0]), float(col.bounds[1]))


def _stat(exact: ExactGroups, name: str) -> tuple[Any, ...]:
    if name not in exact.stats:
        raise EnclaveError("exact statistics are missing a column the plan needs")
    return exact.stats[name]

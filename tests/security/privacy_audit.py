"""Helpers for the empirical privacy tests: neighbouring datasets through the real path, and a
DP-Sniper-style loss estimate with Clopper-Pearson bounds.

``Neighbours.build`` writes D and D' = D plus one unit (``k`` rows at or beyond the bounds) as
Parquet files, bounds each with the real engine (``Warehouse.prepare``: truncation and
clamping), compiles the plan over the bounded table, runs it in DuckDB and assembles the exact
statistics. Samples then come from the priced OpenDP measurements on those exact statistics
(``measured``: many per call), and, for a few hundred, from the whole path again (engine run,
assemble, ``dp.release.release``).

The estimate (after Bichsel et al., "DP-Sniper", 2021): outputs are mapped to one number (a
projection on the difference of the two sides' means, learned on the first half); on the first
half, the event ``score >= t`` or ``score <= t`` with the largest lower-bounded ratio is chosen;
on the second half, P[event | D] and P[event | D'] are estimated with exact Clopper-Pearson
intervals and the loss lower bound ``ln(p_low / p'_high)`` is reported (both directions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from enclave.config import EngineConfig
from enclave.dp.mechanisms import PricedPlan, price_plan
from enclave.dp.partition import to_i64
from enclave.dp.release import release, to_finite
from enclave.engine.warehouse import Warehouse
from enclave.models import DatasetSpec, Tier
from enclave.pipeline import declared_group_count
from enclave.query.compile import assemble, compile_plan
from enclave.query.parse import parse_query
from enclave.query.plan import CompiledQuery, ExactGroups, Plan

CONFIDENCE = 0.9999  # per estimate: a false alarm in CI is then about 1 in 10,000
Row = tuple[Any, ...]


def write_parquet(path: Path, columns: Sequence[tuple[str, str]], rows: Sequence[Row]) -> None:
    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64()}
    arrays = [
        pa.array([r[i] for r in rows], type=types[kind]) for i, (_, kind) in enumerate(columns)
    ]
    pq.write_table(pa.table(arrays, names=[name for name, _ in columns]), str(path))


@dataclass
class Side:
    """One dataset of the pair, bounded and queried once by the real engine."""

    spec: DatasetSpec
    compiled: CompiledQuery
    exact: ExactGroups


@dataclass
class Neighbours:
    plan: Plan
    tier: Tier
    priced: PricedPlan
    d: Side
    d_prime: Side
    warehouse: Warehouse

    @classmethod
    async def build(
        cls,
        tmp: Path,
        spec: DatasetSpec,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Row],
        unit_rows: Sequence[Row],
        sql: str,
        tier: Tier,
        epsilon: Decimal,
    ) -> Neighbours:
        warehouse = Warehouse(EngineConfig(state_dir=tmp / "state", memory_limit="256MB",
                                           threads=1, workers=1))  # fmt: skip
        await warehouse.open()
        plan = parse_query(sql, spec)
        priced = price_plan(plan, spec, tier, epsilon, declared_group_count(plan, spec))
        sides = []
        for name, data in (("d", rows), ("d_prime", [*rows, *unit_rows])):
            path = tmp / f"{name}.parquet"
            write_parquet(path, columns, data)
            side_spec = DatasetSpec(**{**spec.__dict__, "source": str(path),
                                       "source_path": str(path), "name": f"t_{name}"})  # fmt: skip
            table = await warehouse.prepare(side_spec)
            compiled = compile_plan(plan, side_spec, table)
            exact = assemble(compiled, await warehouse.run(compiled, 30))
            sides.append(Side(side_spec, compiled, exact))
        return cls(plan, tier, priced, sides[0], sides[1], warehouse)

    def measured(self, side: Side, n: int) -> np.ndarray:
        """``n`` independent outputs of every priced measurement on ``side``'s exact
        statistics, one row per sample (before post-processing, which cannot add loss).

        A vector mechanism noises each coordinate independently, so the exact vector repeated
        ``n`` times gives ``n`` samples in one OpenDP call; a quantile is one call per sample.
        """
        parts = []
        groups = len(side.exact.keys)
        for p in self.priced.aggregates:
            column = side.exact.stats[p.stat]
            if p.kind == "quantile":  # what release() invokes: histogram scores, noisy max
                out = [[float(p.mechanism(column[g])) for g in range(groups)] for _ in range(n)]
                parts.append(np.asarray(out, dtype=np.float64))
                continue
            exact = [(to_i64 if p.integer else to_finite)(column[g]) for g in range(groups)]
            noisy = p.mechanism(exact * n)
            parts.append(np.asarray(noisy, dtype=np.float64).reshape(n, groups))
        return np.hstack(parts)

    async def released_full(self, side: Side) -> list[float]:
        """One release through the whole path: engine run, assemble, release."""
        rows = await self.warehouse.run(side.compiled, 30)
        exact = assemble(side.compiled, rows)
        table = release(self.plan, side.spec, self.tier, self.priced, exact)
        return numbers(table.rows)


def numbers(rows: Sequence[Row]) -> list[float]:
    return [float(v) for row in rows for v in row if isinstance(v, int | float)]


def clopper_pearson(hits: int, n: int, alpha: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided 1 - alpha interval of a binomial proportion:
    bisection on the binomial tails, computed in log space."""
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1)))))
    ks = np.arange(n + 1)
    log_choose = log_fact[n] - log_fact[ks] - log_fact[n - ks]

    def tail_at_least(p: float) -> float:  # P[X >= hits]
        logs = log_choose[hits:] + ks[hits:] * math.log(p) + (n - ks[hits:]) * math.log1p(-p)
        return float(np.exp(logs - logs.max()).sum() * math.exp(logs.max()))

    def tail_at_most(p: float) -> float:  # P[X <= hits]
        k = ks[: hits + 1]
        logs = log_choose[: hits + 1] + k * math.log(p) + (n - k) * math.log1p(-p)
        return float(np.exp(logs - logs.max()).sum() * math.exp(logs.max()))

    def solve(f: Callable[[float], float], increasing: bool) -> float:
        lo, hi = 1e-300, 1 - 1e-16
        for _ in range(80):
            mid = (lo + hi) / 2
            if (f(mid) < alpha / 2) == increasing:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if hits == 0 else solve(tail_at_least, increasing=True)
    high = 1.0 if hits == n else solve(tail_at_most, increasing=False)
    return low, high


def wilson(hits: int, n: int, z: float = 3.9) -> tuple[float, float]:
    """A cheap Wilson interval at about the final confidence, to choose the event on the
    first half (so the choice favours events frequent enough to be bounded well)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


@dataclass(frozen=True)
class Estimate:
    lower: float  # lower confidence bound of the privacy loss of the chosen event
    point: float  # its point estimate
    event: str


def _projection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = b.mean(axis=0) - a.mean(axis=0)
    return w if np.any(w) else np.ones(a.shape[1])


def _ratio_bound(
    hits_num: int, hits_den: int, n: int, interval: Callable[[int, int], tuple[float, float]]
) -> tuple[float, float]:
    if hits_num == 0:
        return -math.inf, -math.inf
    num_low, _ = interval(hits_num, n)
    _, den_high = interval(hits_den, n)
    point = math.log(hits_num / max(hits_den, 0.5))
    return math.log(max(num_low, 1e-300) / den_high), point


def sniper(d: np.ndarray, d_prime: np.ndarray) -> Estimate:
    """Choose the event on the even samples, bound its loss on the odd ones."""
    first_d, second_d, first_dp, second_dp = d[0::2], d[1::2], d_prime[0::2], d_prime[1::2]
    w = _projection(first_d, first_dp)
    s1, t1 = np.sort(first_d @ w), np.sort(first_dp @ w)
    pooled = np.unique(np.concatenate((s1, t1)))
    thresholds = pooled[:: max(1, len(pooled) // 400)]
    best: tuple[float, float, bool, bool] = (-math.inf, 0.0, True, True)
    for t in thresholds:
        for upper in (True, False):
            a, b = _count(s1, t, upper), _count(t1, t, upper)
            for num, den, d_over in ((a, b, True), (b, a, False)):
                low, _ = _ratio_bound(num, den, len(s1), wilson)
                if low > best[0]:
                    best = (low, float(t), upper, d_over)
    _, t, upper, d_over = best
    a, b = _count(np.sort(second_d @ w), t, upper), _count(np.sort(second_dp @ w), t, upper)
    num, den = (a, b) if d_over else (b, a)
    low, point = _ratio_bound(
        num, den, len(second_d), lambda h, n: clopper_pearson(h, n, 1 - CONFIDENCE)
    )
    event = f"score {'>=' if upper else '<='} {t:.6g}, P[D{'' if d_over else chr(39)}] over"
    return Estimate(low, point, event)


def _count(sorted_scores: np.ndarray, t: float, upper: bool) -> int:
    side = "left" if upper else "right"
    at = int(np.searchsorted(sorted_scores, t, side=side))
    return len(sorted_scores) - at if upper else at

"""The exact statistics a plan asks of the engine: the query/dp boundary, declared once.

``query/compile.py`` writes one result column per ``Statistic`` (after the group columns);
``dp/mechanisms.py`` prices one measurement per statistic it reads, by ``name``;
``dp/release.py`` reads them back from ``ExactGroups``. ``i`` is the aggregate's index in
``plan.aggregates``:

==================  ========  ========================================================
name                kind      what the engine computes per group
==================  ========  ========================================================
``a{i}_count``      rows      COUNT(*) (aggregate ``count``)
``a{i}_units``      units     COUNT(DISTINCT privacy unit)
``a{i}_sum``        sum       exact sum of the clamped column (``sum``, and ``avg``'s sum)
``a{i}_count``      nonnull   COUNT(col), the non-NULL values an ``avg`` is over
``a{i}_values``     values    histogram ``{value: count}`` of clamped values (quantiles)
``_n``              rows      COUNT(*), always present; read only inside DP mechanisms
                              (the hidden suppression count, partition selection)
==================  ========  ========================================================

The quantile candidates are here too: the compiled SQL maps values onto their gaps and the
mechanism scores them, so both must use exactly this grid, a function of declared bounds only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from enclave.models import ColumnSpec
from enclave.query.plan import Aggregate, Plan

StatKind = Literal["rows", "units", "sum", "nonnull", "values"]

# Number of quantile candidates spanning the declared bounds when the column is not a small
# integer range: 512 keeps the output resolution at (U - L) / 511, well under the noise of
# the exponential mechanism for typical epsilons, at ~0.5 ms per group to score.
QUANTILE_CANDIDATES = 512


@dataclass(frozen=True)
class Statistic:
    name: str
    kind: StatKind
    column: str | None = None  # the declared column (sum, nonnull, values)

    @property
    def empty(self) -> Any:
        """The value of this statistic over a group without rows."""
        return {} if self.kind == "values" else 0


ROWS = Statistic("_n", "rows")


def aggregate_statistics(i: int, agg: Aggregate) -> tuple[Statistic, ...]:
    """The statistics aggregate number ``i`` reads, in the order the engine returns them."""
    if agg.kind == "count":
        return (Statistic(f"a{i}_count", "rows"),)
    if agg.kind == "count_distinct_units":
        return (Statistic(f"a{i}_units", "units"),)
    if agg.column is None:
        raise ValueError(f"aggregate {agg.kind} without a column")
    if agg.kind == "sum":
        return (Statistic(f"a{i}_sum", "sum", agg.column),)
    if agg.kind == "avg":
        total = Statistic(f"a{i}_sum", "sum", agg.column)
        return (total, Statistic(f"a{i}_count", "nonnull", agg.column))
    if agg.kind == "quantile":
        return (Statistic(f"a{i}_values", "values", agg.column),)
    raise ValueError(f"unknown aggregate kind {agg.kind}")


def plan_statistics(plan: Plan) -> tuple[Statistic, ...]:
    """Every statistic of ``plan``, in result-column order, ending with ``ROWS``."""
    out: list[Statistic] = []
    for i, agg in enumerate(plan.aggregates):
        out.extend(aggregate_statistics(i, agg))
    return (*out, ROWS)


def integer_bounds(col: ColumnSpec) -> bool:
    """True when ``col`` is an int column with integral declared bounds (exact i64 noise)."""
    if col.type != "int" or col.bounds is None:
        return False
    return all(_integral(b) for b in col.bounds)


def quantile_candidates(col: ColumnSpec) -> tuple[float, ...]:
    """The candidates a quantile of ``col`` is chosen from (``candidate_grid`` of its bounds)."""
    if col.type not in ("int", "float") or col.bounds is None:
        raise ValueError(f"column {col.name} has no numeric bounds")
    low, high = col.bounds
    return candidate_grid(float(low), float(high), integer_bounds(col))


def candidate_grid(low: float, high: float, integer: bool) -> tuple[float, ...]:
    """Strictly increasing candidates spanning ``[low, high]``.

    A small integer range uses every integer; otherwise ``QUANTILE_CANDIDATES`` evenly spaced
    points (both bounds included). Candidates depend on declared bounds only, never on data.
    """
    if high <= low:
        return (float(low),)
    if integer and high - low + 1 <= QUANTILE_CANDIDATES:
        return tuple(float(v) for v in range(int(low), int(high) + 1))
    n = QUANTILE_CANDIDATES
    points = [low + (high - low) * i / (n - 1) for i in range(n)]
    points[-1] = high
    out: list[float] = []
    for p in points:
        if not out or p > out[-1]:
            out.append(float(p))
    return tuple(out)


def _integral(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())

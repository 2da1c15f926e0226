"""A ``Plan`` → the DuckDB SQL the gateway runs over the bounded table, and back.

``compile_plan`` writes every identifier from the dataset spec (double-quoted, ``"``
doubled) and every user literal as a ``?`` parameter, so no user text reaches DuckDB. Declared
metadata (bounds, quantile grid) is written as exact literals: parameters in expressions cost
DuckDB its constant folding (measured: a parameterised clamp doubled a 10M-row scan).
The table it reads is the engine's per-version bounded table (each unit already truncated to
``max_rows_per_unit`` rows, and each bounded int/float column stored a second time, clamped, as
``<name>#clamped``: ``engine/layout.py``). ``WHERE`` applies to raw values, then the
aggregates read clamped values, the documented order of a query (clamping is per row, so it
commutes with the filter).

Decisions:

- **Clamping keeps NULLs NULL** (``engine/layout.clamp_sql``): DuckDB's ``LEAST``/``GREATEST`` skip
  NULL arguments, so the clamp is a ``CASE``; otherwise every NULL would count as the lower bound.
- **Exact sums.** Int columns sum the stored BIGINT clamped column (DuckDB sums it as
  ``HUGEINT``). Float columns sum the stored ``DECIMAL(18,6)`` (or ``DECIMAL(38,6)`` for bounds
  beyond ±1e11): each clamped value rounded once to 6 decimals (half away from zero), then
  summed exactly, so the result does not depend on the order DuckDB's threads add rows in (float
  addition would, and a DP mechanism's output must be a function of the data alone). The
  rounding moves one value by at most 5e-7, far below any noise scale.
- **AVG** yields ``a{i}_sum`` and ``a{i}_count`` = ``COUNT(col)`` (non-NULL values), the
  denominator the mean is over.
- **Quantiles** yield ``a{i}_values``: a histogram ``{value: count}`` of the clamped non-NULL
  values, where a value strictly between two neighbouring quantile candidates is replaced by one
  representative of that gap (``quantile_key_sql``). OpenDP's quantile score of a candidate
  counts only the values below, equal to and above it, so every score, hence the output
  distribution, is unchanged; and the replacement is a fixed per-row map of public metadata,
  so even an imperfect one could not weaken privacy (a row-wise map is 1-stable under the
  symmetric distance). Instead of every value (8.7M floats at 10M rows, 2 s in DuckDB alone and
  a 1.5 GiB RSS peak), at most ~1,000 keys per group leave DuckDB.
- **Declared groups.** When every group column is a category with declared values, the query
  groups by the raw columns unfiltered and ``assemble`` keeps exactly the declared keys (their
  cartesian product in declared order, empty ones filled): groups of undeclared values or NULL
  are computed and discarded, never read. A row-level ``IN`` filter (or a ``HAVING``, which
  DuckDB pushes down to the rows) made the 10M-row scan ~30-50% slower. Otherwise (some group
  column is not a declared category) category columns are still restricted to their declared
  values by a row filter, and the keys come from the data (``declared_keys=None``) and must
  pass DP partition selection.
"""

from __future__ import annotations

import itertools
from typing import Any

from enclave.engine.layout import clamp_sql, clamped_name, ident, number_sql
from enclave.models import ColumnSpec, DatasetSpec
from enclave.query.plan import (
    And,
    Between,
    Comparison,
    CompiledQuery,
    ExactGroups,
    InList,
    IsNull,
    Not,
    Or,
    Plan,
    Predicate,
)
from enclave.query.stats import Statistic, plan_statistics, quantile_candidates

GRID_MARGIN = 1e-7  # distance (in steps) from a candidate below which the exact value is kept
GRID_MIN_STEP = 1e-6  # smallest step, relative to the largest bound, for gap representatives
GRID_MAX_DRIFT = 1e-9  # candidates must lie this close (in steps) to the even grid
_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def compile_plan(plan: Plan, spec: DatasetSpec, table: str) -> CompiledQuery:
    """Write DuckDB SQL for ``plan`` over the bounded table ``table``.

    Result columns: ``g0, g1, ...`` (the plan's GROUP BY columns, in order), then one per
    ``query/stats.py`` statistic. Identifiers are quoted from the spec, user values are
    parameters, metadata is written by ``number_sql``: no user text reaches the SQL.
    """
    group_idents = [ident(_spec_column(spec, name).name) for name in plan.group_by]
    statistics = plan_statistics(plan)
    select = [f"{g} AS g{i}" for i, g in enumerate(group_idents)]
    inner: list[str] = []  # per-row quantile keys, computed in a subquery below the filter
    for stat in statistics:
        expr, key = _statistic_sql(stat, spec)
        select.append(f"{expr} AS {stat.name}")
        if key is not None:
            inner.append(key)

    params: list[Any] = []
    declared = _declared_values(plan, spec)
    conditions = [] if plan.where is None else [_predicate(plan.where, spec, params)]
    if plan.group_by and declared is None:
        conditions.extend(_declared_filters(plan, spec, params))

    source = ident(table)
    if conditions:
        source = f"(SELECT * FROM {source} WHERE " + " AND ".join(conditions) + ")"  # noqa: S608
    if inner:
        source = f"(SELECT *, {', '.join(inner)} FROM {source})"  # noqa: S608
    sql = "SELECT " + ", ".join(select) + " FROM " + source  # noqa: S608
    if group_idents:
        sql += " GROUP BY " + ", ".join(group_idents)

    declared_keys: tuple[tuple[Any, ...], ...] | None
    if not plan.group_by:
        declared_keys = ((),)
    else:
        declared_keys = None if declared is None else tuple(itertools.product(*declared))
    return CompiledQuery(
        sql=sql,
        params=tuple(params),
        group_columns=plan.group_by,
        stats=statistics,
        declared_keys=declared_keys,
    )


def _statistic_sql(stat: Statistic, spec: DatasetSpec) -> tuple[str, str | None]:
    """The aggregate expression of ``stat``, and the per-row key it needs (quantiles)."""
    if stat.kind == "rows":
        return "COUNT(*)", None
    if stat.kind == "units":
        return f"COUNT(DISTINCT {ident(_spec_column(spec, spec.privacy_unit).name)})", None
    col = _numeric_column(spec, stat.column or "")
    if stat.kind == "sum":
        return f"SUM({ident(clamped_name(col.name))})", None
    if stat.kind == "nonnull":
        return f"COUNT({ident(col.name)})", None
    key = ident(f"{stat.name}#key")
    return f"histogram({key})", f"{quantile_key_sql(col)} AS {key}"


def _declared_values(plan: Plan, spec: DatasetSpec) -> list[tuple[str, ...]] | None:
    """Each group column's declared values, or None unless every one is a declared category."""
    declared: list[tuple[str, ...]] = []
    for name in plan.group_by:
        col = _spec_column(spec, name)
        if col.type != "category" or not col.values:
            return None
        declared.append(col.values)
    return declared


def _declared_filters(plan: Plan, spec: DatasetSpec, params: list[Any]) -> list[str]:
    """Undeclared keys: category group columns still keep only their declared values."""
    out: list[str] = []
    for name in plan.group_by:
        col = _spec_column(spec, name)
        if col.type == "category" and col.values:
            out.append(f"{ident(col.name)} IN ({', '.join('?' for _ in col.values)})")
            params.extend(col.values)
    return out


def quantile_key_sql(col: ColumnSpec) -> str:
    """Per row: the clamped value, or a representative of the candidate gap it lies in.

    - Consecutive integer candidates (int columns with a range of at most 512): the clamped
      value itself (at most that many distinct keys).
    - An evenly spaced grid ``c_j = c_0 + j * step``: ``t = (x - c_0) / step``; when ``t`` is
      at least ``1e-7`` away from an integer, ``x`` lies strictly inside ``(c_j, c_j+1)`` with
      ``j = floor(t)`` and the key is that gap's midpoint; otherwise (at or next to a candidate)
      the key is ``x`` itself. This is exact when the step is at least ``1e-6`` of the largest
      bound: then float rounding in ``t``, in the candidates and in the midpoint is below
      ``3e-10`` of a step (the ``GRID_*`` checks below). Values at exactly a candidate (e.g.
      the clamped bounds) keep their value.
    - Anything else (a step too fine for doubles): the clamped value (exact, more keys).
    """
    x = clamp_sql(col)
    cands = quantile_candidates(col)
    m = len(cands)
    if col.type == "int" and all(c == cands[0] + j for j, c in enumerate(cands)):
        return x
    if m < 2:
        return x
    lo, hi = cands[0], cands[-1]
    step = (hi - lo) / (m - 1)
    scale = max(abs(lo), abs(hi))
    if not step >= GRID_MIN_STEP * scale or any(
        abs(c - (lo + j * step)) > GRID_MAX_DRIFT * step for j, c in enumerate(cands)
    ):
        return x
    value = f"CAST({x} AS DOUBLE)"
    t = f"(({value} - {number_sql(lo, 'float')}) * {number_sql(1.0 / step, 'float')})"
    frac = f"({t} - floor({t}))"
    margin = number_sql(GRID_MARGIN, "float")
    inside = f"{frac} > {margin} AND {frac} < 1 - {margin}"
    mid = f"{number_sql(lo, 'float')} + (floor({t}) + 0.5) * {number_sql(step, 'float')}"
    return f"CASE WHEN {inside} THEN {mid} ELSE {value} END"


def assemble(compiled: CompiledQuery, rows: list[tuple[Any, ...]]) -> ExactGroups:
    """Turn the rows of ``compiled.sql`` into per-group statistics.

    Declared keys: every key, in declared order, those without rows filled with empty
    statistics (counts 0, sums 0, values {}). Undeclared: the keys found, in the engine's
    order, taken column-wise (no per-key Python work beyond filling NULL statistics: this
    step's time grows with the keys the data holds, see ``dp/deadline.py``). The release
    never depends on that order: partition selection adds i.i.d. noise per position, and
    what it releases is ordered by key (``dp/release.py``).
    """
    width = len(compiled.group_columns)
    if any(len(row) != width + len(compiled.stats) for row in rows):
        raise ValueError("result row does not match the compiled query")
    if compiled.declared_keys is None:
        cols = list(zip(*rows, strict=True)) if rows else [()] * (width + len(compiled.stats))
        keys = tuple(zip(*cols[:width], strict=True)) if width else tuple(() for _ in rows)
        return ExactGroups(
            group_columns=compiled.group_columns,
            keys=keys,
            stats={
                stat.name: tuple(stat.empty if v is None else v for v in cols[width + j])
                for j, stat in enumerate(compiled.stats)
            },
        )
    found = {tuple(row[:width]): tuple(row[width:]) for row in rows}
    columns: dict[str, list[Any]] = {stat.name: [] for stat in compiled.stats}
    for key in compiled.declared_keys:
        values = found.get(key)
        for j, stat in enumerate(compiled.stats):
            value = None if values is None else values[j]
            columns[stat.name].append(stat.empty if value is None else value)
    return ExactGroups(
        group_columns=compiled.group_columns,
        keys=compiled.declared_keys,
        stats={name: tuple(vals) for name, vals in columns.items()},
    )


def _spec_column(spec: DatasetSpec, name: str) -> ColumnSpec:
    for col in spec.columns:
        if col.name == name:
            return col
    raise ValueError(f"plan names a column the dataset does not declare: {name}")


def _numeric_column(spec: DatasetSpec, name: str) -> ColumnSpec:
    col = _spec_column(spec, name)
    if col.type not in ("int", "float") or col.bounds is None:
        raise ValueError(f"column {col.name} has no numeric bounds")
    return col


def _predicate(pred: Predicate, spec: DatasetSpec, params: list[Any]) -> str:
    if isinstance(pred, And | Or):
        joiner = " AND " if isinstance(pred, And) else " OR "
        return "(" + joiner.join(_predicate(p, spec, params) for p in pred.items) + ")"
    if isinstance(pred, Not):
        return "(NOT " + _predicate(pred.item, spec, params) + ")"
    col = ident(_spec_column(spec, pred.column).name)
    if isinstance(pred, Comparison):
        params.append(pred.value)
        return f"({col} {_SQL_OPS[pred.op]} ?)"
    if isinstance(pred, InList):
        params.extend(pred.values)
        marks = ", ".join("?" for _ in pred.values)
        return f"({col} {'NOT IN' if pred.negated else 'IN'} ({marks}))"
    if isinstance(pred, Between):
        params.extend((pred.low, pred.high))
        return f"({col} {'NOT BETWEEN' if pred.negated else 'BETWEEN'} ? AND ?)"
    if isinstance(pred, IsNull):
        return f"({col} IS {'NOT NULL' if pred.negated else 'NULL'})"
    raise ValueError(f"unknown predicate {type(pred).__name__}")

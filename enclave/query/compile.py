"""A ``Plan`` → the DuckDB SQL the gateway runs over the bounded table, and back.

``compile_plan`` writes every identifier from the dataset spec (double-quoted, ``"``
doubled) and every literal and bound as a ``?`` parameter, so no user text reaches DuckDB.
The table it reads is the engine's per-version bounded table (each unit already truncated to
``max_rows_per_unit`` rows); ``WHERE`` applies to raw values, then numeric values are clamped
to their declared bounds before aggregation, as CONTRACT.md "Semantics" orders.

Decisions:

- **Clamping keeps NULLs NULL.** DuckDB's ``LEAST``/``GREATEST`` skip NULL arguments
  (``GREATEST(NULL, 0)`` is 0), so the clamp is ``CASE WHEN x IS NULL THEN NULL ELSE
  LEAST(GREATEST(x, lo), hi) END``; otherwise every NULL would count as the lower bound.
- **Exact sums.** Int columns sum as ``HUGEINT``. Float columns sum as
  ``CAST(clamped AS DECIMAL(38,6))``: each clamped value is rounded once to 6 decimals
  (DuckDB rounds half away from zero), then summed exactly, so the result does not depend on
  the order DuckDB's threads add rows in (float addition would, and a DP mechanism's output
  must be a function of the data alone). The rounding moves one value by at most 5e-7, far
  below any noise scale. DECIMAL(38,6) holds 32 integer digits: with bounds up to 1e15 there
  is room for 1e17 rows; larger bounds overflow (an engine error, not a wrong answer).
- **AVG** yields ``a{i}_sum`` and ``a{i}_count`` = ``COUNT(col)`` (non-NULL values), the
  denominator the mean is over. Quantiles yield ``a{i}_values``, the clamped non-NULL values.
- **Declared groups.** When every group column is a category with declared values, rows are
  restricted to those values and ``declared_keys`` is their cartesian product in declared
  order; ``assemble`` fills the groups that have no rows, so which groups exist reveals
  nothing. Otherwise category columns are still restricted to their declared values, but the
  keys come from the data (``declared_keys=None``) and must pass DP partition selection.
"""

from __future__ import annotations

import itertools
from typing import Any

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

_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def quote_ident(name: str) -> str:
    """A DuckDB identifier: double-quoted, inner quotes doubled."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def compile_plan(plan: Plan, spec: DatasetSpec, table: str) -> CompiledQuery:
    """Write DuckDB SQL for ``plan`` over the bounded table ``table``.

    Result columns: ``g0, g1, ...`` (the plan's GROUP BY columns, in order), then ``stats``.
    """
    params: list[Any] = []
    select: list[str] = []
    group_exprs: list[str] = []
    for i, name in enumerate(plan.group_by):
        ident = quote_ident(_spec_column(spec, name).name)
        select.append(f"{ident} AS g{i}")
        group_exprs.append(ident)

    stats: list[str] = []
    for i, agg in enumerate(plan.aggregates):
        if agg.kind == "count":
            select.append(f"COUNT(*) AS a{i}_count")
            stats.append(f"a{i}_count")
        elif agg.kind == "count_distinct_units":
            unit = quote_ident(_spec_column(spec, spec.privacy_unit).name)
            select.append(f"COUNT(DISTINCT {unit}) AS a{i}_units")
            stats.append(f"a{i}_units")
        else:
            if agg.column is None:
                raise ValueError(f"aggregate {agg.kind} without a column")
            col = _spec_column(spec, agg.column)
            clamped = _clamped(col, params)
            if agg.kind in ("sum", "avg"):
                target = "HUGEINT" if col.type == "int" else "DECIMAL(38,6)"
                select.append(f"SUM(CAST({clamped} AS {target})) AS a{i}_sum")
                stats.append(f"a{i}_sum")
                if agg.kind == "avg":
                    select.append(f"COUNT({quote_ident(col.name)}) AS a{i}_count")
                    stats.append(f"a{i}_count")
            elif agg.kind == "quantile":
                ident = quote_ident(col.name)
                select.append(f"LIST({clamped}) FILTER (WHERE {ident} IS NOT NULL) AS a{i}_values")
                stats.append(f"a{i}_values")
            else:
                raise ValueError(f"unknown aggregate kind {agg.kind}")
    select.append("COUNT(*) AS _n")
    stats.append("_n")

    conditions: list[str] = []
    if plan.where is not None:
        conditions.append(_predicate(plan.where, spec, params))
    declared: list[tuple[str, ...]] = []
    for name in plan.group_by:
        col = _spec_column(spec, name)
        if col.type == "category" and col.values:
            marks = ", ".join("?" for _ in col.values)
            conditions.append(f"{quote_ident(col.name)} IN ({marks})")
            params.extend(col.values)
            declared.append(col.values)

    # Identifiers are quoted from the spec, every value is a parameter: no user text here.
    sql = "SELECT " + ", ".join(select) + " FROM " + quote_ident(table)  # noqa: S608
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if group_exprs:
        sql += " GROUP BY " + ", ".join(group_exprs)

    declared_keys: tuple[tuple[Any, ...], ...] | None
    if not plan.group_by:
        declared_keys = ((),)
    elif len(declared) == len(plan.group_by):
        declared_keys = tuple(itertools.product(*declared))
    else:
        declared_keys = None
    return CompiledQuery(
        sql=sql,
        params=tuple(params),
        group_columns=plan.group_by,
        stats=tuple(stats),
        declared_keys=declared_keys,
    )


def assemble(compiled: CompiledQuery, rows: list[tuple[Any, ...]]) -> ExactGroups:
    """Turn the rows of ``compiled.sql`` into per-group statistics.

    Declared keys: every key, in declared order, those without rows filled with empty
    statistics (counts 0, sums 0, values []). Undeclared: the keys found, sorted (NULL last)
    so the order does not depend on DuckDB's hash table.
    """
    width = len(compiled.group_columns)
    found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        if len(row) != width + len(compiled.stats):
            raise ValueError("result row does not match the compiled query")
        found[tuple(row[:width])] = tuple(row[width:])
    if compiled.declared_keys is not None:
        keys = compiled.declared_keys
    else:
        keys = tuple(
            sorted(
                found,
                key=lambda k: tuple((v is None, v) if v is not None else (True, 0) for v in k),
            )
        )
    columns: dict[str, list[Any]] = {name: [] for name in compiled.stats}
    for key in keys:
        values = found.get(key)
        for j, name in enumerate(compiled.stats):
            value = None if values is None else values[j]
            columns[name].append(_fill(name, value))
    return ExactGroups(
        group_columns=compiled.group_columns,
        keys=keys,
        stats={name: tuple(vals) for name, vals in columns.items()},
    )


def _fill(stat: str, value: Any) -> Any:
    if value is not None:
        return value
    return [] if stat.endswith("_values") else 0


def _spec_column(spec: DatasetSpec, name: str) -> ColumnSpec:
    for col in spec.columns:
        if col.name == name:
            return col
    raise ValueError(f"plan names a column the dataset does not declare: {name}")


def _clamped(col: ColumnSpec, params: list[Any]) -> str:
    """The column clamped to its declared bounds; NULL stays NULL. Appends the two bounds."""
    if col.type not in ("int", "float") or col.bounds is None:
        raise ValueError(f"column {col.name} has no numeric bounds")
    ident = quote_ident(col.name)
    low, high = col.bounds
    params.extend((low, high))
    return f"CASE WHEN {ident} IS NULL THEN NULL ELSE LEAST(GREATEST({ident}, ?), ?) END"


def _predicate(pred: Predicate, spec: DatasetSpec, params: list[Any]) -> str:
    if isinstance(pred, And | Or):
        joiner = " AND " if isinstance(pred, And) else " OR "
        return "(" + joiner.join(_predicate(p, spec, params) for p in pred.items) + ")"
    if isinstance(pred, Not):
        return "(NOT " + _predicate(pred.item, spec, params) + ")"
    ident = quote_ident(_spec_column(spec, pred.column).name)
    if isinstance(pred, Comparison):
        params.append(pred.value)
        return f"({ident} {_SQL_OPS[pred.op]} ?)"
    if isinstance(pred, InList):
        params.extend(pred.values)
        marks = ", ".join("?" for _ in pred.values)
        return f"({ident} {'NOT IN' if pred.negated else 'IN'} ({marks}))"
    if isinstance(pred, Between):
        params.extend((pred.low, pred.high))
        return f"({ident} {'NOT BETWEEN' if pred.negated else 'BETWEEN'} ? AND ?)"
    if isinstance(pred, IsNull):
        return f"({ident} IS {'NOT NULL' if pred.negated else 'NULL'})"
    raise ValueError(f"unknown predicate {type(pred).__name__}")

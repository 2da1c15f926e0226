"""The bounded table's layout and the SQL text the gateway writes about it.

This is the engine's public face for ``query/compile.py`` (and for bounding itself): how an
identifier, a string or a declared number is written in DuckDB SQL, and which columns the
per-version bounded table holds. Every bounded int/float column ``c`` is stored twice: raw as
``c`` (``WHERE`` filters on it) and clamped to its stored bounds as ``c#clamped`` (aggregates
read it): ``BIGINT`` for int columns, ``DECIMAL(18,6)`` for float columns whose bounds lie
within ±1e11, else ``DECIMAL(38,6)`` (``engine/bounding.py`` says why). The ``#`` cannot
occur in a declared column name, so no name collides.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from enclave.models import ColumnSpec, DatasetSpec

CLAMPED_SUFFIX = "#clamped"
STORED_DECIMALS = 6  # float clamped columns are DECIMAL(p, 6)
DECIMAL18_MAX_BOUND = 1e11  # larger float bounds are stored as DECIMAL(38,6)
_GRID = Decimal(1).scaleb(-STORED_DECIMALS)


def clamped_name(column: str) -> str:
    """The bounded table's column holding ``column`` clamped to its declared bounds."""
    return column + CLAMPED_SUFFIX


def stored_bounds(col: ColumnSpec) -> tuple[Decimal, Decimal]:
    """The bounds a clamped column's stored values lie within (exact).

    Int columns: the declared bounds. Float columns: the declared bounds (as written, i.e. the
    shortest decimal of the float) rounded inward to ``STORED_DECIMALS`` decimals. Raises
    ``ValueError`` when no stored value lies within the bounds.
    """
    low, high = _numeric_bounds(col)
    if col.type == "int":
        return Decimal(int(low)), Decimal(int(high))
    lo = _decimal(low).quantize(_GRID, rounding=ROUND_CEILING)
    hi = _decimal(high).quantize(_GRID, rounding=ROUND_FLOOR)
    if lo > hi:
        raise ValueError(f"column {col.name}: no stored value lies within the bounds")
    return lo, hi


def clamped_type(col: ColumnSpec) -> str:
    """The SQL type of ``col``'s clamped column (module docstring, "Clamped columns")."""
    if col.type == "int":
        return "BIGINT"
    low, high = _numeric_bounds(col)
    if max(abs(float(low)), abs(float(high))) <= DECIMAL18_MAX_BOUND:
        return "DECIMAL(18,6)"
    return "DECIMAL(38,6)"


def clamp_sql(col: ColumnSpec, source: str | None = None) -> str:
    """``source`` (default: the column) clamped to ``col``'s stored bounds, NULL kept NULL.

    DuckDB's ``LEAST``/``GREATEST`` skip NULL arguments (``GREATEST(NULL, 0)`` is 0), hence the
    CASE. Bounds are written as exact literals (declared metadata, never user text): a bound
    parameter here would make DuckDB evaluate the expression without constant folding. A float
    value clamped to grid bounds and then rounded to the grid stays within them.
    """
    low, high = stored_bounds(col)
    kind = "int" if col.type == "int" else "float"
    ident_ = source if source is not None else ident(col.name)
    lo, hi = number_sql(_number(low, kind), kind), number_sql(_number(high, kind), kind)
    return f"CASE WHEN {ident_} IS NULL THEN NULL ELSE LEAST(GREATEST({ident_}, {lo}), {hi}) END"


def clamped_columns_sql(spec: DatasetSpec, source: str = "") -> list[str]:
    """``<clamped expr> AS "<name>#clamped"`` for every bounded int/float column of ``spec``.

    ``source`` prefixes the raw column (e.g. ``"t."``). Used by bounding; tests use it to
    build a table with the bounded layout.
    """
    out = []
    for col in spec.columns:
        if col.type in ("int", "float") and col.bounds is not None:
            expr = clamp_sql(col, source + ident(col.name))
            out.append(f"CAST({expr} AS {clamped_type(col)}) AS {ident(clamped_name(col.name))}")
    return out


def number_sql(value: int | float, kind: str) -> str:
    """An exact SQL literal: an integer, or a DOUBLE parsed from its shortest repr."""
    if kind == "int":
        return str(int(value))
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("bounds must be finite")
    return f"CAST('{number!r}' AS DOUBLE)"


def _decimal(value: int | float) -> Decimal:
    if isinstance(value, int):
        return Decimal(value)
    if not math.isfinite(value):
        raise ValueError("bounds must be finite")
    return Decimal(repr(float(value)))


def _number(value: Decimal, kind: str) -> int | float:
    return int(value) if kind == "int" else float(value)


def _numeric_bounds(col: ColumnSpec) -> tuple[int | float, int | float]:
    if col.type not in ("int", "float") or col.bounds is None:
        raise ValueError(f"column {col.name} has no numeric bounds")
    low, high = col.bounds
    return low, high


def ident(name: str) -> str:
    """A DuckDB identifier: double-quoted, inner quotes doubled (NUL refused)."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"

"""Field validators shared by the tier and dataset checks in ``files.py``.

Each ``read_*`` function takes a ``Problems`` collector, a raw value and the field's dotted
name; it returns the parsed value, or ``None`` after recording *why* it is unusable, so the
caller can carry on and report every problem of a definition in one pass.

Decisions worth knowing:

- ``bool`` is never a number; NaN and infinities are refused, also as text (``"NaN"``,
  ``"Infinity"``, ``"1e999"``: the last is a finite-looking literal that overflows a float).
  PyYAML reads ``1e-6`` (no dot) as a *string*, so numbers also accept text that is a plain
  decimal or scientific number. Numbers become ``Decimal`` via ``repr(float)`` so ``0.1`` stays
  exactly ``0.1`` in the ledger.
- Epsilons and deltas (tier caps and budgets) must lie on the ledger's grid (multiples of
  0.000001 and 1e-15, ``ledger/grid.py``) and within its bounds (epsilon at most 10**6, delta
  below 1): the ledger stores them as whole units, so nothing is rounded after the fact.
- Declared bounds are capped in magnitude (``MAX_INT_BOUND`` = 2**53, ``MAX_FLOAT_BOUND`` =
  1e15): the mechanisms calibrate noise in floats, and a bound beyond exact float range would
  make the sensitivity (and so the noise) meaningless. An int column's ``k * max(|low|,
  |high|)`` (its SUM sensitivity) must also stay within 2**53 (``check_sensitivity``).
- Float bounds must lie on the stored grid: the bounded table stores clamped floats as
  DECIMAL with six decimals (``models.stored_float``), so a bound such as ``5e-7`` would be
  summed as ``0.000001``, twice the declared value, and the noise calibrated on the declared
  bound would be too small. Such bounds are refused, naming what would be stored. A stored
  definition with an off-grid bound (from before this rule) no longer validates: its dataset
  answers 503 and the log names the bound until an admin ``PUT`` declares one on the grid.
- A relative dataset ``source`` is resolved against ``data_dir`` (``visits.parquet``,
  ``2026/clinic.csv``) with symlinks followed, and must then lie inside ``data_dir``: ``..``
  escapes, absolute paths elsewhere, symlinks out and URLs are refused. For definitions written
  before this rule, a relative source that leaves ``data_dir`` that way is resolved against the
  dataset file's folder instead (``../../data/visits.parquet``), and must equally end inside
  ``data_dir``; both readings are confined, so neither can reach anything else. Wildcards are
  refused: a source names one file. Paths in ``forbidden`` (the engine's state folder, the
  SQLite store file) are refused even inside ``data_dir``, so a dataset can never expose the
  gateway's own state.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from enclave.errors import PolicyFileError
from enclave.inputs import MAX_NAME_CHARS, MAX_PATH_CHARS, MAX_TEXT_CHARS
from enclave.ledger.grid import MAX_EPSILON, on_delta_grid, on_epsilon_grid
from enclave.models import (
    COLUMN_TYPES,
    FLOAT_DECIMALS,
    MAX_INT_SENSITIVITY,
    ColumnSpec,
    ColumnType,
    stored_float,
)

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
JURISDICTION_RE = re.compile(r"[A-Z]{2}")
_NUMBER_TEXT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
COLUMN_FIELDS = frozenset({"type", "bounds", "values"})
MAX_INT_BOUND = 2**53
MAX_FLOAT_BOUND = 1e15


class Problems:
    """Collects problems under one ``where`` prefix."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, field: str, what: str) -> None:
        self.items.append(f"{self.where}: {field}: {what}" if self.where else f"{field}: {what}")

    def raise_if_any(self) -> None:
        if self.items:
            raise PolicyFileError(self.items)


def read_mapping(p: Problems, value: Any, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    """Return ``value`` as a mapping with only ``allowed`` keys (others are reported)."""
    if not isinstance(value, dict):
        p.add(field or "(top level)", "must be a mapping")
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{field}.{key}" if field else str(key)
        if not isinstance(key, str) or key not in allowed:
            p.add(name, "unknown field")
        else:
            out[key] = item
    return out


def read_decimal(p: Problems, value: Any, field: str, what: str) -> Decimal | None:
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value)) if math.isfinite(value) else None
    elif isinstance(value, str) and _NUMBER_TEXT_RE.fullmatch(value.strip()):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = None
    else:
        number = None
    if number is None or not math.isfinite(float(number)):
        p.add(field, what)
        return None
    return number


def read_int(
    p: Problems, value: Any, field: str, minimum: int, maximum: int | None = None
) -> int | None:
    """An integer from ``minimum`` to ``maximum``; without one, to ``MAX_INT_BOUND`` (a larger
    integer has no exact JSON form for many readers, and one of thousands of digits cannot even
    be written to the store)."""
    bad = isinstance(value, bool) or not isinstance(value, int) or value < minimum
    if bad or (maximum is not None and value > maximum):
        within = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        p.add(field, f"must be an integer {within}")
        return None
    if maximum is None and value > MAX_INT_BOUND:
        p.add(field, "must lie within 2**53")
        return None
    return cast(int, value)


def read_epsilon(p: Problems, value: Any, field: str) -> Decimal | None:
    """A positive epsilon on the ledger's grid (``ledger/grid.py``), at most ``MAX_EPSILON``."""
    what = f"must be a number in (0, {MAX_EPSILON}], a multiple of 0.000001"
    number = read_decimal(p, value, field, what)
    if number is not None and not (0 < number <= MAX_EPSILON and on_epsilon_grid(number)):
        p.add(field, what)
        return None
    return number


def read_delta(p: Problems, value: Any, field: str) -> Decimal | None:
    """A delta in ``[0, 1)`` on the ledger's grid (a multiple of 1e-15)."""
    what = "must be a number in [0, 1), a multiple of 1e-15"
    number = read_decimal(p, value, field, what)
    if number is not None and not (0 <= number < 1 and on_delta_grid(number)):
        p.add(field, what)
        return None
    return number


def read_bool(p: Problems, value: Any, field: str) -> bool | None:
    if not isinstance(value, bool):
        p.add(field, "must be true or false")
        return None
    return value


def read_text(p: Problems, value: Any, field: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    if not isinstance(value, str):
        p.add(field, "must be text")
        return None
    if len(value) > max_chars:
        p.add(field, f"at most {max_chars} characters")
        return None
    return value


def read_name(p: Problems, value: Any, field: str) -> str | None:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        p.add(field, "must match [a-z][a-z0-9_]{0,62}")
        return None
    return value


def read_jurisdictions(p: Problems, value: Any, field: str) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        p.add(field, "must be a list of 2-letter upper-case country codes")
        return None
    ok = True
    for i, code in enumerate(value):
        if not isinstance(code, str) or not JURISDICTION_RE.fullmatch(code):
            p.add(f"{field}[{i}]", "must be a 2-letter upper-case country code")
            ok = False
    if ok and len(set(value)) != len(value):
        p.add(field, "lists a code twice")
        ok = False
    return tuple(value) if ok else None


def read_columns(p: Problems, value: Any) -> list[ColumnSpec]:
    if not isinstance(value, dict) or not value:
        p.add("columns", "must be a non-empty mapping of column name to definition")
        return []
    out: list[ColumnSpec] = []
    seen: set[str] = set()
    for name, body in value.items():
        field = f"columns.{name}"
        if not isinstance(name, str) or not COLUMN_RE.fullmatch(name):
            p.add(field, "column name must match [A-Za-z_][A-Za-z0-9_]{0,62}")
            continue
        if name.lower() in seen:
            p.add(field, "declared twice (names are case-insensitive)")
            continue
        seen.add(name.lower())
        col = _column(p, name, read_mapping(p, body, field, COLUMN_FIELDS), field)
        if col is not None:
            out.append(col)
    return out


def _column(p: Problems, name: str, d: dict[str, Any], field: str) -> ColumnSpec | None:
    kind = d.get("type")
    if kind not in COLUMN_TYPES:
        p.add(f"{field}.type", f"must be one of: {', '.join(COLUMN_TYPES)}")
        return None
    before = len(p.items)
    bounds = values = None
    if kind in ("int", "float", "date"):
        if "bounds" not in d:
            p.add(f"{field}.bounds", f"required for {kind} columns")
        else:
            bounds = _bounds(p, d["bounds"], kind, f"{field}.bounds")
    elif "bounds" in d:
        p.add(f"{field}.bounds", f"not allowed for {kind} columns")
    if kind == "category":
        values = _values(p, d.get("values"), f"{field}.values")
    elif "values" in d:
        p.add(f"{field}.values", "only category columns declare values")
    if len(p.items) > before:
        return None
    return ColumnSpec(name=name, type=cast(ColumnType, kind), bounds=bounds, values=values)


def _bounds(p: Problems, value: Any, kind: str, field: str) -> tuple[Any, Any] | None:
    if not isinstance(value, list) or len(value) != 2:
        p.add(field, "must be a list [low, high]")
        return None
    parsed = [_bound(p, item, kind, f"{field}[{i}]") for i, item in enumerate(value)]
    if parsed[0] is None or parsed[1] is None:  # each bad bound is listed
        return None
    if not parsed[0] < parsed[1]:
        p.add(field, "low must be less than high")
        return None
    return (parsed[0], parsed[1])


def _bound(p: Problems, item: Any, kind: str, where: str) -> Any:
    """One bound of ``kind`` (int, float, date), or None with its problem added."""
    if kind == "int":
        if isinstance(item, bool) or not isinstance(item, int):
            p.add(where, "must be an integer")
            return None
        if abs(item) > MAX_INT_BOUND:
            p.add(where, "must lie within ±2**53")
            return None
        return item
    if kind == "float":
        number = read_decimal(p, item, where, "must be a finite number")
        if number is None:
            return None
        if abs(number) > Decimal(MAX_FLOAT_BOUND):
            p.add(where, "must lie within ±1e15")
            return None
        stored = stored_float(float(number))
        if stored != number:
            p.add(
                where,
                f"{number} is off the stored grid: the bounded table keeps clamped floats "
                f"with {FLOAT_DECIMALS} decimals and would store it as {stored.normalize()}; "
                f"declare a multiple of 0.000001 that is stored exactly",
            )
            return None
        return float(number)
    day = _date(item)
    if day is None:
        p.add(where, "must be a date YYYY-MM-DD")
    return day


def check_sensitivity(p: Problems, columns: Sequence[ColumnSpec], k: int) -> None:
    """An int column's SUM sensitivity ``k * max(|low|, |high|)`` must stay within 2**53."""
    for col in columns:
        if col.type == "int" and col.bounds is not None:
            top = k * max(abs(int(col.bounds[0])), abs(int(col.bounds[1])))
            if top > MAX_INT_SENSITIVITY:
                p.add(
                    f"columns.{col.name}.bounds",
                    f"max_rows_per_unit ({k}) times the largest bound exceeds 2**53, the "
                    "largest integer sum sensitivity that is priced exactly",
                )


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _values(p: Problems, value: Any, field: str) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value:
        p.add(field, "category columns must declare a non-empty list of values")
        return None
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            p.add(f"{field}[{i}]", "must be non-empty text (quote yes/no/on/off/numbers in YAML)")
            return None
        if len(item) > MAX_NAME_CHARS:
            p.add(f"{field}[{i}]", f"at most {MAX_NAME_CHARS} characters")
            return None
    if len(set(value)) != len(value):
        p.add(field, "lists a value twice")
        return None
    return tuple(value)


def read_source(
    p: Problems,
    value: Any,
    base_dir: Path,
    data_dir: Path,
    require: bool,
    forbidden: Sequence[Path] = (),
) -> tuple[str, str | None] | None:
    """Resolve a source to (absolute path inside data_dir, duckdb table or None): relative to
    ``data_dir``, or (the earlier rule) to ``base_dir`` when only that reading stays inside."""
    what = "must be a .parquet or .csv file, or duckdb://file.duckdb#table"
    if not isinstance(value, str) or not value.strip():
        p.add("source", what)
        return None
    if len(value) > MAX_PATH_CHARS:
        p.add("source", f"at most {MAX_PATH_CHARS} characters")
        return None
    table: str | None = None
    text = value
    if value.startswith("duckdb://"):
        text, _, table = value[len("duckdb://") :].partition("#")
        if not COLUMN_RE.fullmatch(table):
            p.add("source", "duckdb:// sources must end with #table (a plain table name)")
            return None
        if not text.endswith(".duckdb"):
            p.add("source", what)
            return None
    elif _SCHEME_RE.match(value):
        p.add("source", "URLs are not allowed; name a file inside the data folder")
        return None
    elif not value.lower().endswith((".parquet", ".csv")):
        p.add("source", what)
        return None
    if any(ch in text for ch in "*?[{\x00"):
        p.add("source", "must name one file (no wildcards)")
        return None
    try:
        root = data_dir.resolve()
        path = (root / text).resolve()
        if not _inside(path, root):  # the earlier rule: relative to the dataset file
            earlier = (base_dir / text).resolve()
            path = earlier if _inside(earlier, root) else path
    except (OSError, RuntimeError, ValueError):
        p.add("source", "cannot be resolved")
        return None
    if not _inside(path, root):
        p.add("source", "must lie inside the data folder (after resolving .. and symlinks)")
        return None
    if any(_within(path, state) for state in forbidden):
        p.add("source", "must not name the gateway's own state (store or engine folder)")
        return None
    try:
        found = path.is_file()
    except (OSError, ValueError):
        found = False
    if require and not found:
        p.add("source", "file not found in the data folder")
        return None
    return str(path), table


def _inside(path: Path, root: Path) -> bool:
    return path.is_relative_to(root) and path != root


def _within(path: Path, other: Path) -> bool:
    try:
        resolved = other.resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return path == resolved or path.is_relative_to(resolved)

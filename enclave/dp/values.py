"""Total, deterministic handling of values that come from the data: keys, order, digest.

Everything between the exact result and the response must be total: once data has been read,
an exception would be an uncharged oracle (a query that fails for one dataset and answers for
its neighbour). The functions here never raise, whatever the values (NaN, infinities, dates
DuckDB could not convert, mixed types, any DuckDB type), and depend on the values alone
(never on DuckDB's row order).

- ``json_value``: a released cell as plain JSON: ``None``, ``bool``, ``int``, ``str`` and
  finite ``float`` pass; NaN and infinities become ``None`` (NULL, as bounding makes them);
  dates and times their ISO text; ``Decimal`` its text (NaN or infinite: ``None``); anything
  else ``str(value)``. So the response, the stored release and the digest hold the same
  values, and JSON encoding cannot fail.
- ``sort_key``: a total order over any values, used for ORDER BY of released rows and the
  order of undeclared keys: booleans, then numbers (ints, floats and decimals compared by
  value, NaN after every number; equal values by type name), then strings, then dates and
  times (by ISO text), then anything else (by type name and text). ``None`` sorts last.
- ``result_digest``: SHA-256 of ``{"columns": [...], "rows": [...]}`` as canonical JSON
  (sorted keys, no whitespace, UTF-8) of the ``json_value`` of every cell.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from decimal import Decimal
from typing import Any

_BOOL, _NUMBER, _TEXT, _TIME, _OTHER, _NULL = range(6)


def json_value(value: Any) -> Any:
    """``value`` as a plain JSON value (see the module doc); never raises."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return _text(value)


def sort_key(value: Any) -> tuple[Any, ...]:
    """A key under which any values sort totally and deterministically; ``None`` last."""
    if value is None:
        return (_NULL,)
    if isinstance(value, bool):
        return (_BOOL, int(value))
    if isinstance(value, int | float | Decimal):  # equal values: by type name
        if _is_nan(value):
            return (_NUMBER, 1, 0, type(value).__name__)
        return (_NUMBER, 0, value, type(value).__name__)
    if isinstance(value, str):
        return (_TEXT, value)
    if isinstance(value, dt.date | dt.time):
        return (_TIME, value.isoformat(), type(value).__name__)
    return (_OTHER, type(value).__name__, _text(value))


def row_sort_key(key: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...]:
    """``sort_key`` of each part of a group key."""
    return tuple(sort_key(v) for v in key)


def result_digest(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    body = {"columns": list(columns), "rows": [[json_value(v) for v in r] for r in rows]}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _is_nan(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_nan()
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a value whose text fails is named by its type alone
        return f"<{type(value).__name__}>"

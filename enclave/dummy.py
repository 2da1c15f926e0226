"""Dummy data: rows shaped like a dataset, made from its public metadata alone.

``GET /v1/datasets/{name}/dummy`` lets a researcher write and test SQL locally (with DuckDB,
pandas, anything) before spending budget on the real data. The rows are generated from what
``GET /v1/datasets`` already shows, and from nothing else: the source is never opened, so
the dummy says nothing about the data and costs no epsilon.

- Every declared column appears, in the order ``GET /v1/datasets`` lists them: ``int``,
  ``float`` and ``date`` uniform over their bounds, ``category`` uniform over its declared
  values (a category without declared values gets ``<column>_1`` ...
  ``<column>_5``), ``identifier`` a synthetic id. No NULLs.
- The privacy unit holds synthetic ids (``u000001``, ...); each unit has between 1 and
  ``max_rows_per_unit`` rows, so the dummy is already bounded as the real table is.
- Reproducible: the same dataset version, ``rows`` and ``seed`` give the same bytes. Values come
  from numpy's PCG64 generator seeded by ``(seed, column position)``; this is test data,
  never noise (noise comes from OpenDP only). The file is written by DuckDB on one thread.
- At most ``MAX_ROWS`` rows per request.
- In CSV, a category value a spreadsheet would read as a formula (``=…``, declared by a
  steward) gets a leading ``'`` (``neutralise``, as in the audit export); Parquet keeps it.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from enclave.audit.export import neutralise
from enclave.models import ColumnSpec, DatasetSpec

MAX_ROWS = 100_000
DEFAULT_ROWS = 1_000
MAX_SEED = 2**53 - 1  # exact in JSON and JavaScript numbers
FORMATS: dict[str, str] = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
UNDECLARED_CATEGORY_VALUES = 5
_EPOCH = dt.date(1970, 1, 1)
_SQL_TYPES = {
    "identifier": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "category": "VARCHAR",
    "date": "DATE",
}


@dataclass(frozen=True)
class DummyRequest:
    """What to generate; ``web/researcher.py`` reads it from the query string."""

    rows: int = DEFAULT_ROWS
    seed: int = 0
    format: str = "parquet"

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]


def dummy_columns(spec: DatasetSpec, rows: int, seed: int) -> dict[str, np.ndarray]:
    """One numpy array per declared column; a pure function of the spec, rows and seed."""
    out: dict[str, np.ndarray] = {}
    for position, col in enumerate(spec.columns):
        rng = np.random.Generator(np.random.PCG64([seed, position]))
        if col.name == spec.privacy_unit:
            out[col.name] = _units(rng, rows, spec.max_rows_per_unit)
        else:
            out[col.name] = _values(rng, col, rows)
    return out


def _units(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """Synthetic unit ids, each used for 1 to ``k`` consecutive rows."""
    per_unit = rng.integers(1, max(1, k), size=rows, endpoint=True)
    ids = np.repeat(np.arange(1, rows + 1), per_unit)[:rows]
    return np.array([f"u{i:06d}" for i in ids.tolist()], dtype=object)


def _values(rng: np.random.Generator, col: ColumnSpec, rows: int) -> np.ndarray:
    if col.type == "int":
        low, high = col.bounds or (0, 0)
        return rng.integers(math.ceil(low), math.floor(high), size=rows, endpoint=True)
    if col.type == "float":
        low, high = col.bounds or (0.0, 0.0)
        return rng.uniform(float(low), float(high), size=rows)
    if col.type == "date":
        first, last = col.bounds or (_EPOCH, _EPOCH)
        days = rng.integers((first - _EPOCH).days, (last - _EPOCH).days, size=rows, endpoint=True)
        return days.astype(np.int64)
    if col.type == "category":
        values = col.values or tuple(
            f"{col.name}_{i}" for i in range(1, UNDECLARED_CATEGORY_VALUES + 1)
        )
        return np.array(values, dtype=object)[rng.integers(0, len(values), size=rows)]
    picks = rng.integers(1, rows + 1, size=rows, endpoint=True)  # another identifier column
    return np.array([f"{col.name}-{i}" for i in picks.tolist()], dtype=object)


def render_dummy(spec: DatasetSpec, req: DummyRequest) -> bytes:
    """The dummy table as Parquet or CSV bytes (DuckDB writes it; the source is not read)."""
    columns = dummy_columns(spec, req.rows, req.seed)
    arrays = {f"c{i}": columns[col.name] for i, col in enumerate(spec.columns)}
    if req.format == "csv":
        for i, col in enumerate(spec.columns):
            if col.type == "category":
                cells = [neutralise(str(v)) for v in arrays[f"c{i}"].tolist()]
                arrays[f"c{i}"] = np.array(cells, dtype=object)
    select = ", ".join(_select_item(i, col) for i, col in enumerate(spec.columns))
    options = "FORMAT parquet" if req.format == "parquet" else "FORMAT csv, HEADER true"
    con = duckdb.connect(config={"threads": 1, "autoload_known_extensions": False})
    try:
        con.register("dummy_input", arrays)
        with tempfile.TemporaryDirectory(prefix="enclave-dummy-") as folder:
            path = Path(folder) / f"dummy.{req.format}"
            target = str(path).replace("'", "''")
            sql = f"COPY (SELECT {select} FROM dummy_input) TO '{target}' ({options})"  # noqa: S608
            con.execute(sql)  # registry names (quoted), our own temporary path
            return path.read_bytes()
    finally:
        con.close()


def _select_item(i: int, col: ColumnSpec) -> str:
    name = '"' + col.name.replace('"', '""') + '"'
    if col.type == "date":
        return f"(DATE '{_EPOCH.isoformat()}' + CAST(c{i} AS INTEGER)) AS {name}"
    return f"CAST(c{i} AS {_SQL_TYPES[col.type]}) AS {name}"


def dummy_filename(spec: DatasetSpec, req: DummyRequest) -> str:
    return f"{spec.name}-dummy-{req.rows}-{req.seed}.{req.format}"


def dummy_detail(req: DummyRequest) -> dict[str, Any]:
    """What the audit record keeps of the request."""
    return {"dummy": {"rows": req.rows, "seed": req.seed, "format": req.format}}

"""Reading the dummy table the gateway sends (Parquet bytes) into records or a DataFrame.

DuckDB (already a dependency) reads the Parquet, so records need nothing more; a DataFrame
needs the ``pandas`` extra. Types follow the dataset's declared columns: ``int`` → int,
``float`` → float, ``date`` → ``datetime.date``, the others → str.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

import duckdb

PANDAS_HINT = (
    "dummy() returns a pandas.DataFrame and needs pandas, which is not installed; install "
    "it with: pip install 'enclave-gateway[pandas]', or use dummy_records() / dummy_file()"
)


def _relation(raw: bytes, folder: str) -> tuple[duckdb.DuckDBPyConnection, Any]:
    path = Path(folder) / "dummy.parquet"
    path.write_bytes(raw)
    con = duckdb.connect()
    return con, con.read_parquet(str(path))


def parquet_records(raw: bytes) -> list[dict[str, Any]]:
    """One dict per row of a Parquet file given as bytes."""
    with tempfile.TemporaryDirectory(prefix="enclave-dummy-") as folder:
        con, rel = _relation(raw, folder)
        try:
            names = list(rel.columns)
            return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]
        finally:
            con.close()


def parquet_frame(raw: bytes) -> Any:
    """A ``pandas.DataFrame`` of a Parquet file given as bytes (needs pandas)."""
    try:
        importlib.import_module("pandas")
    except ImportError as exc:
        raise ImportError(PANDAS_HINT) from exc
    with tempfile.TemporaryDirectory(prefix="enclave-dummy-") as folder:
        con, rel = _relation(raw, folder)
        try:
            return rel.df()
        finally:
            con.close()

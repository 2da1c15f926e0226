"""A source's schema, read in the source sandbox, and the declared columns checked against it.

``source_schema`` binds ``SELECT * FROM <source>`` in a source sandbox (``engine/sandbox.py``)
and returns each column's DuckDB type; it reads metadata only (a Parquet footer, a CSV sample,
a DuckDB catalog: a view is bound, not run). ``schema_problems`` names every declared column
that is missing or whose type cannot hold the declared kind:

=============  =========================================================================
declared       source types accepted
=============  =========================================================================
int, float     any numeric type (integers, DECIMAL, FLOAT, DOUBLE); values that do not fit
               become NULL when bounding
date           DATE and the TIMESTAMP types
category,      any scalar type (text, numbers, booleans, dates, ENUM, UUID); never BLOB or
identifier     a nested type (LIST, STRUCT, MAP, ARRAY, UNION), which have no stable text
=============  =========================================================================

Names match case-insensitively, as in DuckDB. ``column_problems`` runs the check in a child
process with a deadline; the admin dataset PUT (``Warehouse.source_problems``) and
``enclave policy check`` use it; ``proposal_schema`` serves a dataset's registration from a
file (``data_files.py``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb

from enclave.engine.bounding import new_work_dir
from enclave.engine.child import ChildPool
from enclave.engine.sandbox import open_source
from enclave.errors import DatasetUnavailable, PolicyFileError
from enclave.models import ColumnSpec, DatasetSpec

SCHEMA_TIMEOUT_S = 30.0  # reading a schema reads metadata only
_NUMERIC = re.compile(
    r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|DECIMAL\(\d+,\s*\d+\))$"
)
_DATE = re.compile(r"^(DATE|TIMESTAMP(_S|_MS|_NS)?|TIMESTAMP WITH TIME ZONE)$")
_NOT_TEXT = re.compile(r"(\[|\bSTRUCT\(|\bMAP\(|\bUNION\(|^BLOB$|^BIT$)")
_NEEDS = {
    "int": "a numeric type",
    "float": "a numeric type",
    "date": "a DATE or TIMESTAMP type",
    "category": "a scalar type (not BLOB, LIST, STRUCT or MAP)",
    "identifier": "a scalar type (not BLOB, LIST, STRUCT or MAP)",
}


def source_schema(
    spec: DatasetSpec, state_dir: Path, *, threads: int = 1, memory_limit: str = "256MB"
) -> dict[str, str]:
    """``{column name: DuckDB type}`` of ``spec``'s source; ``DatasetUnavailable`` if unreadable."""
    work = new_work_dir(state_dir)
    try:
        conn, source = open_source(spec, work, threads=threads, memory_limit=memory_limit)
        try:
            rows = conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()  # noqa: S608
        finally:
            conn.close()
    except duckdb.Error:
        raise DatasetUnavailable("the dataset source could not be read") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {str(r[0]): str(r[1]) for r in rows}


def schema_problems(spec: DatasetSpec, schema: dict[str, str]) -> list[str]:
    """Every declared column (and the privacy unit) missing from ``schema`` or of a wrong type."""
    by_name = {name.lower(): kind for name, kind in schema.items()}
    cols = list(spec.columns)
    if spec.column(spec.privacy_unit) is None:
        cols.insert(0, ColumnSpec(name=spec.privacy_unit, type="identifier"))
    problems = []
    for col in cols:
        found = by_name.get(col.name.lower())
        if found is None:
            problems.append(f"dataset {spec.name}: columns.{col.name}: not found in the source")
        elif not fits(col.type, found):
            problems.append(
                f"dataset {spec.name}: columns.{col.name}: declared {col.type}, but the source"
                f" column is {found} (needs {_NEEDS[col.type]})"
            )
    return problems


def source_problems(spec: DatasetSpec, state_dir: Path) -> list[str]:
    """``schema_problems`` of the source, or one problem if its schema cannot be read."""
    try:
        schema = source_schema(spec, state_dir)
    except DatasetUnavailable:
        return [f"dataset {spec.name}: source: cannot be read as a table"]
    return schema_problems(spec, schema)


async def column_problems(pool: ChildPool, spec: DatasetSpec, state_dir: Path) -> list[str]:
    """``source_problems`` run in a child process of ``pool`` within ``SCHEMA_TIMEOUT_S``."""
    try:
        problems: list[str] = await pool.call(SCHEMA_TIMEOUT_S, source_problems, spec, state_dir)
    except DatasetUnavailable:
        return [f"dataset {spec.name}: source: cannot be read as a table in time"]
    return problems


async def proposal_schema(pool: ChildPool, spec: DatasetSpec, state_dir: Path) -> dict[str, str]:
    """``source_schema`` run in a child process of ``pool`` within ``SCHEMA_TIMEOUT_S``, for a
    file a steward proposes to register; ``PolicyFileError`` if it cannot be read."""
    try:
        schema: dict[str, str] = await pool.call(SCHEMA_TIMEOUT_S, source_schema, spec, state_dir)
    except DatasetUnavailable:
        raise PolicyFileError(["source: cannot be read as a table"]) from None
    return schema


def fits(declared: str, duckdb_type: str) -> bool:
    """Whether a source column of ``duckdb_type`` can hold a column declared ``declared``."""
    kind = duckdb_type.upper()
    if declared in ("int", "float"):
        return bool(_NUMERIC.match(kind))
    if declared == "date":
        return bool(_DATE.match(kind))
    return not _NOT_TEXT.search(kind)

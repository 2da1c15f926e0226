"""Datasets with hostile values, registered on a live test gateway.

``HostileRow`` values go into a real Parquet file written by DuckDB (so dates beyond year 9999,
NaN and infinities are stored as DuckDB stores them), registered as an admin ``PUT`` does it
(the registry's ``check_dataset``, then ``commit``), and queried over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from enclave.audit.log import AuditFilter
from enclave.audit.record import AuditDraft
from enclave.charged import FAILED_REASON, TIMEOUT_REASON

DATE_BOUNDS = ["2000-01-01", "2030-12-31"]


@dataclass(frozen=True)
class HostileRow:
    pid: str | None
    g: str | None = "a"
    x: int | None = 0
    y: float | None = 0.0
    d: str | None = "2020-01-01"  # text: DuckDB reads dates outside Python's range
    age: int | None = 30


def write_rows(path: Path, rows: list[HostileRow]) -> None:
    """Write ``rows`` as Parquet; dates go in as text and DuckDB casts them (any year)."""
    table = pa.table(
        {
            "pid": pa.array([r.pid for r in rows], pa.string()),
            "g": pa.array([r.g for r in rows], pa.string()),
            "x": pa.array([r.x for r in rows], pa.int64()),
            "y": pa.array([r.y for r in rows], pa.float64()),
            "d": pa.array([r.d for r in rows], pa.string()),
            "age": pa.array([r.age for r in rows], pa.int64()),
        }
    )
    con = duckdb.connect()
    try:
        con.register("src", table)
        con.execute(
            "COPY (SELECT pid, g, x, y, CAST(d AS DATE) AS d, age FROM src) TO ? (FORMAT parquet)",
            [str(path)],
        )
    finally:
        con.close()


def copies(template: HostileRow, units: int) -> list[HostileRow]:
    """``units`` distinct units holding ``template``'s values (enough to pass selection)."""
    if template.pid is None:
        return [template] * units
    return [replace(template, pid=f"{template.pid}_{j}") for j in range(units)]


async def add_dataset(
    gw: Any,
    name: str,
    rows: list[HostileRow],
    *,
    k: int = 2,
    x_bounds: tuple[int, int] = (-10, 10),
    y_bounds: tuple[Any, Any] = (0, 100),
) -> None:
    """Write ``rows`` to ``<data_dir>/<name>.parquet`` and register the dataset ``name``."""
    data_dir = Path(gw.config.policies.data_dir)
    path = data_dir / f"{name}.parquet"
    write_rows(path, rows)
    body = {
        "name": name,
        "description": "hostile values",
        "source": str(path),
        "privacy_unit": "pid",
        "max_rows_per_unit": k,
        "min_tier": "standard",
        "columns": {
            "pid": {"type": "identifier"},
            "g": {"type": "category", "values": ["a", "b"]},
            "x": {"type": "int", "bounds": list(x_bounds)},
            "y": {"type": "float", "bounds": list(y_bounds)},
            "d": {"type": "date", "bounds": DATE_BOUNDS},
            "age": {"type": "int", "bounds": [0, 120]},
        },
    }
    draft = AuditDraft(action="dataset.update", outcome="ok", actor="root", roles=("admin",))
    registry = gw.services.registry
    await registry.commit(await registry.check_dataset(name, body), "root", draft)


async def charged(gw: Any, licence_id: str, dataset: str) -> Decimal:
    return (await gw.services.store.spent(licence_id, dataset, None)).epsilon_decimal


async def audited_charges(gw: Any, licence_id: str) -> Decimal:
    """The epsilon the audit trail says was charged to ``licence_id``: every record of a
    query that was released (not from the cache) or failed after reading data."""
    store = gw.services.store
    records = await store.audit_events(AuditFilter(licence_id=licence_id), 0, 1000)
    total = Decimal(0)
    for r in records:
        released = r.outcome == "ok" and not r.cached
        failed = r.outcome == "error" and r.reason in (FAILED_REASON, TIMEOUT_REASON)
        if r.action == "query" and (released or failed):
            total += Decimal(repr(r.epsilon))
    return total

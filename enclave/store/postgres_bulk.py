"""PostgreSQL side of ``bulk.py``: a consistent read snapshot, and a verbatim import.

The export is one ``REPEATABLE READ READ ONLY`` transaction (a stable snapshot while replicas
keep writing). The import is one transaction holding the chain lock, so no replica can append
while it runs; rows go in with ``COPY`` (fast), and at the end ``chain_head`` and the ledger's
id sequence are moved past the copied rows so later appends continue the same chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from enclave.errors import Conflict
from enclave.store.bulk import TABLES, Row, TableSpec, check_spec, keyset_sql, neutral_row
from enclave.store.postgres_ops import lock_chain

Conn = Any  # asyncpg.Connection


class PgReader:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def rows(self, spec: TableSpec, batch: int = 5000) -> AsyncIterator[list[Row]]:
        after: Row | None = None
        positions = spec.key_positions
        while True:
            if after is None:
                sql, args = keyset_sql(spec, ["$1"], first=True), [batch]
            else:
                marks = [f"${i}" for i in range(1, len(after) + 2)]
                sql, args = keyset_sql(spec, marks, first=False), [*after, batch]
            found = [neutral_row(spec, r) for r in await self._conn.fetch(sql, *args)]
            if found:
                yield found
            if len(found) < batch:
                return
            after = tuple(found[-1][i] for i in positions)


class PgWriter:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def write(self, spec: TableSpec, rows: Sequence[Row]) -> None:
        check_spec(spec)
        if rows:
            await self._conn.copy_records_to_table(
                spec.name, records=list(rows), columns=list(spec.column_names)
            )


async def begin_import(conn: Conn) -> None:
    """Lock the chain and check that every table is empty (``Conflict`` otherwise). Call
    inside the import's transaction."""
    await lock_chain(conn)
    for spec in TABLES:
        if await conn.fetchval(f"SELECT 1 FROM {spec.name} LIMIT 1") is not None:  # noqa: S608
            raise Conflict(f"the target store is not empty (table {spec.name} has rows)")


async def finish_import(conn: Conn) -> None:
    await conn.execute("UPDATE chain_head SET seq = (SELECT COALESCE(MAX(seq), 0) FROM audit)")
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('ledger', 'id'), COALESCE(MAX(id), 0) + 1, false)"
        " FROM ledger"
    )

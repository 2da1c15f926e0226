"""SQLite side of ``bulk.py``: a consistent read snapshot, and a verbatim import.

Both run on the store's single worker thread, one page per call. The export holds one read
transaction for its whole length (WAL gives it a stable snapshot while others write); the
import holds one ``BEGIN IMMEDIATE`` transaction, so a copy lands whole or not at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from enclave.errors import Conflict
from enclave.store.bulk import TABLES, Row, TableSpec, check_spec, keyset_sql, neutral_row


def page(conn: sqlite3.Connection, spec: TableSpec, after: Row | None, batch: int) -> list[Row]:
    sql = keyset_sql(spec, ["?"] * (len(spec.key) + 1), first=after is None)
    args = [*(after or ()), batch]
    return [neutral_row(spec, r) for r in conn.execute(sql, args).fetchall()]


def begin_import(conn: sqlite3.Connection) -> None:
    """Start the import transaction; ``Conflict`` (and nothing held) unless every table is
    empty."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for spec in TABLES:
            found = conn.execute(f"SELECT 1 FROM {spec.name} LIMIT 1").fetchone()  # noqa: S608
            if found is not None:
                raise Conflict(f"the target store is not empty (table {spec.name} has rows)")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return value


def insert(conn: sqlite3.Connection, spec: TableSpec, rows: Sequence[Row]) -> None:
    check_spec(spec)
    marks = ", ".join("?" for _ in spec.columns)
    sql = f"INSERT INTO {spec.name} ({', '.join(spec.column_names)}) VALUES ({marks})"  # noqa: S608
    conn.executemany(sql, [tuple(_value(v) for v in row) for row in rows])


def finish(conn: sqlite3.Connection, commit: bool) -> None:
    if conn.in_transaction:
        conn.execute("COMMIT" if commit else "ROLLBACK")

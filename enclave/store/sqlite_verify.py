"""Verifying a SQLite store's audit chain on every core: the worker that reads a seq range
from the database file (``audit/parallel.py`` runs ``python -m enclave.store.sqlite_verify``
once per worker, and joins what they print).

Only chains of more than ``PARALLEL_MIN`` records in a database *file* are verified so; WAL
lets any number of read-only connections work beside the gateway's writer. Why this is safe:
the ``audit`` table is append-only (triggers refuse UPDATE and DELETE), and only seq ``1..n``
is read, ``n`` being the head when the verification started; so the ranges read at slightly
different moments still describe one prefix of the chain. Records appended meanwhile are left
for the next verification, as an export leaves them.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from enclave.audit.parallel import ReadRows, worker_main
from enclave.audit.record import FIELDS

PARALLEL_MIN = 150_000
FETCH = 5_000  # rows per fetchmany
_SELECT = f"SELECT {', '.join(FIELDS)} FROM audit WHERE seq >= ? AND seq <= ? ORDER BY seq"  # noqa: S608


def iter_rows(conn: sqlite3.Connection, start: int, end: int) -> Iterator[tuple[Any, ...]]:
    """Raw rows (tuples in ``FIELDS`` order) with seq in ``[start, end]``, in order."""
    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute(_SELECT, (start, end))
    while rows := cursor.fetchmany(FETCH):
        yield from rows


def connect_readonly(path: str) -> sqlite3.Connection:
    return sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)


def _open(path: str) -> tuple[ReadRows, Callable[[], None]]:
    conn = connect_readonly(path)
    return (lambda start, end: iter_rows(conn, start, end)), conn.close


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:], _open))

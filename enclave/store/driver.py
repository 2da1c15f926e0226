"""The driver interface: what a database supplies so the store's rules run on it
(``docs/store-design.md``, "The driver interface").

A transaction is written once as an ``async`` function of a ``Tx``, with ``?`` placeholders
(a driver that numbers its parameters translates them with ``numbered``, so no statement may
hold a ``?`` of its own) and rows read by position; SQL that differs between databases is
taken from ``tx.dialect``. A ``Driver`` runs such a function in a ``read``, a ``write`` of a
``Mode`` (committed when the function returns, rolled back if it raises), or a long
``session`` for ``enclave store copy``. It raises its own exceptions (``errors``);
``base.Store`` maps them once for every database.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

from enclave.audit.chain import VerifyResult
from enclave.audit.log import Progress

T = TypeVar("T")
Row = Sequence[Any]


class Tx(Protocol):
    """One connection inside (or outside) a transaction; SQL uses ``?`` placeholders."""

    dialect: Dialect

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` verbatim into ``table`` (bulk import; PostgreSQL uses ``COPY``)."""


Work = Callable[[Tx], Coroutine[Any, Any, T]]
#: How a write is serialized and committed (see the module docstring).
Mode = Literal["chain", "rows", "volatile"]
#: A migration step: a statement, or an async function run in the migration's transaction.
Step = str | Callable[[Tx], Awaitable[None]]
Migrations = tuple[tuple[int, tuple[Step, ...]], ...]


@dataclass(frozen=True)
class Dialect:
    """The SQL that differs between databases (everything else in ``ops.py`` is shared)."""

    #: ``SELECT`` prefix returning (epsilon, delta) ledger rows to add up, by
    #: ``WHERE licence_id = ? AND dataset = ?``: SQLite returns every row (its ``SUM`` raises
    #: on 64-bit overflow; Python ints do not), PostgreSQL one exact ``SUM``.
    ledger_sum: str
    #: Run in the migration's transaction before anything else (several replicas may start).
    migration_lock: str | None = None
    #: Run after each audit insert with the new ``seq`` (PostgreSQL's ``chain_head``).
    after_append: str | None = None
    #: Run at the end of a bulk import (move sequences and ``chain_head`` past the rows).
    after_import: tuple[str, ...] = ()
    #: Locks budget keys until the transaction ends, for writes that are not chained
    #: (``reserve.lock``): its one parameter is the sorted list of 64-bit lock ids, taken in
    #: that order; None: every write already excludes the others (SQLite's one write lock).
    budget_lock: str | None = None
    #: How a budget reservation commits (``reserve.py``): ``"volatile"`` only where a commit
    #: can be lost solely together with every process using the database (a local SQLite
    #: file: an OS crash or power loss), else ``"rows"`` (a PostgreSQL server can crash alone).
    reserve_mode: Mode = "rows"


class Driver(Protocol):
    dialect: Dialect
    errors: tuple[type[BaseException], ...]  # what "the database failed" looks like

    async def open(self) -> None:
        """Connect and migrate (``ops.migrate``)."""

    async def close(self) -> None: ...
    async def read(self, work: Work[T]) -> T: ...
    async def write(self, work: Work[T], mode: Mode) -> T: ...
    def session(self, *, snapshot: bool) -> AbstractAsyncContextManager[Tx]:
        """``snapshot=True``: a read-only consistent snapshot, rolled back at the end;
        ``False``: one chained write transaction, committed if the block ends normally."""

    async def verify_parallel(
        self, n: int, watch: int, progress: Progress | None, every: int
    ) -> tuple[VerifyResult, str | None] | None:
        """Verify seq ``1..n`` on several cores if this database can (else None)."""


_MARK = re.compile(r"\?")


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, …`` (our SQL holds no ``?`` inside a literal)."""
    count = iter(range(1, 10_000))
    return _MARK.sub(lambda _m: f"${next(count)}", sql)


def marks(count: int) -> str:
    """``count`` placeholders: ``?, ?, ?``."""
    return ", ".join("?" * count)

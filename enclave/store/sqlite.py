"""The default store: one SQLite file, driven by stdlib ``sqlite3`` on one worker thread.

``sqlite3`` calls block, so they stay off the event loop: a single-thread executor owns the
one connection, and every access is serialized without locks. A whole transaction runs in
*one* hop to that thread: its ``Tx`` calls never suspend here, so ``_drive`` runs the
coroutine to its end on the thread. Reads that arrive together share one hop (``group.py``),
each run and answered alone. Across processes sharing the file, ``BEGIN IMMEDIATE`` takes
the write lock before anything is read. ``docs/store-design.md`` has the measurements.

Settings: WAL (readers do not block the writer), ``synchronous=FULL`` (a committed audit
record survives power loss; ``"volatile"`` writes commit with ``NORMAL``), foreign keys on,
and a busy timeout so a second process waits for the lock instead of failing at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from enclave.audit.chain import VerifyResult
from enclave.audit.log import Progress
from enclave.audit.parallel import verify_in_workers
from enclave.errors import StoreUnavailable
from enclave.models import utcnow
from enclave.store import ops, schema, sqlite_verify
from enclave.store.base import Store
from enclave.store.driver import Dialect, Mode, Row, Tx, Work, marks
from enclave.store.group import GroupCommit

T = TypeVar("T")

DIALECT = Dialect(
    ledger_sum="SELECT epsilon_units, delta_units FROM ledger",
    reserve_mode="volatile",
)


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its ``Tx`` is synchronous) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("a SQLite transaction awaited something other than its connection")


class _ConnTx:
    """``Tx`` on the connection, for code running on the worker thread."""

    dialect = DIALECT

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._conn.execute(sql, args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._conn.execute(sql, args).fetchone()
        return row

    async def execute(self, sql: str, *args: Any) -> None:
        self._conn.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(len(columns))})"  # noqa: S608
        self._conn.executemany(sql, rows)


class _HopTx:
    """``Tx`` for a long session: every call is one hop to the worker thread."""

    dialect = DIALECT

    def __init__(self, driver: SqliteDriver) -> None:
        self._driver = driver

    async def _hop(self, work: Work[T]) -> T:
        return await self._driver.hop(work)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._hop(lambda tx: tx.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._hop(lambda tx: tx.fetchrow(sql, *args))

    async def execute(self, sql: str, *args: Any) -> None:
        await self._hop(lambda tx: tx.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._hop(lambda tx: tx.executemany(sql, rows))

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        await self._hop(lambda tx: tx.copy_rows(table, columns, rows))


class SqliteDriver:
    dialect = DIALECT
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reads: GroupCommit[Work[Any], tuple[bool, Any]] = GroupCommit(self._read_batch)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enclave-sqlite")
        try:
            await self._call(self._connect)
        except BaseException as exc:
            self._executor.shutdown(wait=True)
            self._executor = None
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreUnavailable("the state store cannot be opened") from exc
            raise

    def _connect(self) -> None:
        """Open, switch to WAL and migrate. Several processes opening one new file at once can
        get "database is locked" from the WAL switch or its recovery without SQLite calling the
        busy handler, so a locked open is retried with backoff for up to the busy timeout."""
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        pause = 0.01
        while True:
            try:
                self._connect_once()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _connect_once(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._in_tx(conn, lambda tx: ops.migrate(tx, schema.SQLITE), "BEGIN IMMEDIATE")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        await self._reads.drain()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable("the state store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("store closed")
        return self._conn

    @staticmethod
    def _in_tx(conn: sqlite3.Connection, work: Work[T], begin: str) -> T:
        """``begin`` … ``COMMIT`` around ``work`` on this thread; any exception rolls back."""
        conn.execute(begin)
        try:
            result = _drive(work(_ConnTx(conn)))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def read(self, work: Work[T]) -> T:
        """Reads that arrive together share one hop to the worker thread (``group.py``);
        each still runs alone, as its own statements, and gets its own result or error."""
        ok, value = await self._reads.submit(work)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def _read_batch(self, works: Sequence[Work[Any]]) -> list[tuple[bool, Any]]:
        def run() -> list[tuple[bool, Any]]:
            tx = _ConnTx(self._connection())
            done: list[tuple[bool, Any]] = []
            for work in works:
                try:
                    done.append((True, _drive(work(tx))))
                except Exception as exc:  # handed to that read's caller
                    done.append((False, exc))
            return done

        return await self._call(run)

    async def hop(self, work: Work[T]) -> T:
        """``work`` alone in one hop (a long session's statements, in order)."""
        return await self._call(lambda: _drive(work(_ConnTx(self._connection()))))

    async def write(self, work: Work[T], mode: Mode) -> T:
        """``BEGIN IMMEDIATE`` for every write (SQLite has one write lock); ``"volatile"``
        commits with ``synchronous = NORMAL``."""
        volatile = mode == "volatile"

        def run() -> T:
            conn = self._connection()
            if volatile:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                result = self._in_tx(conn, work, "BEGIN IMMEDIATE")
            finally:
                if volatile:
                    conn.execute("PRAGMA synchronous = FULL")
            return result

        return await self._call(run)

    @asynccontextmanager
    async def session(self, *, snapshot: bool) -> AsyncIterator[Tx]:
        """A read transaction (WAL gives it a stable snapshot while others write), or one
        ``BEGIN IMMEDIATE`` import; each statement inside is one hop."""
        tx = _HopTx(self)
        await tx.execute("BEGIN" if snapshot else "BEGIN IMMEDIATE")
        try:
            yield tx
        except BaseException:
            await self._call(lambda: self._end(commit=False))
            raise
        await self._call(lambda: self._end(commit=not snapshot))

    def _end(self, commit: bool) -> None:
        conn = self._connection()
        if conn.in_transaction:
            conn.execute("COMMIT" if commit else "ROLLBACK")

    async def verify_parallel(
        self, n: int, watch: int, progress: Progress | None, every: int
    ) -> tuple[VerifyResult, str | None] | None:
        """Long chains in a file are verified by worker processes (``sqlite_verify``)."""
        plain_file = self.path != ":memory:" and not self.path.startswith("file:")
        if n < sqlite_verify.PARALLEL_MIN or not plain_file or not sys.executable:
            return None
        return await verify_in_workers(sqlite_verify.__name__, self.path, n, watch, progress, every)


class SqliteStore(Store):
    """``Store`` on a SQLite file (``":memory:"`` works too, for one process)."""

    def __init__(
        self, path: str, *, busy_timeout_ms: int = 15000, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.driver: SqliteDriver = SqliteDriver(path, busy_timeout_ms)
        super().__init__(self.driver, clock)

    @property
    def path(self) -> str:
        return self.driver.path

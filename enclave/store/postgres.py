"""The PostgreSQL driver (optional extra ``enclave-gateway[postgres]``): asyncpg and a pool.

For several gateway replicas on one database. The store's rules are ``ops.py``'s, as on
SQLite (the same suite runs on both); what differs is how writers are serialized: every
chained write locks the one-row ``chain_head`` table inside its transaction, so there is one
linear chain and no overspend however many replicas append at once. Reads take no lock.

Failures: a connection that drops, a server that is down or restarting, a statement that the
server refuses all surface as asyncpg errors (``errors``), which ``base.Store`` maps to
``AuditUnavailable`` (writes; the transaction rolls back, nothing is committed) or
``StoreUnavailable`` (reads). Recovery is automatic: the pool discards broken connections and
opens new ones on the next acquire, and if the pool itself could not be created it is retried
on the next call. A write whose COMMIT was sent but not acknowledged is reported as
``AuditUnavailable``; its outcome is then unknown to this process, as with any database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from enclave.audit.chain import VerifyResult
from enclave.audit.log import Progress
from enclave.errors import StoreUnavailable
from enclave.models import utcnow
from enclave.store import ops, schema
from enclave.store.base import Store
from enclave.store.driver import Dialect, Mode, Row, Tx, Work, numbered

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Errors after which a connection cannot be trusted (a dropped socket, a protocol left
#: mid-operation by a server-side termination): it is terminated, and the pool replaces it.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)
#: What "the database is unavailable" looks like from asyncpg (server errors included).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *CONNECTION_ERRORS)
#: How long ``open()`` waits for a server that is not up yet before giving up.
STARTUP_WAIT_S = 15.0
#: Errors at start that may clear by themselves (server not up yet, or still starting).
TRANSIENT_START_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


DIALECT = Dialect(
    # SUM(bigint) is an exact numeric in PostgreSQL: sum there, not row by row in Python.
    ledger_sum="SELECT COALESCE(SUM(epsilon_units), 0), COALESCE(SUM(delta_units), 0) FROM ledger",
    migration_lock=f"SELECT pg_advisory_xact_lock({schema.MIGRATION_LOCK})",
    after_append="UPDATE chain_head SET seq = ? WHERE id = 1",
    # budget keys' locks (``reserve.lock``): one statement, the ids in the array's order
    budget_lock="SELECT pg_advisory_xact_lock(k) FROM unnest(?::bigint[]) WITH ORDINALITY"
    " AS u(k, i) ORDER BY i",
    after_import=(
        "UPDATE chain_head SET seq = (SELECT COALESCE(MAX(seq), 0) FROM audit)",
        "SELECT setval(pg_get_serial_sequence('ledger', 'id'), COALESCE(MAX(id), 0) + 1, false)"
        " FROM ledger",
    ),
)
LOCK_CHAIN = "SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE"


class _PgTx:
    """``Tx`` on one asyncpg connection."""

    dialect = DIALECT

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(numbered(sql), *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._conn.fetchrow(numbered(sql), *args)
        return row

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(numbered(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(numbered(sql), rows)

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        await self._conn.copy_records_to_table(table, records=list(rows), columns=list(columns))


class PostgresDriver:
    dialect = DIALECT
    errors = DRIVER_ERRORS

    def __init__(
        self, url: str, min_size: int, max_size: int, timeout_s: float, startup_wait_s: float | None
    ) -> None:
        self.url = url
        self._startup_wait = STARTUP_WAIT_S if startup_wait_s is None else startup_wait_s
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout_s
        self._pool: Any = None
        self._opened = False
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the pool and run migrations.

        Start-up decision: wait up to ``startup_wait_s`` for a server that is not up yet
        (refused, timing out, or "starting up"), logging each retry, then fail fast with
        ``StoreUnavailable`` naming the server (never the password): a gateway without its
        store cannot seed policy or serve anything useful, and a supervisor restarting it is
        clearer than a process that looks alive. Other errors (authentication, a missing
        database) fail at once. Once open, an outage is survived at runtime instead.
        """
        self._opened = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_wait
        delay = 0.5
        while True:
            try:
                await self._get_pool()
                return
            except DRIVER_ERRORS as exc:
                transient = isinstance(exc, TRANSIENT_START_ERRORS)
                if not transient or loop.time() + delay > deadline:
                    log.error("PostgreSQL at %s: cannot open (%s)", self.where, type(exc).__name__)
                    raise StoreUnavailable(
                        f"the state store (PostgreSQL at {self.where}) cannot be opened"
                    ) from exc
                log.warning(
                    "PostgreSQL at %s is not reachable yet (%s); retrying in %.1fs",
                    self.where, type(exc).__name__, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)

    @property
    def where(self) -> str:
        """``host:port/database`` of the URL, without user or password (for messages)."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 5432}{parts.path or '/'}"

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if not self._opened:
            raise StoreUnavailable("the state store is not open")
        async with self._lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    command_timeout=self._timeout,
                    timeout=self._timeout,
                )
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await ops.migrate(_PgTx(conn), schema.POSTGRES)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def close(self) -> None:
        self._opened = False
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        pool = await self._get_pool()
        async with pool.acquire(timeout=self._timeout) as conn:
            try:
                return await fn(conn)
            except CONNECTION_ERRORS:
                conn.terminate()
                raise

    async def read(self, work: Work[T]) -> T:
        return await self._run(lambda conn: work(_PgTx(conn)))

    async def write(self, work: Work[T], mode: Mode) -> T:
        """One transaction; ``"chain"``: under the ``chain_head`` row lock; ``"volatile"``:
        committed without waiting for the WAL flush."""
        if not self._opened:
            raise StoreUnavailable("the state store is not open")

        async def run(conn: Any) -> T:
            async with conn.transaction():
                if mode == "chain":
                    await conn.execute(LOCK_CHAIN)
                if mode == "volatile":
                    await conn.execute("SET LOCAL synchronous_commit TO OFF")
                result = await work(_PgTx(conn))
            return result

        return await self._run(run)

    @asynccontextmanager
    async def session(self, *, snapshot: bool) -> AsyncIterator[Tx]:
        """A ``REPEATABLE READ READ ONLY`` snapshot (stable while replicas keep writing), or
        one transaction under the chain lock (no replica can append while it runs)."""
        pool = await self._get_pool()
        async with pool.acquire(timeout=self._timeout) as conn:
            if snapshot:
                tx = conn.transaction(isolation="repeatable_read", readonly=True)
                await tx.start()
                try:
                    yield _PgTx(conn)
                finally:
                    await tx.rollback()
            else:
                async with conn.transaction():
                    await conn.execute(LOCK_CHAIN)
                    yield _PgTx(conn)

    async def verify_parallel(
        self, n: int, watch: int, progress: Progress | None, every: int
    ) -> tuple[VerifyResult, str | None] | None:
        return None  # one process verifies as fast as the server sends rows


class PostgresStore(Store):
    """``Store`` on PostgreSQL at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout_s: float = 10.0,
        startup_wait_s: float | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.driver: PostgresDriver = PostgresDriver(
            url, min_size, max_size, timeout_s, startup_wait_s
        )
        super().__init__(self.driver, clock)

    @property
    def where(self) -> str:
        return self.driver.where

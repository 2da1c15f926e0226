"""The PostgreSQL store (optional extra ``enclave-gateway[postgres]``): asyncpg and a pool.

For several gateway replicas on one database. Behaviour matches ``sqlite.py`` exactly (the
same suite runs on both); what differs is how writers are serialized: every audited write
locks the one-row ``chain_head`` table inside its transaction (``postgres_ops``), so there is
one linear chain and no overspend however many replicas append at once.

Failures: a connection that drops, a server that is down or restarting, a statement that the
server refuses while writing all become ``AuditUnavailable`` (writes; the transaction rolls
back, nothing is committed) or ``StoreUnavailable`` (reads), with no driver text in
``detail``. Recovery is automatic: the pool discards broken connections and opens new ones on
the next acquire, and if the pool itself could not be created it is retried on the next call.
A write whose COMMIT was sent but not acknowledged is reported as ``AuditUnavailable``; its
outcome is then unknown to this process, as with any database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from enclave.audit.chain import VerifyResult
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.errors import AuditUnavailable, EnclaveError, StoreUnavailable
from enclave.ledger.grid import Amount
from enclave.models import Licence, utcnow
from enclave.store import codec, jobs
from enclave.store import postgres_bulk as bulk
from enclave.store import postgres_ops as ops
from enclave.store.base import (
    AuditFilter,
    CacheEntry,
    Charge,
    Debited,
    PolicyKind,
    PolicyVersion,
)
from enclave.store.chain_rows import Progress, SegmentJoiner, verify_segment
from enclave.store.codec import SummaryRow
from enclave.store.jobs import JobOp

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


class PostgresStore:
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
        self.url = url
        self._startup_wait = STARTUP_WAIT_S if startup_wait_s is None else startup_wait_s
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout_s
        self._clock = clock
        self._pool: Any = None
        self._opened = False
        self._lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------

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
                    async with pool.acquire() as conn:
                        await ops.migrate(conn)
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

    async def ping(self) -> None:
        await self._read(lambda c: c.fetchval("SELECT 1"))

    # --- plumbing --------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        pool = await self._get_pool()
        async with pool.acquire(timeout=self._timeout) as conn:
            try:
                return await fn(conn)
            except CONNECTION_ERRORS:
                conn.terminate()
                raise

    async def _read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await self._run(fn)
        except EnclaveError:
            raise
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable("the state store cannot be read") from exc

    async def _write(self, fn: Callable[[Any, dt.datetime], Awaitable[T]]) -> T:
        if not self._opened:
            raise AuditUnavailable("the state store is not open")
        try:
            return await self._run(lambda conn: fn(conn, self._clock()))
        except EnclaveError as exc:
            if isinstance(exc, StoreUnavailable):
                raise AuditUnavailable("the audit log cannot be written") from exc
            raise
        except DRIVER_ERRORS as exc:
            raise AuditUnavailable("the audit log cannot be written") from exc

    # --- licences --------------------------------------------------------------------------

    async def insert_licence(self, licence: Licence, audit: AuditDraft) -> AuditRecord:
        return await self._write(lambda c, now: ops.insert_licence(c, licence, audit, now))

    async def update_licence(
        self, licence_id: str, changes: dict[str, Any], audit: AuditDraft
    ) -> tuple[Licence, AuditRecord]:
        changes = dict(changes)
        return await self._write(
            lambda c, now: ops.update_licence(c, licence_id, changes, audit, now)
        )

    async def get_licence(self, licence_id: str) -> Licence | None:
        return await self._read(lambda c: ops.get_licence(c, licence_id))

    async def list_licences(self, subject: str | None = None) -> list[Licence]:
        if subject is None:
            return await self._read(lambda c: ops.licences(c, "ORDER BY created_at, id"))
        where = "WHERE subject = $1 ORDER BY created_at, id"
        return await self._read(lambda c: ops.licences(c, where, subject))

    async def licences_for(self, subject: str) -> list[Licence]:
        where = "WHERE subject = $1 ORDER BY created_at DESC, id DESC"
        return await self._read(lambda c: ops.licences(c, where, subject))

    # --- revocations -----------------------------------------------------------------------

    async def add_revocation(self, jti: str, reason: str, audit: AuditDraft) -> AuditRecord:
        return await self._write(lambda c, now: ops.add_revocation(c, jti, reason, audit, now))

    async def is_revoked(self, jti: str) -> bool:
        sql = "SELECT 1 FROM revocations WHERE jti = $1"
        return await self._read(lambda c: c.fetchval(sql, jti)) is not None

    # --- policies --------------------------------------------------------------------------

    async def put_policy(
        self,
        kind: PolicyKind,
        name: str,
        body: dict[str, Any],
        actor: str,
        audit: AuditDraft | None,
        expected_version: int | None = None,
    ) -> tuple[PolicyVersion, AuditRecord | None]:
        body = dict(body)
        return await self._write(
            lambda c, now: ops.put_policy(c, kind, name, body, actor, audit, now, expected_version)
        )

    async def get_policy(
        self, kind: PolicyKind, name: str, version: int | None = None
    ) -> PolicyVersion | None:
        if version is None:
            sql = "SELECT * FROM policies WHERE kind = $1 AND name = $2"
            row = await self._read(
                lambda c: c.fetchrow(sql + " ORDER BY version DESC LIMIT 1", kind, name)
            )
        else:
            sql = "SELECT * FROM policies WHERE kind = $1 AND name = $2 AND version = $3"
            row = await self._read(lambda c: c.fetchrow(sql, kind, name, version))
        return None if row is None else codec.policy_from_row(row)

    async def list_policies(self, kind: PolicyKind) -> list[PolicyVersion]:
        rows = await self._read(lambda c: c.fetch(ops.LATEST_POLICIES, kind))
        return [codec.policy_from_row(r) for r in rows]

    async def policy_history(self, kind: PolicyKind, name: str) -> list[PolicyVersion]:
        sql = "SELECT * FROM policies WHERE kind = $1 AND name = $2 ORDER BY version"
        rows = await self._read(lambda c: c.fetch(sql, kind, name))
        return [codec.policy_from_row(r) for r in rows]

    # --- ledger and cache ------------------------------------------------------------------

    async def spent(self, licence_id: str, dataset: str, since: dt.datetime | None) -> Amount:
        return await self._read(lambda c: ops.spent(c, licence_id, dataset, since))

    async def spent_by_dataset(
        self, licence_id: str, since: dt.datetime | None = None
    ) -> dict[str, Amount]:
        """Extra: ``{dataset: spent}`` by a licence since ``since``."""
        return await self._read(lambda c: ops.spent_by_dataset(c, licence_id, since))

    async def get_cached(self, licence_id: str, cache_key: str) -> dict[str, Any] | None:
        return await self._read(lambda c: ops.get_cached(c, licence_id, cache_key))

    # --- the audit chain -------------------------------------------------------------------

    async def append(self, draft: AuditDraft) -> AuditRecord:
        return await self._write(lambda c, now: ops.append(c, draft, now))

    async def debit(
        self,
        draft: AuditDraft,
        charge: Charge,
        cache: CacheEntry | None = None,
        job: JobOp | None = None,
    ) -> Debited:
        return await self._write(lambda c, now: ops.debit(c, draft, charge, cache, now, job))

    # --- jobs (``store/jobs.py``) ------------------------------------------------------------

    async def job_read(self, op: JobOp) -> list[dict[str, Any]]:
        return await self._read(lambda c: jobs.apply_postgres(c, op))

    async def job_write(self, op: JobOp) -> list[dict[str, Any]]:
        async def write(c: Any, now: dt.datetime) -> list[dict[str, Any]]:
            async with c.transaction():
                return await jobs.apply_postgres(c, op)

        return await self._write(write)

    async def audit_events(
        self, flt: AuditFilter, after_seq: int = 0, limit: int = 100
    ) -> list[AuditRecord]:
        return await self._read(lambda c: ops.audit_events(c, flt, after_seq, limit))

    async def audit_iter(self, batch: int = 1000) -> AsyncIterator[AuditRecord]:
        """Every record in ``seq`` order, ``batch`` at a time (memory stays bounded)."""
        batch = max(1, batch)
        after = 0
        everything = AuditFilter()
        while True:
            rows = await self.audit_events(everything, after, batch)
            for record in rows:
                yield record
            if len(rows) < batch:
                return
            after = rows[-1].seq

    async def audit_head(self) -> tuple[int, str]:
        seq, hash_, _ = await self._read(ops.head)
        return seq, hash_

    async def audit_rows(self, start: int, end: int) -> list[Any]:
        """Extra: raw rows (``chain_rows.ROW_COLUMNS`` order) with seq in ``[start, end]``."""
        return await self._read(partial(ops.audit_range, start=start, end=end))

    async def audit_verify(
        self,
        upto: int | None = None,
        progress: Progress | None = None,
        watch: int = -1,
        every: int = 100_000,
    ) -> tuple[VerifyResult, str | None]:
        """Extra: verify records ``1..min(upto, head)`` from raw rows (``chain_rows``), 5,000
        per fetch; the verdict equals ``ChainVerifier``'s over ``audit_iter``."""
        n = (await self.audit_head())[0]
        n = n if upto is None else max(0, min(n, upto))
        joiner = SegmentJoiner(watch, progress, every)
        for start in range(1, n + 1, 5000):
            end = min(start + 4999, n)
            rows = await self.audit_rows(start, end)
            if not joiner.add(verify_segment(rows, start, end, watch)):
                break
        return joiner.result()

    async def audit_summary(
        self, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[SummaryRow]:
        """Extra: exact spend and release/cache-hit/refusal/error counts per actor and dataset
        in ``[since, until)``."""
        return await self._read(lambda c: ops.audit_summary(c, since, until))

    # --- extras: seeding, schema, copy ------------------------------------------------------

    async def seed_policies(
        self, items: Sequence[tuple[PolicyKind, str, dict[str, Any]]], actor: str
    ) -> bool:
        """Version 1 of every item, only if the store holds no policy; True if written
        (atomic across replicas: see ``postgres_ops.seed_policies``)."""
        items = [(k, n, dict(b)) for k, n, b in items]
        return await self._write(lambda c, now: ops.seed_policies(c, items, actor, now))

    async def shared_secret(self, name: str, proposed: bytes) -> bytes:
        """The secret ``name`` every process on this store shares (e.g. the truncation seed):
        the stored value, after storing ``proposed`` if there was none (first writer wins,
        never replaced). Not audited; ``StoreUnavailable`` on failure."""
        return await self._read(lambda c: ops.shared_secret(c, name, proposed, self._clock()))

    async def count_hits(
        self, keys: Sequence[str], win: int, sweep: bool = False
    ) -> dict[str, int]:
        """``Store.count_hits`` (``store/counters.py``); ``StoreUnavailable`` on failure."""
        ordered = sorted(keys)  # one lock order for every caller
        return await self._read(lambda c: ops.count_hits(c, ordered, win, sweep))

    async def schema_version(self) -> int:
        return await self._read(ops.schema_version)

    @asynccontextmanager
    async def export_snapshot(self) -> AsyncIterator[bulk.PgReader]:
        """A consistent read-only snapshot of every table (``bulk.BulkReader``)."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._timeout) as conn:
                tx = conn.transaction(isolation="repeatable_read", readonly=True)
                await tx.start()
                try:
                    yield bulk.PgReader(conn)
                finally:
                    await tx.rollback()
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable("the source store cannot be read") from exc

    @asynccontextmanager
    async def bulk_import(self) -> AsyncIterator[bulk.PgWriter]:
        """One transaction, under the chain lock, into an empty store (``Conflict``
        otherwise); rows are written verbatim and committed together at the end."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                await bulk.begin_import(conn)
                yield bulk.PgWriter(conn)
                await bulk.finish_import(conn)
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable("the target store cannot be written") from exc

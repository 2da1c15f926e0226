"""``Store``: the state store (licences, revocations, versioned policies, the budget ledger,
the release cache, grants, proposals, jobs and the audit chain), written once over any
``driver.Driver``; ``SqliteStore`` (``sqlite.py``, the default) and ``PostgresStore``
(``postgres.py``, for replicas) only choose the driver.

Most methods are one line of a table: the function of ``ops.py`` (or ``grants.py``,
``proposals.py``, ``jobs.py``) that the method runs, with that function's signature and
documented contract, and in which kind of transaction: a read (``_reads``) or a write of a
``driver.Mode`` at the store's clock (``_writes``: the function's second argument is the
time). The few written out here batch (``group.py``) or combine several calls.

Every audited write appends its record *in the same transaction* as the write itself, so a
change and its record land together or not at all; ``debit()`` is the query path's single
transaction (re-check the budget, debit, store the release for the cache, append the
record). Failures are mapped here, the same for every database: a driver error while
reading is ``StoreUnavailable``; while writing, ``AuditUnavailable`` for a chained write
(every one is audited, and nothing is committed) and ``StoreUnavailable`` otherwise. Their
``detail`` never carries the driver's message (it can quote SQL or values); the original is
chained for logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from enclave.audit.chain import VerifyResult
from enclave.audit.ledger_check import Problem
from enclave.audit.log import AuditFilter, AuditLog, Progress
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.audit.rows import verify_in_order
from enclave.errors import AuditUnavailable, BudgetExhausted, EnclaveError, StoreUnavailable
from enclave.governance.proposal import Decided, Decision, Proposal, Write, raise_if_expired
from enclave.ids import new_id
from enclave.jobs.job import JobOp
from enclave.ledger.charge import CacheEntry, Charge, Debited
from enclave.ledger.grid import Amount
from enclave.ledger.rule import SpentKey
from enclave.models import utcnow
from enclave.store import chain, jobs, ledger, ledger_audit, ops, reserve
from enclave.store import grants as grant_ops
from enclave.store import proposals as prop_ops
from enclave.store.bulk import Importer, Snapshot
from enclave.store.driver import Driver, Mode, Row, Tx, Work
from enclave.store.group import GroupCommit
from enclave.store.reserve import Hold

T = TypeVar("T")
P = ParamSpec("P")


def _reads(
    op: Callable[Concatenate[Tx, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
    """The ``Store`` method that runs ``op`` in a read."""

    async def method(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._read(lambda tx: op(tx, *args, **kwargs))

    method.__doc__ = op.__doc__
    return method


def _writes(
    op: Callable[Concatenate[Tx, dt.datetime, P], Coroutine[Any, Any, T]], mode: Mode = "chain"
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
    """The ``Store`` method that runs ``op`` in a write of ``mode``, at the store's time."""

    async def method(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._write(lambda tx: op(tx, self._clock(), *args, **kwargs), mode)

    method.__doc__ = op.__doc__
    return method


class Store(AuditLog):
    """The store over ``driver``. ``clock`` exists so tests can place records in time (budget
    periods); the default is ``models.utcnow``."""

    def __init__(self, driver: Driver, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.driver = driver
        self._clock = clock
        self.appends: GroupCommit[chain.Entry, Debited | BudgetExhausted] = GroupCommit(
            self._commit_entries
        )
        self.reservations: GroupCommit[Hold, Charge | BudgetExhausted] = GroupCommit(
            self._reserve_holds
        )
        self.counters: GroupCommit[ops.Hits, dict[str, int]] = GroupCommit(self._count_batch)

    async def open(self) -> None:
        """Connect and migrate (``StoreUnavailable`` if the database cannot be opened)."""
        await self.driver.open()

    async def close(self) -> None:
        await self.counters.drain()
        await self.reservations.drain()
        await self.appends.drain()
        await self.driver.close()

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""
        await self._read(lambda tx: tx.fetchrow("SELECT 1"))

    # --- plumbing --------------------------------------------------------------------------

    async def _read(self, work: Work[T]) -> T:
        try:
            return await self.driver.read(work)
        except self.driver.errors as exc:
            raise StoreUnavailable("the state store cannot be read") from exc

    async def _write(self, work: Work[T], mode: Mode = "chain") -> T:
        chain = mode == "chain"
        try:
            return await self.driver.write(work, mode)
        except EnclaveError as exc:
            if chain and isinstance(exc, StoreUnavailable):  # not open, or cannot connect
                raise AuditUnavailable("the audit log cannot be written") from exc
            raise
        except self.driver.errors as exc:
            if chain:
                raise AuditUnavailable("the audit log cannot be written") from exc
            raise StoreUnavailable("the state store cannot be written") from exc

    # --- the table: each method runs one function in a read or a write -----------------------

    insert_licence = _writes(ops.insert_licence)
    insert_licences = _writes(ops.insert_licences)
    update_licence = _writes(ops.update_licence)
    get_licence = _reads(ops.get_licence)
    list_licences = _reads(ops.list_licences)
    licences_for = _reads(ops.licences_for)
    add_revocation = _writes(ops.add_revocation)
    is_revoked = _reads(ops.is_revoked)
    put_policy = _writes(ops.put_policy)
    seed_policies = _writes(ops.seed_policies)
    get_policy = _reads(ops.get_policy)
    list_policies = _reads(ops.list_policies)
    policy_history = _reads(ops.policy_history)
    shared_secret = _writes(ops.shared_secret, "rows")
    get_cached = _reads(ops.get_cached)
    add_grant = _writes(grant_ops.add_grant)
    grants = _reads(grant_ops.list_grants)
    subject_grants = _reads(grant_ops.subject_grants)
    add_proposal = _writes(prop_ops.add)
    get_proposal = _reads(prop_ops.get)
    list_proposals = _reads(prop_ops.list_all)
    suspend_organisation = _writes(prop_ops.suspend)
    issue_licence = _writes(prop_ops.issue)
    held_licences = _reads(prop_ops.held_by)
    hold_of = _reads(prop_ops.hold_of)
    job_read = _reads(jobs.apply)
    audit_events = _reads(ops.audit_events)
    audit_rows = _reads(ops.audit_rows)
    audit_summary = _reads(ops.audit_summary)
    schema_version = _reads(ops.schema_version)

    async def expire_proposals(self, audit: AuditDraft, now: dt.datetime) -> list[Proposal]:
        """Mark every pending proposal past its expiry at ``now`` expired, each with a
        ``proposal.expire`` record made from ``audit``; the ones it marked."""
        return await self._write(lambda tx: prop_ops.expire_due(tx, now, audit))

    async def decide_proposal(self, decision: Decision, write: Write | None) -> Decided:
        """One transaction (``proposals.decide``); ``ProposalExpired`` after marking a
        proposal past its expiry expired (committed)."""
        outcome = await self._write(lambda tx: prop_ops.decide(tx, self._clock(), decision, write))
        return raise_if_expired(outcome)

    async def job_write(self, op: JobOp) -> list[Row]:
        """Run ``op`` (``jobs.py``) in its own write transaction."""
        return await self._write(lambda tx: jobs.apply(tx, op), "rows")

    # --- shared secrets and rate counters --------------------------------------------------

    async def count_hits(
        self, keys: Sequence[str], win: int, sweep: bool = False
    ) -> dict[str, int]:
        """One hit more for each of ``keys`` in the one-minute window ``win``; the new counts
        (``ops.count_hits``, batched). ``sweep`` drops older windows."""
        return await self.counters.submit((sorted(set(keys)), win, sweep))

    async def _count_batch(self, batch: Sequence[ops.Hits]) -> list[dict[str, int]]:
        """One batch of ``counters`` (``group.py``): one non-durable transaction."""
        return await self._write(lambda tx: ops.count_hits(tx, batch), "volatile")

    # --- ledger, audit chain and reservations: batched (``group.py``) ---------------------

    async def spent(self, licence_id: str, dataset: str, since: dt.datetime | None) -> Amount:
        key: SpentKey = ("licence", licence_id, dataset, since)
        return (await self.spent_many([key]))[key]

    async def spent_many(self, keys: Collection[SpentKey]) -> dict[SpentKey, Amount]:
        """Every spend of ``keys`` in one read (``ledger.spent_many``)."""
        return await self._read(lambda tx: ledger.spent_many(tx, keys))

    def observe_commits(self, observe: Callable[[int], None]) -> None:
        """Call ``observe(n)`` after each group commit of ``n`` records (for metrics)."""
        self.appends.observe = observe

    async def append(self, draft: AuditDraft) -> AuditRecord:
        """Append the record; returns once it is committed (group commit with ``debit``)."""
        done = await self.appends.submit(chain.Entry(draft))
        if isinstance(done, BudgetExhausted):  # never: an entry without a charge always fits
            raise done
        return done.record

    async def debit(
        self,
        draft: AuditDraft,
        charge: Charge,
        cache: CacheEntry | None = None,
        job: JobOp | None = None,
    ) -> Debited:
        """One transaction (``chain.debit``): re-check ``charge`` against every layer's limit,
        counting everyone else's live reservations (``BudgetExhausted`` naming the first layer
        that no longer fits, nothing written), debit it (consuming ``charge.reservation``),
        store ``cache``, append the record; the record and the spent total after the charge.
        ``job``: a job's end (``jobs.py``), in a transaction of its own; ``JobLost`` (nothing
        written) if it matches no row."""
        if job is not None:  # a job's end commits with its charge: a transaction of its own
            return await self._write(
                lambda tx: chain.debit(tx, self._clock(), draft, charge, cache, job)
            )
        done = await self.appends.submit(chain.Entry(draft, charge, cache))
        if isinstance(done, BudgetExhausted):
            raise done
        return done

    _commit_entries = _writes(chain.debit_batch)

    async def reserve(
        self, charge: Charge, timeout_s: float, reservation_id: str | None = None
    ) -> Charge:
        """Hold ``charge`` on every layer for a query's time limit ``timeout_s`` plus a margin
        (``reserve.py``), or raise ``BudgetExhausted`` (nothing held); the charge to debit,
        carrying the reservation. ``reservation_id`` replaces an earlier reservation of that
        id (a job's attempts); None: a new one."""
        expires = self._clock() + dt.timedelta(seconds=timeout_s + reserve.MARGIN_S)
        hold = Hold(charge, reservation_id or new_id("res"), expires)
        done = await self.reservations.submit(hold)
        if isinstance(done, BudgetExhausted):
            raise done
        return done

    async def _reserve_holds(self, holds: Sequence[Hold]) -> list[Charge | BudgetExhausted]:
        mode = self.driver.dialect.reserve_mode
        return await self._write(lambda tx: reserve.reserve_batch(tx, self._clock(), holds), mode)

    # --- the audit chain's reads (their contract: ``audit.log.AuditLog``) ---

    async def audit_iter(self, batch: int = 1000) -> AsyncIterator[AuditRecord]:
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
        seq, hash_, _ = await self._read(chain.head)
        return seq, hash_

    async def audit_verify(
        self,
        upto: int | None = None,
        progress: Progress | None = None,
        watch: int = -1,
        every: int = 100_000,
    ) -> tuple[VerifyResult, str | None]:
        n = (await self.audit_head())[0]
        n = n if upto is None else max(0, min(n, upto))
        failures: tuple[type[BaseException], ...] = (*self.driver.errors, OSError)
        try:
            found = await self.driver.verify_parallel(n, watch, progress, every)
        except failures as exc:
            raise StoreUnavailable("the state store cannot be read") from exc
        return found or await verify_in_order(self.audit_rows, n, watch, progress, every)

    # --- the ledger against the chain ---

    async def ledger_check(
        self, progress: Progress | None = None, every: int = 100_000
    ) -> tuple[int, list[Problem]]:
        """(records checked, every inconsistency) between the ledger, its totals, the grants
        and the audit records (``audit/ledger_check.py``), in one snapshot."""
        async with self._session(True, "the state store cannot be read") as tx:
            return await ledger_audit.check_ledger(tx, progress, every)

    # --- schema and whole-store copy -------------------------------------------------------

    @asynccontextmanager
    async def _session(self, snapshot: bool, failure: str) -> AsyncIterator[Tx]:
        """A long transaction (``Driver.session``); a driver error is ``StoreUnavailable``."""
        try:
            async with self.driver.session(snapshot=snapshot) as tx:
                yield tx
        except self.driver.errors as exc:
            raise StoreUnavailable(failure) from exc

    @asynccontextmanager
    async def export_snapshot(self) -> AsyncIterator[Snapshot]:
        """A consistent read snapshot of every table (``bulk.py``)."""
        async with self._session(True, "the source store cannot be read") as tx:
            yield Snapshot(tx)

    @asynccontextmanager
    async def bulk_import(self) -> AsyncIterator[Importer]:
        """One transaction into an empty store (``Conflict`` otherwise); rows are written
        verbatim and committed together at the end."""
        async with self._session(False, "the target store cannot be written") as tx:
            importer = Importer(tx)
            await importer.check_empty()
            yield importer
            await importer.finish()

"""``SqlStore``: the ``Store`` protocol, once, over any ``driver.Driver``.

Each method picks the kind of transaction (a ``read``, or a ``write`` in a ``driver.Mode``)
and runs the matching function of ``ops.py`` in it. Failures are mapped here, the same for
every database: a driver error while reading is ``StoreUnavailable``; while writing,
``AuditUnavailable`` for a chained write (every one is audited, and nothing is committed) and
``StoreUnavailable`` otherwise. Their ``detail`` never carries the driver's message (it can
quote SQL or values); the original is chained for logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from enclave.audit.chain import VerifyResult
from enclave.audit.log import AuditFilter, Progress, SummaryRow
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.audit.rows import SegmentJoiner, verify_segment
from enclave.errors import AuditUnavailable, BudgetExhausted, EnclaveError, StoreUnavailable
from enclave.governance.proposal import (
    Decided,
    Decision,
    Proposal,
    Suspended,
    Write,
    raise_if_expired,
)
from enclave.ids import new_id
from enclave.jobs.job import JobOp
from enclave.ledger.charge import CacheEntry, Charge, Debited, LayerName
from enclave.ledger.grid import Amount
from enclave.licence_grants import Grant
from enclave.models import Licence, utcnow
from enclave.policy.version import PolicyKind, PolicyVersion
from enclave.store import chain, jobs, ops, reserve
from enclave.store import grants as grant_ops
from enclave.store import proposals as prop_ops
from enclave.store.bulk import Importer, Snapshot
from enclave.store.driver import After, Driver, Mode, Row, Work
from enclave.store.group import GroupCommit
from enclave.store.ledger import LedgerTotals
from enclave.store.reserve import Hold

T = TypeVar("T")
#: Rows per fetch when verifying from the store.
VERIFY_FETCH = 5000


class SqlStore:
    """``Store`` over ``driver``. ``clock`` exists so tests can place records in time (budget
    periods); the default is ``models.utcnow``."""

    def __init__(self, driver: Driver, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.driver = driver
        self._clock = clock
        self._totals = LedgerTotals()
        self.appends: GroupCommit[chain.Entry, Debited | BudgetExhausted] = GroupCommit(
            self._commit_entries
        )
        self.reservations: GroupCommit[Hold, Charge | BudgetExhausted] = GroupCommit(
            self._reserve_holds
        )
        self.counters: GroupCommit[ops.Hits, dict[str, int]] = GroupCommit(self._count_batch)

    async def open(self) -> None:
        await self.driver.open()

    async def close(self) -> None:
        await self.counters.drain()
        await self.reservations.drain()
        await self.appends.drain()
        await self.driver.close()
        self._totals.clear()

    async def ping(self) -> None:
        await self._read(lambda tx: tx.fetchrow("SELECT 1"))

    # --- plumbing --------------------------------------------------------------------------

    async def _read(self, work: Work[T]) -> T:
        try:
            return await self.driver.read(work)
        except self.driver.errors as exc:
            raise StoreUnavailable("the state store cannot be read") from exc

    async def _write(self, work: Work[T], mode: Mode = "chain", after: After[T] | None = None) -> T:
        chain = mode == "chain"
        try:
            return await self.driver.write(work, mode, after)
        except EnclaveError as exc:
            if chain and isinstance(exc, StoreUnavailable):  # not open, or cannot connect
                raise AuditUnavailable("the audit log cannot be written") from exc
            raise
        except self.driver.errors as exc:
            if chain:
                raise AuditUnavailable("the audit log cannot be written") from exc
            raise StoreUnavailable("the state store cannot be written") from exc

    # --- licences --------------------------------------------------------------------------

    async def insert_licence(self, licence: Licence, audit: AuditDraft) -> AuditRecord:
        return await self._write(lambda tx: ops.insert_licence(tx, licence, audit, self._clock()))

    async def insert_licences(
        self, items: Sequence[tuple[Licence, AuditDraft]]
    ) -> list[AuditRecord]:
        items = list(items)
        return await self._write(lambda tx: ops.insert_licences(tx, items, self._clock()))

    async def update_licence(
        self, licence_id: str, changes: dict[str, Any], audit: AuditDraft
    ) -> tuple[Licence, AuditRecord]:
        changes = dict(changes)
        return await self._write(
            lambda tx: ops.update_licence(tx, licence_id, changes, audit, self._clock())
        )

    async def get_licence(self, licence_id: str) -> Licence | None:
        return await self._read(lambda tx: ops.get_licence(tx, licence_id))

    async def list_licences(self, subject: str | None = None) -> list[Licence]:
        return await self._read(lambda tx: ops.list_licences(tx, subject))

    async def licences_for(self, subject: str) -> list[Licence]:
        return await self._read(lambda tx: ops.licences_for(tx, subject))

    # --- budget grants ---------------------------------------------------------------------

    async def add_grant(self, grant: Grant, ceiling: Amount, audit: AuditDraft) -> AuditRecord:
        return await self._write(
            lambda tx: grant_ops.add_grant(tx, grant, ceiling, audit, self._clock())
        )

    async def grants(self, licence_id: str) -> list[Grant]:
        return await self._read(lambda tx: grant_ops.list_grants(tx, licence_id))

    async def subject_grants(self, subject: str) -> list[Grant]:
        return await self._read(lambda tx: grant_ops.subject_grants(tx, subject))

    # --- four-eyes proposals and organisation holds (``store/proposals.py``) ----------------

    async def add_proposal(self, proposal: Proposal, audit: AuditDraft) -> Proposal:
        return await self._write(lambda tx: prop_ops.add(tx, proposal, audit, self._clock()))

    async def get_proposal(self, proposal_id: str) -> Proposal | None:
        return await self._read(lambda tx: prop_ops.get(tx, proposal_id))

    async def list_proposals(self, status: str | None = None) -> list[Proposal]:
        return await self._read(lambda tx: prop_ops.list_all(tx, status))

    async def expire_proposals(self, audit: AuditDraft, now: dt.datetime) -> list[Proposal]:
        return await self._write(lambda tx: prop_ops.expire_due(tx, audit, now))

    async def decide_proposal(self, decision: Decision, write: Write | None) -> Decided:
        outcome = await self._write(lambda tx: prop_ops.decide(tx, decision, write, self._clock()))
        return raise_if_expired(outcome)

    async def suspend_organisation(
        self, organisation: str, reason: str, audit: AuditDraft, licence_audit: AuditDraft
    ) -> Suspended:
        return await self._write(
            lambda tx: prop_ops.suspend(
                tx, organisation, reason, audit, licence_audit, self._clock()
            )
        )

    async def held_licences(self, organisation: str) -> list[str]:
        return await self._read(lambda tx: prop_ops.held_by(tx, organisation))

    async def hold_of(self, licence_id: str) -> str | None:
        return await self._read(lambda tx: prop_ops.hold_of(tx, licence_id))

    # --- revocations -----------------------------------------------------------------------

    async def add_revocation(self, jti: str, reason: str, audit: AuditDraft) -> AuditRecord:
        return await self._write(
            lambda tx: ops.add_revocation(tx, jti, reason, audit, self._clock())
        )

    async def is_revoked(self, jti: str) -> bool:
        return await self._read(lambda tx: ops.is_revoked(tx, jti))

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
            lambda tx: ops.put_policy(
                tx, kind, name, body, actor, audit, self._clock(), expected_version
            )
        )

    async def seed_policies(
        self, items: Sequence[tuple[PolicyKind, str, dict[str, Any]]], actor: str
    ) -> bool:
        items = [(k, n, dict(b)) for k, n, b in items]
        return await self._write(lambda tx: ops.seed_policies(tx, items, actor, self._clock()))

    async def get_policy(
        self, kind: PolicyKind, name: str, version: int | None = None
    ) -> PolicyVersion | None:
        return await self._read(lambda tx: ops.get_policy(tx, kind, name, version))

    async def list_policies(self, kind: PolicyKind) -> list[PolicyVersion]:
        return await self._read(lambda tx: ops.list_policies(tx, kind))

    async def policy_history(self, kind: PolicyKind, name: str) -> list[PolicyVersion]:
        return await self._read(lambda tx: ops.policy_history(tx, kind, name))

    # --- shared secrets and rate counters --------------------------------------------------

    async def shared_secret(self, name: str, proposed: bytes) -> bytes:
        return await self._write(
            lambda tx: ops.shared_secret(tx, name, proposed, self._clock()), "rows"
        )

    async def count_hits(
        self, keys: Sequence[str], win: int, sweep: bool = False
    ) -> dict[str, int]:
        return await self.counters.submit((sorted(set(keys)), win, sweep))

    async def _count_batch(self, batch: Sequence[ops.Hits]) -> list[dict[str, int]]:
        """One batch of ``counters`` (``group.py``): one non-durable transaction."""
        return await self._write(lambda tx: ops.count_hits(tx, batch), "volatile")

    # --- ledger and cache ------------------------------------------------------------------

    async def spent(self, licence_id: str, dataset: str, since: dt.datetime | None) -> Amount:
        return await self.layer_spent("licence", licence_id, dataset, since)

    async def layer_spent(
        self, layer: LayerName, key: str, dataset: str, since: dt.datetime | None
    ) -> Amount:
        return await self._read(lambda tx: self._totals.spent(tx, layer, key, dataset, since))

    async def get_cached(self, licence_id: str, cache_key: str) -> dict[str, Any] | None:
        return await self._read(lambda tx: ops.get_cached(tx, licence_id, cache_key))

    # --- the audit chain -------------------------------------------------------------------

    def observe_commits(self, observe: Callable[[int], None]) -> None:
        self.appends.observe = observe

    async def append(self, draft: AuditDraft) -> AuditRecord:
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
        if job is not None:  # a job's end commits with its charge: a transaction of its own
            return await self._write(
                lambda tx: chain.debit(tx, draft, charge, cache, self._clock(), self._totals, job),
                after=lambda _done: self._totals.committed(charge),
            )
        done = await self.appends.submit(chain.Entry(draft, charge, cache))
        if isinstance(done, BudgetExhausted):
            raise done
        return done

    async def _commit_entries(
        self, entries: Sequence[chain.Entry]
    ) -> list[Debited | BudgetExhausted]:
        """One batch of ``appends`` (``group.py``): one chained transaction."""

        def committed(outcomes: list[Debited | BudgetExhausted]) -> None:
            for entry, outcome in zip(entries, outcomes, strict=True):
                if entry.charge is not None and isinstance(outcome, Debited):
                    self._totals.committed(entry.charge)

        return await self._write(
            lambda tx: chain.debit_batch(tx, entries, self._clock(), self._totals), after=committed
        )

    async def reserve(
        self, charge: Charge, timeout_s: float, reservation_id: str | None = None
    ) -> Charge:
        expires = self._clock() + dt.timedelta(seconds=timeout_s + reserve.MARGIN_S)
        hold = Hold(charge, reservation_id or new_id("res"), expires)
        done = await self.reservations.submit(hold)
        if isinstance(done, BudgetExhausted):
            raise done
        return done

    async def _reserve_holds(self, holds: Sequence[Hold]) -> list[Charge | BudgetExhausted]:
        """One batch of ``reservations`` (``group.py``): one transaction."""
        return await self._write(
            lambda tx: reserve.reserve_batch(tx, holds, self._clock(), self._totals),
            self.driver.dialect.reserve_mode,
        )

    # --- the durable job queue (``store/jobs.py``) ---------------------------------------------

    async def job_read(self, op: JobOp) -> list[Row]:
        return await self._read(lambda tx: jobs.apply(tx, op))

    async def job_write(self, op: JobOp) -> list[Row]:
        return await self._write(lambda tx: jobs.apply(tx, op), "rows")

    async def audit_events(
        self, flt: AuditFilter, after_seq: int = 0, limit: int = 100
    ) -> list[AuditRecord]:
        return await self._read(lambda tx: ops.audit_events(tx, flt, after_seq, limit))

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

    async def audit_rows(self, start: int, end: int) -> list[Row]:
        return await self._read(lambda tx: ops.audit_rows(tx, start, end))

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
        if found is not None:
            return found
        joiner = SegmentJoiner(watch, progress, every)
        for start in range(1, n + 1, VERIFY_FETCH):
            end = min(start + VERIFY_FETCH - 1, n)
            if not joiner.add(verify_segment(await self.audit_rows(start, end), start, end, watch)):
                break
        return joiner.result()

    async def audit_summary(
        self, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[SummaryRow]:
        return await self._read(lambda tx: ops.audit_summary(tx, since, until))

    # --- schema and whole-store copy -------------------------------------------------------

    async def schema_version(self) -> int:
        return await self._read(ops.schema_version)

    @asynccontextmanager
    async def export_snapshot(self) -> AsyncIterator[Snapshot]:
        try:
            async with self.driver.session(snapshot=True) as tx:
                yield Snapshot(tx)
        except self.driver.errors as exc:
            raise StoreUnavailable("the source store cannot be read") from exc

    @asynccontextmanager
    async def bulk_import(self) -> AsyncIterator[Importer]:
        try:
            async with self.driver.session(snapshot=False) as tx:
                importer = Importer(tx)
                await importer.check_empty()
                yield importer
                await importer.finish()
        except self.driver.errors as exc:
            raise StoreUnavailable("the target store cannot be written") from exc

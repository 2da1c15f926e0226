"""The state store: licences, revocations, versioned policies, the budget ledger, the release
cache and the audit chain, behind one Protocol (``Store``), implemented once
(``sql_store.SqlStore``) over a driver per database (``sqlite.py`` default, ``postgres.py``
for replicas).

Every write that must be audited takes an ``AuditDraft`` and appends the record *in the same
transaction* as the write itself, so a change and its audit record land together or not at all.
``debit()`` is the query path's single transaction: it re-checks the budget, debits the
ledger, stores the release for the cache, appends the audit record, and returns the new spent
total (so nothing after the commit has to compute it). Ledger amounts are whole grid units
(``ledger/grid.py``), stored as 64-bit integers and summed exactly.
If the store cannot be written, methods raise ``AuditUnavailable`` (for appends) or
``StoreUnavailable`` (for reads), never a driver exception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from enclave.audit.ledger_check import Problem
from enclave.audit.log import AuditLog, Progress
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.ledger.charge import CacheEntry, Charge, Debited
from enclave.ledger.grid import Amount
from enclave.ledger.rule import SpentKey
from enclave.models import Licence
from enclave.policy.version import PolicyKind, PolicyVersion

if TYPE_CHECKING:
    from enclave.governance.proposal import Decided, Decision, Proposal, Suspended, Write
    from enclave.jobs.job import JobOp
    from enclave.licence_grants import Grant
    from enclave.store.bulk import Importer, Snapshot


class Store(AuditLog, Protocol):
    """Everything the gateway, the CLI and ``enclave store copy`` use (the audit chain's
    reads come from ``audit.log.AuditLog``)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    # --- licences (audited writes) ---
    async def insert_licence(self, licence: Licence, audit: AuditDraft) -> AuditRecord:
        """Raise ``Conflict`` if the subject already holds an active licence for one of its
        datasets."""

    async def insert_licences(
        self, items: Sequence[tuple[Licence, AuditDraft]]
    ) -> list[AuditRecord]:
        """Insert every licence with its record in ONE transaction: all of them, or none
        (the first conflict or overlap raises and nothing is written)."""

    async def update_licence(
        self, licence_id: str, changes: dict[str, Any], audit: AuditDraft
    ) -> tuple[Licence, AuditRecord]:
        """Apply ``changes`` (already validated). ``NotFound`` if absent; ``Conflict`` if the
        licence is revoked (final) or the change would create a second active licence."""

    async def get_licence(self, licence_id: str) -> Licence | None: ...
    async def list_licences(self, subject: str | None = None) -> list[Licence]: ...
    async def licences_for(self, subject: str) -> list[Licence]:
        """Every licence of ``subject`` (any status), newest first."""

    # --- revocations ---
    async def add_revocation(self, jti: str, reason: str, audit: AuditDraft) -> AuditRecord: ...
    async def is_revoked(self, jti: str) -> bool: ...

    # --- versioned tiers and datasets ---
    async def put_policy(
        self,
        kind: PolicyKind,
        name: str,
        body: dict[str, Any],
        actor: str,
        audit: AuditDraft | None,
        expected_version: int | None = None,
    ) -> tuple[PolicyVersion, AuditRecord | None]:
        """Store a new version (version = previous + 1, or 1). ``audit`` None only when
        seeding from files at first start. ``expected_version`` (the lost-update guard) is
        checked inside the write transaction: the current version must equal it (0: the name
        must not exist yet), else ``Conflict`` and nothing is written; None writes
        regardless."""

    async def seed_policies(
        self, items: Sequence[tuple[PolicyKind, str, dict[str, Any]]], actor: str
    ) -> bool:
        """Store version 1 of every ``(kind, name, body)`` with no audit record, only if the
        store holds no policy at all, atomically (several replicas may start at once on an
        empty store: exactly one seeds). True if this call wrote them."""

    async def get_policy(
        self, kind: PolicyKind, name: str, version: int | None = None
    ) -> PolicyVersion | None: ...
    async def list_policies(self, kind: PolicyKind) -> list[PolicyVersion]:
        """The latest version of each name."""

    async def policy_history(self, kind: PolicyKind, name: str) -> list[PolicyVersion]: ...

    async def shared_secret(self, name: str, proposed: bytes) -> bytes:
        """The value stored under ``name``; stores ``proposed`` if there is none yet (the first
        writer wins, a value is never replaced). Replicas agree on the truncation seed this way.
        """

    async def count_hits(
        self, keys: Sequence[str], win: int, sweep: bool = False
    ) -> dict[str, int]:
        """Rate-limit counters (``ops.count_hits``): one hit more for each of ``keys`` in
        the one-minute window ``win``; the new counts by key. ``sweep`` drops older windows."""

    # --- ledger and release cache ---
    async def spent(self, licence_id: str, dataset: str, since: dt.datetime | None) -> Amount: ...
    async def spent_many(self, keys: Collection[SpentKey]) -> dict[SpentKey, Amount]:
        """For each ``(layer, key, dataset, since)``: the ledger's sum on ``dataset`` since
        ``since`` (None: lifetime) of the rows whose ``layer`` column is ``key`` (licence id,
        subject, organisation; ``dataset``: every row). One read for all of them."""

    async def get_cached(self, licence_id: str, cache_key: str) -> dict[str, Any] | None: ...

    # --- budget grants (``licence_grants.py``, ``store/grants.py``) ---
    async def add_grant(self, grant: Grant, ceiling: Amount, audit: AuditDraft) -> AuditRecord:
        """Store ``grant`` with its audit record in one transaction, after re-reading the
        licence (``NotFound``, ``Conflict`` if revoked, ``BadRequest`` if the dataset is not
        covered or the dataset's grants would pass ``ceiling``)."""

    async def grants(self, licence_id: str) -> list[Grant]:
        """Every grant given through ``licence_id`` (either layer), oldest first."""

    async def subject_grants(self, subject: str) -> list[Grant]:
        """Every subject-layer grant of ``subject`` (through any of their licences)."""

    # --- four-eyes proposals and organisation holds (``store/proposals.py``) ---
    async def add_proposal(self, proposal: Proposal, audit: AuditDraft) -> Proposal:
        """Store ``proposal`` with its ``proposal.create`` record (one transaction); the
        stored proposal carries the record's ``ts`` and ``seq``."""

    async def get_proposal(self, proposal_id: str) -> Proposal | None: ...
    async def list_proposals(self, status: str | None = None) -> list[Proposal]:
        """Newest first; ``status`` None: all."""

    async def expire_proposals(self, audit: AuditDraft, now: dt.datetime) -> list[Proposal]:
        """Mark every pending proposal past its expiry at ``now`` expired, each with a
        ``proposal.expire`` record made from ``audit``; the ones it marked."""

    async def decide_proposal(self, decision: Decision, write: Write | None) -> Decided:
        """One transaction: the proposal must be pending (``Conflict``) and, to approve, not
        the approver's own (``SelfApproval``); past its expiry it is marked expired (committed)
        and ``ProposalExpired`` raised; an approval applies ``write`` (``ProposalStale`` if
        its target changed since the proposal: nothing is written)."""

    async def suspend_organisation(
        self, organisation: str, reason: str, audit: AuditDraft, licence_audit: AuditDraft
    ) -> Suspended:
        """One transaction: suspend and hold every active licence of ``organisation`` (one
        ``licence.update`` each, from ``licence_audit``) and append ``audit``."""

    async def held_licences(self, organisation: str) -> list[str]:
        """Licence ids held by the organisation's suspension."""

    async def hold_of(self, licence_id: str) -> str | None:
        """The organisation whose suspension holds ``licence_id``, if any."""

    # --- the audit chain (reads: ``AuditLog``) ---
    async def append(self, draft: AuditDraft) -> AuditRecord:
        """Append the record; returns once it is committed. Concurrent ``append`` and
        ``debit`` calls share transactions (group commit: ``store/group.py``)."""

    def observe_commits(self, observe: Callable[[int], None]) -> None:
        """Call ``observe(n)`` after each group commit of ``n`` records (for metrics)."""

    async def debit(
        self,
        draft: AuditDraft,
        charge: Charge,
        cache: CacheEntry | None = None,
        job: JobOp | None = None,
    ) -> Debited:
        """One transaction: re-check ``charge`` against every layer's limit
        (``BudgetExhausted`` naming the first layer that no longer fits, and nothing
        written), debit it, store ``cache``, append the record; return the record and the
        spent total after the charge. ``job``: a job's own change (``store/jobs.py``), applied
        first; ``JobLost`` (nothing written) if it matches no row. ``charge.reservation``
        is consumed here, and the re-check counts everyone else's live reservations."""

    async def reserve(
        self, charge: Charge, timeout_s: float, reservation_id: str | None = None
    ) -> Charge:
        """Hold ``charge`` on every layer for a query's time limit ``timeout_s`` plus a
        margin (``store/reserve.py``), or raise ``BudgetExhausted`` (nothing held); the
        charge to debit, carrying the reservation. ``reservation_id`` replaces an earlier
        reservation of that id (a job's attempts); None: a new one."""

    # --- the durable job queue (``store/jobs.py``) ---
    async def job_read(self, op: JobOp) -> list[Sequence[Any]]: ...
    async def job_write(self, op: JobOp) -> list[Sequence[Any]]:
        """Run ``op`` in its own write transaction."""

    # --- the ledger checked against the audit chain (``enclave audit verify --ledger``) ---
    async def ledger_check(
        self, progress: Progress | None = None, every: int = 100_000
    ) -> tuple[int, list[Problem]]:
        """(records checked, every inconsistency) between the ledger, its lifetime totals,
        the grants and the audit records (``audit/ledger_check.py``), read in one snapshot;
        ``progress(count)`` every ``every`` records."""

    # --- schema and whole-store copy (``enclave store``) ---
    async def schema_version(self) -> int: ...
    def export_snapshot(self) -> AbstractAsyncContextManager[Snapshot]:
        """A consistent read snapshot of every table (``bulk.py``)."""

    def bulk_import(self) -> AbstractAsyncContextManager[Importer]:
        """One transaction into an empty store (``Conflict`` otherwise); rows are written
        verbatim and committed together at the end."""

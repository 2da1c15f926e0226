"""The state store: licences, revocations, versioned policies, the budget ledger, the release
cache and the audit chain, behind one Protocol with two adapters (``sqlite.py`` default,
``postgres.py`` for replicas).

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from enclave.audit.record import AuditDraft, AuditRecord
from enclave.ledger.grid import Amount
from enclave.models import Licence
from enclave.store.jobs import JobOp

PolicyKind = Literal["tier", "dataset"]


@dataclass(frozen=True)
class Charge:
    """A budget debit, re-checked against its limit inside the transaction."""

    licence_id: str
    dataset: str
    cost: Amount  # grid units, rounded up from the priced epsilon and delta
    limit: Amount  # the tier's budget in grid units
    since: dt.datetime | None  # start of the current budget period (None: lifetime)


@dataclass(frozen=True)
class Debited:
    """What ``Store.debit`` committed: the audit record, and the spent total *after* the
    charge (the ledger's sum, read inside the same transaction)."""

    record: AuditRecord
    spent: Amount


@dataclass(frozen=True)
class CacheEntry:
    licence_id: str
    cache_key: str
    release: dict[str, Any]  # the released (noisy) JSON body, without audit_seq/budget


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    dataset: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    licence_id: str | None = None


@dataclass(frozen=True)
class PolicyVersion:
    kind: PolicyKind
    name: str
    version: int
    body: dict[str, Any]  # the validated JSON form (as the YAML file, plus "version")
    created_at: str
    actor: str


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    # --- licences (audited writes) ---
    async def insert_licence(self, licence: Licence, audit: AuditDraft) -> AuditRecord:
        """Raise ``Conflict`` if the subject already holds an active licence for one of its
        datasets."""

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
        """Rate-limit counters (``store/counters.py``): one hit more for each of ``keys`` in
        the one-minute window ``win``; the new counts by key. ``sweep`` drops older windows."""

    # --- ledger and release cache ---
    async def spent(self, licence_id: str, dataset: str, since: dt.datetime | None) -> Amount: ...
    async def get_cached(self, licence_id: str, cache_key: str) -> dict[str, Any] | None: ...

    # --- the audit chain ---
    async def append(self, draft: AuditDraft) -> AuditRecord:
        """Append the record (one transaction)."""

    async def debit(
        self,
        draft: AuditDraft,
        charge: Charge,
        cache: CacheEntry | None = None,
        job: JobOp | None = None,
    ) -> Debited:
        """One transaction: re-check ``charge`` against its limit (``BudgetExhausted``, and
        nothing written, if it no longer fits), debit it, store ``cache``, append the record;
        return the record and the spent total after the charge. ``job``: a job's own change
        (``store/jobs.py``), applied first; ``JobLost`` (nothing written) if it matches no row.
        """

    # --- the durable job queue (``store/jobs.py``) ---
    async def job_read(self, op: JobOp) -> list[dict[str, Any]]: ...
    async def job_write(self, op: JobOp) -> list[dict[str, Any]]:
        """Run ``op`` in its own write transaction."""

    async def audit_events(
        self, flt: AuditFilter, after_seq: int = 0, limit: int = 100
    ) -> list[AuditRecord]: ...
    def audit_iter(self, batch: int = 1000) -> AsyncIterator[AuditRecord]: ...
    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, 64 zeros) when empty."""

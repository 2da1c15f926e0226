"""What the audit package reads from a store: the ``AuditLog`` protocol, its filter, and the
summary rows it returns.

The store depends on the audit package, never the reverse: ``store.base.Store`` implements
``AuditLog``, and everything here is plain data. ``tests/audit/test_audit_layering.py`` keeps
``enclave/audit/`` free of store imports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from enclave.audit.chain import VerifyResult
from enclave.audit.record import AuditRecord
from enclave.ledger.grid import Amount

Progress = Callable[[int], None]
SummaryKey = tuple[str, str | None]  # (actor, dataset)


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    dataset: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    licence_id: str | None = None


def decimal_text(value: Decimal) -> str:
    """An exact Decimal as plain text, without exponent or trailing zeros: ``4.65``,
    ``0.000003``, ``5``. Summaries give spend this way, so no sum is rounded to a float."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True)
class SummaryRow:
    """One line of ``audit_summary``: spend (exact, from the ledger) and counts per actor and
    dataset. ``releases`` are fresh query releases, ``cache_hits`` repeats at zero cost,
    ``refusals`` records with outcome ``denied``, ``errors`` outcome ``error``."""

    actor: str
    dataset: str | None
    spent: Amount
    releases: int
    cache_hits: int
    refusals: int
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "dataset": self.dataset,
            "epsilon_spent": decimal_text(self.spent.epsilon_decimal),
            "delta_spent": decimal_text(self.spent.delta_decimal),
            "releases": self.releases,
            "cache_hits": self.cache_hits,
            "refusals": self.refusals,
            "errors": self.errors,
        }


def summary_rows(
    counts: dict[SummaryKey, list[int]], spend: dict[SummaryKey, Amount]
) -> list[SummaryRow]:
    """Merge per-(actor, dataset) counts and exact spend into sorted rows."""
    out: list[SummaryRow] = []
    for key in sorted(set(counts) | set(spend), key=lambda k: (k[0], k[1] or "")):
        releases, hits, refusals, errors = counts.get(key, [0, 0, 0, 0])
        spent = spend.get(key, Amount())
        out.append(SummaryRow(key[0], key[1], spent, releases, hits, refusals, errors))
    return out


class AuditLog(Protocol):
    """The audit chain as a store keeps it (``store.base.Store`` provides all of it)."""

    async def audit_events(
        self, flt: AuditFilter, after_seq: int = 0, limit: int = 100
    ) -> list[AuditRecord]: ...

    def audit_iter(self, batch: int = 1000) -> AsyncIterator[AuditRecord]:
        """Every record in ``seq`` order, ``batch`` at a time (memory stays bounded)."""

    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, 64 zeros) when empty."""

    async def audit_rows(self, start: int, end: int) -> list[Sequence[Any]]:
        """Raw rows (``record.FIELDS`` order, see ``audit/rows.py``) with seq in
        ``[start, end]``."""

    async def audit_verify(
        self,
        upto: int | None = None,
        progress: Progress | None = None,
        watch: int = -1,
        every: int = 100_000,
    ) -> tuple[VerifyResult, str | None]:
        """Verify records ``1..min(upto, head)`` (``audit/rows.py``); the verdict equals
        ``ChainVerifier``'s over ``audit_iter``. Also the hash of record ``watch`` (if it
        verified); ``progress(seq)`` at every multiple of ``every``."""

    async def audit_summary(
        self, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[SummaryRow]:
        """Exact spend and release/cache-hit/refusal/error counts per actor and dataset in
        ``[since, until)``."""

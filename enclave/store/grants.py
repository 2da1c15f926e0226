"""Budget grants (top-ups): their SQL and transactions, written once for both adapters (the
``Grant`` and its rules are ``licence_grants.py``'s).

Each grant is stored with the audit record that announces it, in one transaction (the row's
key is that record's ``seq``), so a grant without its record, or the reverse, cannot exist.
Inside that transaction the licence is read again: it must exist, not be revoked and still
cover the dataset, and the dataset's grants must stay within ``ceiling`` (the ledger's bounds
less the tier's budget), so the limit always fits the grid (``licence_grants.check_grant``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from enclave.audit.record import AuditDraft, AuditRecord
from enclave.ledger.grid import Amount
from enclave.licence_grants import Grant, check_grant
from enclave.store import chain, ops
from enclave.store.codec import with_licence
from enclave.store.driver import Tx, marks

COLUMNS = (
    "audit_seq", "licence_id", "dataset", "epsilon_units", "delta_units", "reason", "actor",
    "created_at", "layer", "subject",
)  # fmt: skip
INSERT_SQL = (
    f"INSERT INTO licence_grants ({', '.join(COLUMNS)})"  # noqa: S608 (fixed column list)
    f" VALUES ({marks(len(COLUMNS))})"
)
SELECT_SQL = f"SELECT {', '.join(COLUMNS)} FROM licence_grants"  # noqa: S608 (fixed list)


def _values(grant: Grant, record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.seq,
        grant.licence_id,
        grant.dataset,
        grant.amount.epsilon,
        grant.amount.delta,
        grant.reason,
        grant.actor,
        record.ts,
        grant.layer,
        grant.subject,
    )


def _grant(row: Sequence[Any]) -> Grant:
    seq, licence_id, dataset, eps, delta, reason, actor, created, layer, subject = row
    return Grant(
        licence_id=str(licence_id),
        dataset=str(dataset),
        amount=Amount(int(eps), int(delta)),
        reason=str(reason),
        actor=str(actor),
        audit_seq=int(seq),
        created_at=str(created),
        layer="subject" if layer == "subject" else "licence",
        subject=str(subject),
    )


async def list_grants(tx: Tx, licence_id: str) -> list[Grant]:
    sql = SELECT_SQL + " WHERE licence_id = ? ORDER BY audit_seq"
    return [_grant(r) for r in await tx.fetch(sql, licence_id)]


async def subject_grants(tx: Tx, subject: str) -> list[Grant]:
    sql = SELECT_SQL + " WHERE subject = ? AND layer = 'subject' ORDER BY audit_seq"
    return [_grant(r) for r in await tx.fetch(sql, subject)]


async def add_grant(
    tx: Tx, now: dt.datetime, grant: Grant, ceiling: Amount, audit: AuditDraft
) -> AuditRecord:
    """Runs in a chained write: the licence re-read and the ceiling re-checked under the lock
    (against the licence's grants, or the subject's for a subject-layer grant)."""
    licence = await ops.get_licence(tx, grant.licence_id)
    if licence is not None:
        grant = replace(grant, subject=licence.subject)
    existing = (
        await subject_grants(tx, grant.subject)
        if grant.layer == "subject"
        else await list_grants(tx, grant.licence_id)
    )
    check_grant(licence, grant, existing, ceiling)
    record = await chain.append_locked(tx, with_licence(audit, grant.licence_id), now)
    await tx.execute(INSERT_SQL, *_values(grant, record))
    return record

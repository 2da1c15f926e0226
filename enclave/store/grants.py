"""Budget grants (top-ups), written once for both adapters.

A grant adds epsilon (and optionally delta) for one dataset at one layer (``layer``):

- ``licence``: to one licence's limit: the tier's budget plus the licence's grants given in
  the current budget period (``licence_grants.py``);
- ``subject``: to the subject's limit across all their licences, past and present
  (``budget_layers.py``), so a reissued licence can be given more than the old one left.
  It is given through one of the subject's licences and names the subject (``subject``).
 Grants only ever *raise* a limit, which is what makes them safe to
read outside the debit's transaction: a query reads the grants before its debit, and the debit
re-checks the spend against that limit inside its own transaction as before. A grant committed
in between is simply not counted yet (the limit read is lower than the true one, never higher),
so no concurrent interleaving can overspend.

Each grant is stored with the audit record that announces it, in one transaction (the row's
key is that record's ``seq``), so a grant without its record, or the reverse, cannot exist.
Inside that transaction the licence is read again: it must exist, not be revoked and still
cover the dataset, and the dataset's grants must stay within ``ceiling`` (the ledger's bounds
less the tier's budget), so the limit always fits the grid.

Each transaction is an async function of a ``driver.Tx`` (``docs/store-design.md``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from enclave.audit.log import decimal_text
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.errors import BadRequest, Conflict, NotFound
from enclave.ledger.grid import Amount
from enclave.models import Licence, iso
from enclave.store import ops
from enclave.store.codec import with_licence
from enclave.store.driver import Tx

GrantLayer = Literal["licence", "subject"]
GRANT_LAYERS: tuple[GrantLayer, ...] = ("licence", "subject")
COLUMNS = (
    "audit_seq", "licence_id", "dataset", "epsilon_units", "delta_units", "reason", "actor",
    "created_at", "layer", "subject",
)  # fmt: skip
INSERT_SQL = (
    f"INSERT INTO licence_grants ({', '.join(COLUMNS)})"  # noqa: S608 (fixed column list)
    f" VALUES ({ops.marks(len(COLUMNS))})"
)
SELECT_SQL = f"SELECT {', '.join(COLUMNS)} FROM licence_grants"  # noqa: S608 (fixed list)


@dataclass(frozen=True)
class Grant:
    """One top-up for ``dataset``, by ``actor``, for ``reason``, given through
    ``licence_id``: of that licence's limit (``layer`` licence) or of its subject's across
    all their licences (``layer`` subject; ``subject`` is set from the licence when stored).
    ``audit_seq`` and ``created_at`` come from its audit record (0 and "" before storing)."""

    licence_id: str
    dataset: str
    amount: Amount
    reason: str
    actor: str
    audit_seq: int = 0
    created_at: str = ""
    layer: GrantLayer = "licence"
    subject: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "licence_id": self.licence_id,
            "dataset": self.dataset,
            "epsilon": decimal_text(self.amount.epsilon_decimal),
            "delta": decimal_text(self.amount.delta_decimal),
            "layer": self.layer,
            "subject": self.subject,
            "reason": self.reason,
            "actor": self.actor,
            "created_at": self.created_at,
            "audit_seq": self.audit_seq,
        }


def granted(
    grants: Iterable[Grant],
    dataset: str,
    since: dt.datetime | None,
    layer: GrantLayer = "licence",
) -> Amount:
    """The sum of ``dataset``'s ``layer`` grants given at or after ``since`` (None: all)."""
    start = None if since is None else iso(since)  # compared as text, as the ledger's ``ts``
    total = Amount()
    for g in grants:
        if g.layer != layer:
            continue
        if g.dataset == dataset and (start is None or g.created_at >= start):
            total = total.plus(g.amount)
    return total


def check(
    licence: Licence | None, grant: Grant, existing: Sequence[Grant], ceiling: Amount
) -> None:
    """The rules re-checked inside the grant's transaction (the handler checked them first)."""
    if licence is None:
        raise NotFound("no such licence")
    if licence.status == "revoked":
        raise Conflict("a revoked licence cannot be granted budget")
    if grant.dataset not in licence.datasets:
        raise BadRequest(
            f"dataset: the licence does not cover {grant.dataset!r}",
            [f"dataset: the licence does not cover {grant.dataset!r}"],
        )
    total = granted(existing, grant.dataset, None, grant.layer).plus(grant.amount)
    if not total.within(ceiling):
        what = "the licence's limit would pass the ledger's bounds (epsilon 1000000, delta < 1)"
        raise BadRequest(f"epsilon: {what}", [f"epsilon: {what}"])


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
    tx: Tx, grant: Grant, ceiling: Amount, draft: AuditDraft, now: dt.datetime
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
    check(licence, grant, existing, ceiling)
    record = await ops.append_locked(tx, with_licence(draft, grant.licence_id), now)
    await tx.execute(INSERT_SQL, *_values(grant, record))
    return record

"""Four-eyes proposals and organisation holds: their SQL and transactions, written once for
both adapters (the rules are ``governance/proposal.py``'s).

Each proposal is stored with the audit record announcing it (``proposal.create``) in one
transaction. A decision is one chained write: it reads the proposal and the approver's
licences again (who may approve: ``governance.proposal.check_decision``), and an approval
composes the same ``ops``/``grants`` functions a direct change runs, inside that transaction,
before marking the proposal decided and appending ``proposal.approve`` or ``proposal.reject``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from enclave.audit.record import AuditDraft, AuditRecord, dumps
from enclave.errors import Conflict, ProposalStale
from enclave.governance import proposal as gov
from enclave.governance.proposal import (
    FIELDS,
    Decided,
    Decision,
    GrantWrite,
    LicenceWrite,
    NewLicence,
    PolicyWrite,
    Proposal,
    Reactivation,
    Suspended,
    Write,
)
from enclave.models import iso
from enclave.store import chain, grants, ops
from enclave.store.driver import Tx, marks

INSERT_SQL = (
    f"INSERT INTO proposals ({', '.join(FIELDS)})"  # noqa: S608 (fixed column list)
    f" VALUES ({marks(len(FIELDS))})"
)
SELECT_SQL = f"SELECT {', '.join(FIELDS)} FROM proposals"  # noqa: S608 (fixed column list)
GET_SQL = SELECT_SQL + " WHERE id = ?"
LIST_SQL = SELECT_SQL + " ORDER BY created_at DESC, id"
LIST_STATUS_SQL = SELECT_SQL + " WHERE status = ? ORDER BY created_at DESC, id"
DUE_SQL = SELECT_SQL + " WHERE status = 'pending' AND expires_at <= ? ORDER BY created_at, id"
DECIDE_SQL = (
    "UPDATE proposals SET status = ?, decided_by = ?, decided_reason = ?, decided_at = ?,"
    " decision_seq = ? WHERE id = ? AND status = 'pending'"
)
ACTIVE_OF_SQL = "SELECT id FROM licences WHERE organization = ? AND status = 'active' ORDER BY id"
HOLD_SQL = (
    "INSERT INTO licence_holds (licence_id, organisation, reason, audit_seq) VALUES (?, ?, ?, ?)"
)
HELD_SQL = "SELECT licence_id FROM licence_holds WHERE organisation = ? ORDER BY licence_id"
IS_HELD_SQL = "SELECT organisation FROM licence_holds WHERE licence_id = ?"
UNHOLD_SQL = "DELETE FROM licence_holds WHERE organisation = ?"


def _values(p: Proposal) -> tuple[Any, ...]:
    json_columns = {"risks": list(p.risks), "body": p.body}
    return tuple(dumps(json_columns[c]) if c in json_columns else getattr(p, c) for c in FIELDS)


def _proposal(row: Sequence[Any]) -> Proposal:
    v = dict(zip(FIELDS, row, strict=True))
    v["body"] = json.loads(v["body"])
    v["risks"] = tuple(json.loads(v["risks"]))
    return Proposal(**v)


async def add(tx: Tx, now: dt.datetime, proposal: Proposal, audit: AuditDraft) -> Proposal:
    record = await chain.append_locked(tx, gov.created_draft(proposal, audit), now)
    stored = replace(proposal, created_at=record.ts, audit_seq=record.seq)
    await tx.execute(INSERT_SQL, *_values(stored))
    return stored


async def get(tx: Tx, proposal_id: str) -> Proposal | None:
    row = await tx.fetchrow(GET_SQL, proposal_id)
    return None if row is None else _proposal(row)


async def list_all(tx: Tx, status: str | None = None) -> list[Proposal]:
    if status is None:
        return [_proposal(r) for r in await tx.fetch(LIST_SQL)]
    return [_proposal(r) for r in await tx.fetch(LIST_STATUS_SQL, status)]


async def expire_due(tx: Tx, now: dt.datetime, draft: AuditDraft) -> list[Proposal]:
    """Mark every pending proposal past its expiry ``expired``, one audited record each."""
    out = []
    for row in await tx.fetch(DUE_SQL, iso(now)):
        out.append(await _expire(tx, _proposal(row), draft, now))
    return out


async def decide(tx: Tx, now: dt.datetime, d: Decision, write: Write | None) -> Decided | Proposal:
    """The decision, or the proposal marked expired (committed; the caller then raises
    ``ProposalExpired``, see ``governance.proposal.raise_if_expired``)."""
    own = await ops.licences_for(tx, d.actor)  # under the chain lock: no licence changes now
    p = gov.check_decision(await get(tx, d.proposal_id), d.approve, d.actor, own)
    if gov.is_expired(p, d.now):
        return await _expire(tx, p, d.expire_draft, now)
    applied = await _apply(tx, write, now) if d.approve else None
    record = await chain.append_locked(tx, gov.decided_draft(p, d, applied), now)
    done = await _mark(tx, gov.finished(p, "approved" if d.approve else "rejected", record, d))
    return Decided(done, record, applied)


async def _expire(tx: Tx, p: Proposal, draft: AuditDraft, now: dt.datetime) -> Proposal:
    record = await chain.append_locked(tx, gov.expired_draft(p, draft), now)
    return await _mark(tx, gov.finished(p, "expired", record))


async def _mark(tx: Tx, p: Proposal) -> Proposal:
    """Runs under the chain lock, so the proposal read in this transaction is still pending."""
    args = (p.status, p.decided_by, p.decided_reason, p.decided_at, p.decision_seq, p.id)
    await tx.execute(DECIDE_SQL, *args)
    return p


async def issue(
    tx: Tx, now: dt.datetime, w: NewLicence, stale: type[Conflict] = Conflict
) -> AuditRecord:
    """Issue ``w.licence`` only while the subject's licences are those it was checked against
    (``w.base``: whether it is a reissue was decided from them), else ``stale`` and nothing
    is written. The direct route and an approved ``licence.create`` both issue through here."""
    if gov.held_state(await ops.licences_for(tx, w.licence.subject)) != w.base:
        raise stale("the subject's licences changed since the licence was checked")
    return await ops.insert_licence(tx, now, w.licence, w.draft)


async def _apply(tx: Tx, w: Write | None, now: dt.datetime) -> AuditRecord:
    if isinstance(w, PolicyWrite):
        try:
            _, record = await ops.put_policy(
                tx, now, w.kind, w.name, w.body, w.actor, w.draft, w.expected
            )
        except Conflict as exc:
            raise ProposalStale(f"{w.kind} {w.name!r} changed since the proposal") from exc
        assert record is not None  # noqa: S101 (a draft was given)
        return record
    if isinstance(w, NewLicence):
        return await issue(tx, now, w, ProposalStale)
    if isinstance(w, LicenceWrite | GrantWrite):
        lic_id = w.licence_id if isinstance(w, LicenceWrite) else w.grant.licence_id
        if gov.licence_state(await ops.get_licence(tx, lic_id)) != w.base:
            raise ProposalStale("the licence changed since the proposal")
        if isinstance(w, GrantWrite):
            return await grants.add_grant(tx, now, w.grant, w.ceiling, w.draft)
        return (await ops.update_licence(tx, now, w.licence_id, w.changes, w.draft))[1]
    assert isinstance(w, Reactivation)  # noqa: S101 (approval always carries a write)
    held = await held_by(tx, w.organisation)
    if gov.held_state([await ops.get_licence(tx, i) for i in held]) != w.base:
        raise ProposalStale("the organisation's suspended licences changed since the proposal")
    for lic_id in held:
        await ops.update_licence(tx, now, lic_id, {"status": "active"}, w.licence_draft)
    await tx.execute(UNHOLD_SQL, w.organisation)
    return await chain.append_locked(tx, gov.with_ids(w.draft, held), now)


async def held_by(tx: Tx, organisation: str) -> list[str]:
    return [str(r[0]) for r in await tx.fetch(HELD_SQL, organisation)]


async def hold_of(tx: Tx, licence_id: str) -> str | None:
    row = await tx.fetchrow(IS_HELD_SQL, licence_id)
    return None if row is None else str(row[0])


async def suspend(
    tx: Tx,
    now: dt.datetime,
    organisation: str,
    reason: str,
    audit: AuditDraft,
    licence_audit: AuditDraft,
) -> Suspended:
    ids = [str(r[0]) for r in await tx.fetch(ACTIVE_OF_SQL, organisation)]
    record = await chain.append_locked(tx, gov.with_ids(audit, ids), now)
    for lic_id in ids:
        await ops.update_licence(tx, now, lic_id, {"status": "suspended"}, licence_audit)
        await tx.execute(HOLD_SQL, lic_id, organisation, reason, record.seq)
    return Suspended(tuple(ids), record)

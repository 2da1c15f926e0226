"""Four-eyes proposals and organisation holds, written once for both adapters.

A proposal is a change that raises risk, kept until a second admin decides it
(``governance/``). Each proposal is stored with the audit record announcing it
(``proposal.create``) in one transaction; a decision is one transaction too: it reads the
proposal again (it must still be ``pending``), refuses its proposer as approver
(``SelfApproval``), and on approval applies the change through the same store operation a
direct change uses (``ops``/``grants``), guarded by the state the
proposal was checked against (``ProposalStale`` when the target changed since), then marks the
proposal decided and appends ``proposal.approve`` or ``proposal.reject``. Two admins approving
at once therefore apply the change exactly once: the second finds it decided. A proposal past
``expires_at`` is marked ``expired`` (audited ``proposal.expire``) instead, and that is
committed before ``ProposalExpired`` is raised.

A hold marks a licence suspended with its organisation (``organisation.suspend``); while held,
only approving ``organisation.reactivate`` (which lifts every hold of the organisation) makes it
active again.

Each transaction is an async function of a ``driver.Tx`` (``docs/store-design.md``); an
approval composes the same ``ops``/``grants`` functions a direct change runs, inside its own
transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from enclave.audit.record import AuditDraft, AuditRecord
from enclave.errors import Conflict, NotFound, ProposalExpired, ProposalStale, SelfApproval
from enclave.ledger.grid import Amount
from enclave.models import Licence, iso
from enclave.store import codec, ops
from enclave.store import grants as grant_ops
from enclave.store.base import PolicyKind
from enclave.store.driver import Tx
from enclave.store.grants import Grant

STATUSES = ("pending", "approved", "rejected", "expired")
COLUMNS = (
    "id", "kind", "target", "body", "base", "risks", "reason", "proposer", "created_at",
    "expires_at", "status", "decided_by", "decided_reason", "decided_at", "audit_seq",
    "decision_seq",
)  # fmt: skip
INSERT_SQL = (
    f"INSERT INTO proposals ({', '.join(COLUMNS)})"  # noqa: S608 (fixed column list)
    f" VALUES ({ops.marks(len(COLUMNS))})"
)
SELECT_SQL = f"SELECT {', '.join(COLUMNS)} FROM proposals"  # noqa: S608 (fixed column list)
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


@dataclass(frozen=True)
class Proposal:
    """A change waiting for a second admin. ``body`` is the change as requested (validated
    again at approval); ``base`` the target's state it was checked against."""

    id: str
    kind: str  # tier.update | dataset.update | licence.update | licence.grant |
    #           dataset.unfreeze | organisation.reactivate
    target: str  # the tier or dataset name, licence id or organisation
    body: dict[str, Any]
    base: str
    risks: tuple[str, ...]
    reason: str
    proposer: str
    expires_at: str
    created_at: str = ""
    status: str = "pending"
    decided_by: str | None = None
    decided_reason: str | None = None
    decided_at: str | None = None
    audit_seq: int = 0
    decision_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS} | {"risks": list(self.risks)}


@dataclass(frozen=True)
class Decision:
    """An admin's verdict on a proposal, at ``now`` (the caller's clock decides expiry)."""

    proposal_id: str
    approve: bool
    actor: str
    reason: str
    now: dt.datetime
    draft: AuditDraft  # proposal.approve / proposal.reject (the store adds the proposal's ids)
    expire_draft: AuditDraft  # proposal.expire, used if the proposal is found expired


@dataclass(frozen=True)
class PolicyWrite:
    kind: PolicyKind
    name: str
    body: dict[str, Any]
    actor: str
    draft: AuditDraft
    expected: int


@dataclass(frozen=True)
class LicenceWrite:
    licence_id: str
    changes: dict[str, Any]
    draft: AuditDraft
    base: str  # ``licence_state`` of the licence when proposed


@dataclass(frozen=True)
class GrantWrite:
    grant: Grant
    ceiling: Amount
    draft: AuditDraft
    base: str


@dataclass(frozen=True)
class Reactivation:
    """Lift every hold of ``organisation``; each held licence becomes active (one
    ``licence.update`` each, from ``licence_draft``) and ``draft`` records the whole."""

    organisation: str
    draft: AuditDraft
    licence_draft: AuditDraft
    base: str  # ``held_state`` of the organisation when proposed


Write = PolicyWrite | LicenceWrite | GrantWrite | Reactivation


@dataclass(frozen=True)
class Decided:
    proposal: Proposal
    record: AuditRecord  # proposal.approve / proposal.reject
    applied: AuditRecord | None  # the change's own record (approval)


@dataclass(frozen=True)
class Suspended:
    licence_ids: tuple[str, ...]
    record: AuditRecord  # organisation.suspend


def licence_state(lic: Licence | None) -> str:
    """A digest of everything a licence holds: any change since alters it."""
    text = "" if lic is None else codec.dumps(lic.to_json())
    return hashlib.sha256(text.encode()).hexdigest()


def held_state(licences: Sequence[Licence | None]) -> str:
    return hashlib.sha256("|".join(licence_state(lic) for lic in licences).encode()).hexdigest()


def is_expired(proposal: Proposal, now: dt.datetime) -> bool:
    return proposal.expires_at <= iso(now)  # compared as text, as every stored ``ts``


def _values(p: Proposal) -> tuple[Any, ...]:
    return tuple(
        codec.dumps(list(p.risks)) if c == "risks" else codec.dumps(p.body) if c == "body"
        else getattr(p, c)
        for c in COLUMNS
    )  # fmt: skip


def _proposal(row: Sequence[Any]) -> Proposal:
    v = dict(zip(COLUMNS, row, strict=True))
    v["body"] = json.loads(v["body"])
    v["risks"] = tuple(json.loads(v["risks"]))
    return Proposal(**v)


def _created(p: Proposal, draft: AuditDraft) -> AuditDraft:
    detail = {**(draft.detail or {}), "proposal_id": p.id, "kind": p.kind, "target": p.target,
              "risks": list(p.risks), "expires_at": p.expires_at}  # fmt: skip
    return replace(draft, reason=p.reason, detail=detail)


def _decided(
    p: Proposal, d: Decision, draft: AuditDraft, applied: AuditRecord | None
) -> AuditDraft:
    detail = {**(draft.detail or {}), "proposal_id": p.id, "kind": p.kind, "target": p.target,
              "proposer": p.proposer, "proposal_reason": p.reason}  # fmt: skip
    if applied is not None:
        detail["applied_seq"] = applied.seq
    return replace(draft, reason=d.reason, detail=detail)


def _check(p: Proposal | None, d: Decision) -> Proposal:
    if p is None:
        raise NotFound("no such proposal")
    if p.status != "pending":
        raise Conflict(f"the proposal is already {p.status}")
    if d.approve and d.actor == p.proposer:
        raise SelfApproval("the proposer cannot approve their own proposal")
    return p


def _finish(p: Proposal, status: str, record: AuditRecord, d: Decision | None = None) -> Proposal:
    """``p`` decided by ``record``; ``d`` None: expired (no one decided it)."""
    return replace(
        p,
        status=status,
        decided_by=None if d is None else d.actor,
        decided_reason=None if d is None else d.reason,
        decided_at=record.ts,
        decision_seq=record.seq,
    )


def _decide_args(p: Proposal) -> tuple[Any, ...]:
    return (p.status, p.decided_by, p.decided_reason, p.decided_at, p.decision_seq, p.id)


# --- transactions (functions of a ``driver.Tx``; ``SqlStore`` runs them) --------------------


async def add(tx: Tx, p: Proposal, draft: AuditDraft, now: dt.datetime) -> Proposal:
    record = await ops.append_locked(tx, _created(p, draft), now)
    stored = replace(p, created_at=record.ts, audit_seq=record.seq)
    await tx.execute(INSERT_SQL, *_values(stored))
    return stored


async def get(tx: Tx, proposal_id: str) -> Proposal | None:
    row = await tx.fetchrow(GET_SQL, proposal_id)
    return None if row is None else _proposal(row)


async def list_all(tx: Tx, status: str | None) -> list[Proposal]:
    if status is None:
        return [_proposal(r) for r in await tx.fetch(LIST_SQL)]
    return [_proposal(r) for r in await tx.fetch(LIST_STATUS_SQL, status)]


async def expire_due(tx: Tx, draft: AuditDraft, now: dt.datetime) -> list[Proposal]:
    """Mark every pending proposal past its expiry ``expired``, one audited record each."""
    out = []
    for row in await tx.fetch(DUE_SQL, iso(now)):
        p = _proposal(row)
        record = await ops.append_locked(tx, _expired_draft(p, draft), now)
        out.append(await _mark(tx, _finish(p, "expired", record)))
    return out


async def decide(tx: Tx, d: Decision, write: Write | None, now: dt.datetime) -> Decided | Proposal:
    """The decision, or the proposal marked expired (committed; the caller then raises
    ``ProposalExpired``, see ``raise_if_expired``)."""
    p = _check(await get(tx, d.proposal_id), d)
    if is_expired(p, d.now):
        record = await ops.append_locked(tx, _expired_draft(p, d.expire_draft), now)
        return await _mark(tx, _finish(p, "expired", record))
    applied = await _apply(tx, write, now) if d.approve else None
    record = await ops.append_locked(tx, _decided(p, d, d.draft, applied), now)
    done = await _mark(tx, _finish(p, "approved" if d.approve else "rejected", record, d))
    return Decided(done, record, applied)


def raise_if_expired(outcome: Decided | Proposal) -> Decided:
    if isinstance(outcome, Proposal):
        raise ProposalExpired(f"the proposal expired at {outcome.expires_at}; nothing was applied")
    return outcome


async def _mark(tx: Tx, p: Proposal) -> Proposal:
    """Runs under the chain lock, so the proposal read in this transaction is still pending."""
    await tx.execute(DECIDE_SQL, *_decide_args(p))
    return p


async def _apply(tx: Tx, w: Write | None, now: dt.datetime) -> AuditRecord:
    if isinstance(w, PolicyWrite):
        try:
            _, record = await ops.put_policy(
                tx, w.kind, w.name, w.body, w.actor, w.draft, now, w.expected
            )
        except Conflict as exc:
            raise ProposalStale(f"{w.kind} {w.name!r} changed since the proposal") from exc
        assert record is not None  # noqa: S101 (a draft was given)
        return record
    if isinstance(w, LicenceWrite | GrantWrite):
        lic_id = w.licence_id if isinstance(w, LicenceWrite) else w.grant.licence_id
        if licence_state(await ops.get_licence(tx, lic_id)) != w.base:
            raise ProposalStale("the licence changed since the proposal")
        if isinstance(w, GrantWrite):
            return await grant_ops.add_grant(tx, w.grant, w.ceiling, w.draft, now)
        return (await ops.update_licence(tx, w.licence_id, w.changes, w.draft, now))[1]
    assert isinstance(w, Reactivation)  # noqa: S101 (approval always carries a write)
    held = await held_by(tx, w.organisation)
    if held_state([await ops.get_licence(tx, i) for i in held]) != w.base:
        raise ProposalStale("the organisation's suspended licences changed since the proposal")
    for lic_id in held:
        await ops.update_licence(tx, lic_id, {"status": "active"}, w.licence_draft, now)
    await tx.execute(UNHOLD_SQL, w.organisation)
    return await ops.append_locked(tx, _with_ids(w.draft, held), now)


async def held_by(tx: Tx, organisation: str) -> list[str]:
    return [str(r[0]) for r in await tx.fetch(HELD_SQL, organisation)]


async def hold_of(tx: Tx, licence_id: str) -> str | None:
    row = await tx.fetchrow(IS_HELD_SQL, licence_id)
    return None if row is None else str(row[0])


async def suspend(
    tx: Tx,
    organisation: str,
    reason: str,
    draft: AuditDraft,
    licence_draft: AuditDraft,
    now: dt.datetime,
) -> Suspended:
    ids = [str(r[0]) for r in await tx.fetch(ACTIVE_OF_SQL, organisation)]
    record = await ops.append_locked(tx, _with_ids(draft, ids), now)
    for lic_id in ids:
        await ops.update_licence(tx, lic_id, {"status": "suspended"}, licence_draft, now)
        await tx.execute(HOLD_SQL, lic_id, organisation, reason, record.seq)
    return Suspended(tuple(ids), record)


# --- shared helpers --------------------------------------------------------------------------


def _expired_draft(p: Proposal, draft: AuditDraft) -> AuditDraft:
    detail = {"proposal_id": p.id, "kind": p.kind, "target": p.target, "proposer": p.proposer,
              "proposal_reason": p.reason, "expires_at": p.expires_at}  # fmt: skip
    return replace(draft, action="proposal.expire", reason="expired", detail=detail)


def _with_ids(draft: AuditDraft, ids: Sequence[str]) -> AuditDraft:
    return replace(draft, detail={**(draft.detail or {}), "licences": list(ids)})

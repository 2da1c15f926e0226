"""Four-eyes proposals and organisation holds: the values and the rules of a decision.

A proposal is a change that raises risk, kept until a second admin decides it. A decision
finds the proposal still ``pending`` (``Conflict`` otherwise), refuses as approver its
proposer and anyone it benefits (``SelfApproval``, see ``approval_conflict``), and on
approval applies the change (a ``Write``) through the same store operation a direct change
uses, guarded by the state the proposal was checked against (``base``: ``ProposalStale`` when
the target changed since). A proposal past ``expires_at`` is marked ``expired`` (audited
``proposal.expire``) instead, and that is committed before ``ProposalExpired`` is raised.
``store/proposals.py`` runs each of these in one transaction, so two admins approving at once
apply the change exactly once: the second finds it decided.

A hold marks a licence suspended with its organisation (``organisation.suspend``); while held,
only approving ``organisation.reactivate`` (which lifts every hold of the organisation) makes
it active again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from enclave.audit.record import AuditDraft, AuditRecord, dumps
from enclave.errors import Conflict, NotFound, ProposalExpired, SelfApproval
from enclave.ledger.grid import Amount
from enclave.licence_grants import Grant
from enclave.models import Licence, iso
from enclave.policy.version import PolicyKind

STATUSES = ("pending", "approved", "rejected", "expired")
#: the proposal kinds whose target is one licence
LICENCE_KINDS = ("licence.update", "licence.grant")
#: the proposal kinds whose target is one dataset
DATASET_KINDS = ("dataset.update", "dataset.unfreeze")
#: the stored fields, in the order of the ``proposals`` table (and of ``to_json``)
FIELDS = (
    "id", "kind", "target", "body", "base", "risks", "reason", "proposer", "created_at",
    "expires_at", "status", "decided_by", "decided_reason", "decided_at", "audit_seq",
    "decision_seq",
)  # fmt: skip


@dataclass(frozen=True)
class Proposal:
    """A change waiting for a second admin. ``body`` is the change as requested (validated
    again at approval); ``base`` the target's state it was checked against."""

    id: str
    kind: str  # tier.update | dataset.update | licence.create | licence.update |
    #           licence.grant | dataset.unfreeze | organisation.reactivate
    target: str  # the tier or dataset name, licence id (new, for licence.create) or organisation
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
        return {name: getattr(self, name) for name in FIELDS} | {"risks": list(self.risks)}


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
class NewLicence:
    """Issue ``licence`` (a reissue: ``risk.reissued``)."""

    licence: Licence
    draft: AuditDraft
    base: str  # ``held_state`` of the subject's licences when proposed


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


Write = PolicyWrite | NewLicence | LicenceWrite | GrantWrite | Reactivation


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
    text = "" if lic is None else dumps(lic.to_json())
    return hashlib.sha256(text.encode()).hexdigest()


def held_state(licences: Sequence[Licence | None]) -> str:
    return hashlib.sha256("|".join(licence_state(lic) for lic in licences).encode()).hexdigest()


def is_expired(proposal: Proposal, now: dt.datetime) -> bool:
    return proposal.expires_at <= iso(now)  # compared as text, as every stored ``ts``


def check_decision(
    p: Proposal | None, approve: bool, actor: str, licences: Sequence[Licence]
) -> Proposal:
    """The proposal ``actor`` decides, if they may: it exists, is pending, and to approve it
    they must have no conflict of interest (``licences``: theirs, of any status, read in the
    decision's transaction; ``approval_conflict``)."""
    if p is None:
        raise NotFound("no such proposal")
    if p.status != "pending":
        raise Conflict(f"the proposal is already {p.status}")
    if approve and (conflict := approval_conflict(p, actor, licences)) is not None:
        raise SelfApproval(conflict)
    return p


def approval_conflict(p: Proposal, actor: str, licences: Sequence[Licence]) -> str | None:
    """Why ``actor`` may not approve ``p``, or None. The second pair of eyes is neither the
    proposer nor the beneficiary: the subject of the licence a ``licence.create`` issues or a
    ``licence.update`` or ``licence.grant`` changes, or of any licence (held or not) of the
    organisation an ``organisation.reactivate`` lifts, or of a licence not revoked on the tier
    a ``tier.update`` changes or covering the dataset a ``dataset.update`` or
    ``dataset.unfreeze`` changes. A proposer may still reject (withdraw) it, and a
    beneficiary reject it."""
    if actor == p.proposer:
        return "the proposer cannot approve their own proposal"
    own = [lic for lic in licences if lic.subject == actor]
    if p.kind in LICENCE_KINDS and any(lic.id == p.target for lic in own):
        return "an admin cannot approve a change to their own licence"
    if p.kind == "licence.create" and p.body.get("subject") == actor:
        return "an admin cannot approve a licence issued to them"
    if p.kind == "organisation.reactivate" and any(lic.organization == p.target for lic in own):
        return "an admin cannot approve reactivating an organisation in which they hold a licence"
    usable = [lic for lic in own if lic.status != "revoked"]
    if p.kind == "tier.update" and any(lic.tier == p.target for lic in usable):
        return "an admin cannot approve a change to a tier on which they hold a licence"
    if p.kind in DATASET_KINDS and any(p.target in lic.datasets for lic in usable):
        return "an admin cannot approve a change to a dataset their licence covers"
    return None


def raise_if_expired(outcome: Decided | Proposal) -> Decided:
    """A decision's outcome, or ``ProposalExpired`` when the store found it expired (and
    committed it so)."""
    if isinstance(outcome, Proposal):
        raise ProposalExpired(f"the proposal expired at {outcome.expires_at}; nothing was applied")
    return outcome


def finished(p: Proposal, status: str, record: AuditRecord, d: Decision | None = None) -> Proposal:
    """``p`` decided by ``record``; ``d`` None: expired (no one decided it)."""
    return replace(
        p,
        status=status,
        decided_by=None if d is None else d.actor,
        decided_reason=None if d is None else d.reason,
        decided_at=record.ts,
        decision_seq=record.seq,
    )


# --- what each audit record says -----------------------------------------------------------


def created_draft(p: Proposal, draft: AuditDraft) -> AuditDraft:
    detail = {**(draft.detail or {}), "proposal_id": p.id, "kind": p.kind, "target": p.target,
              "risks": list(p.risks), "expires_at": p.expires_at}  # fmt: skip
    return replace(draft, reason=p.reason, detail=detail)


def decided_draft(p: Proposal, d: Decision, applied: AuditRecord | None) -> AuditDraft:
    detail = {**(d.draft.detail or {}), "proposal_id": p.id, "kind": p.kind,
              "target": p.target, "proposer": p.proposer, "proposal_reason": p.reason}  # fmt: skip
    if applied is not None:
        detail["applied_seq"] = applied.seq
    return replace(d.draft, reason=d.reason, detail=detail)


def expired_draft(p: Proposal, draft: AuditDraft) -> AuditDraft:
    detail = {"proposal_id": p.id, "kind": p.kind, "target": p.target, "proposer": p.proposer,
              "proposal_reason": p.reason, "expires_at": p.expires_at}  # fmt: skip
    return replace(draft, action="proposal.expire", reason="expired", detail=detail)


def with_ids(draft: AuditDraft, ids: Sequence[str]) -> AuditDraft:
    """``draft`` naming the licences it covers (a suspension or reactivation)."""
    return replace(draft, detail={**(draft.detail or {}), "licences": list(ids)})

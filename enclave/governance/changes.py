"""Admin changes prepared once, then applied directly or proposed for four-eyes approval.

Each ``prepare_*`` function validates a change against the current state exactly as the
direct admin route always has, and returns a ``Prepared``: what a proposal stores (the body
as requested, the target's state it was checked against), the reasons it raises risk
(``risk.py``), and the write that applies it (``proposal.Write``). The routes call
the same function twice for a proposal: when it is made, and again at approval, against the
state at that moment, so an approved change passes every rule a direct one does; the write
then runs in the approval's transaction, guarded by the proposal's ``base``.

A change that does not raise risk (or any change while ``governance.four_eyes`` is off) runs
its prepared write on its own, through the same store operation (``web/admin.py``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from enclave.audit.context import AuditContext
from enclave.audit.record import AuditDraft
from enclave.errors import Conflict, NotFound, PolicyFileError
from enclave.governance.organisations import refuse_if_suspended
from enclave.governance.proposal import (
    GrantWrite,
    LicenceWrite,
    NewLicence,
    PolicyWrite,
    Reactivation,
    Write,
    held_state,
    licence_state,
)
from enclave.governance.risk import GRANT_RISK, reissued, risks
from enclave.licence_grants import ceiling, grant_from_json
from enclave.licences import (
    check_licence_policy,
    check_no_overlap,
    licence_digest_fields,
    licence_request,
    patch_licence,
)
from enclave.models import DatasetSpec, Tier
from enclave.policy.files import tier_from_dict
from enclave.policy.registry import BUDGET_KEYS, PolicyChange, state_paths
from enclave.policy.version import PolicyKind, PolicyVersion
from enclave.services import Services


@dataclass(frozen=True)
class Prepared:
    kind: str  # the proposal kind (also the audit action of the change, but grants)
    target: str
    body: dict[str, Any]  # the change as requested, without its reason
    reason: str | None
    base: str  # the target's state the change was checked against
    risks: list[str]
    write: Write

    def guarded(self, base: str) -> Write:
        """The write, guarded by ``base`` (a proposal's) instead of the state read now."""
        w = self.write
        if isinstance(w, PolicyWrite):
            return replace(w, expected=int(base))
        return replace(w, base=base)


def digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- tiers and datasets ----------------------------------------------------------------------


async def prepare_policy(
    svc: Services, actx: AuditContext, kind: PolicyKind, name: str, body: Any
) -> Prepared:
    """``PUT /v1/admin/tiers|datasets/{name}``. A dataset's ``frozen`` is kept as it is: only
    the freeze routes change it."""
    if kind == "tier":
        change = await svc.registry.check_tier(name, body)
    else:
        change = await _check_dataset(svc, name, _keep_frozen(body, await _current(svc, name)))
    requested = {k: v for k, v in body.items() if k != "reason"} if isinstance(body, dict) else {}
    return _policy_prepared(svc, actx, change, f"{kind}.update", requested)


async def prepare_freeze(svc: Services, name: str, reason: str, unfreeze: bool) -> PolicyChange:
    """The dataset's next version with ``frozen`` set to ``reason`` (or removed), checked as
    any dataset change; ``Conflict`` if it already is (or is not) frozen."""
    current = await _current(svc, name)
    if current is None:
        raise NotFound("no such dataset")
    frozen = current.body.get("frozen")
    if unfreeze and frozen is None:
        raise Conflict("the dataset is not frozen")
    if not unfreeze and frozen is not None:
        raise Conflict("the dataset is already frozen")
    body = {k: v for k, v in current.body.items() if k != "frozen"}
    if not unfreeze:
        body["frozen"] = reason
    return await _check_dataset(svc, name, {**body, "reason": reason})


def freeze_prepared(
    svc: Services, actx: AuditContext, change: PolicyChange, action: str
) -> Prepared:
    return _policy_prepared(svc, actx, change, action, dict(change.body))


def _policy_prepared(
    svc: Services, actx: AuditContext, change: PolicyChange, action: str, body: dict[str, Any]
) -> Prepared:
    draft = actx.draft("ok", reason=change.reason, detail=policy_detail(change))
    write = PolicyWrite(
        change.kind, change.name, change.body, actx.actor or "",
        replace(draft, action=action), change.expected_version,
    )  # fmt: skip
    before = _parse(svc, change.kind, change.before)
    after = _parse(
        svc, change.kind, PolicyVersion(change.kind, change.name, 0, change.body, "", "")
    )
    assert after is not None  # noqa: S101 (the change was validated)
    body.pop("version", None)
    return Prepared(
        action, change.name, body, change.reason, str(change.expected_version),
        risks(before, after), write,
    )  # fmt: skip


async def _current(svc: Services, name: str) -> PolicyVersion | None:
    return await svc.store.get_policy("dataset", name)


def _keep_frozen(body: Any, current: PolicyVersion | None) -> Any:
    if not isinstance(body, dict):
        return body
    frozen = None if current is None else current.body.get("frozen")
    if "frozen" in body and body["frozen"] != frozen:
        raise PolicyFileError(
            ["frozen: changes only through POST /v1/admin/datasets/{name}/freeze or /unfreeze"]
        )
    clean = {k: v for k, v in body.items() if k != "frozen"}
    return clean if frozen is None else {**clean, "frozen": frozen}


async def _check_dataset(svc: Services, name: str, body: Any) -> PolicyChange:
    return await svc.registry.check_dataset(
        name, body, forbidden=state_paths(svc.config), source_check=svc.warehouse.source_problems
    )


def _parse(
    svc: Services, kind: PolicyKind, found: PolicyVersion | None
) -> Tier | DatasetSpec | None:
    """The object a stored (or checked) body describes; None if absent or no longer valid
    (a change to it is then classified as a new one)."""
    if found is None:
        return None
    try:
        if kind == "tier":
            return tier_from_dict(found.body, where=f"tier {found.name}")
        return svc.registry.validate_dataset(found.body, require_source=False)
    except PolicyFileError:
        return None


def policy_detail(change: PolicyChange) -> dict[str, Any]:
    before = change.before
    old = None if before is None else {k: v for k, v in before.body.items() if k != "version"}
    detail: dict[str, Any] = {
        "name": change.name,
        "before_version": None if before is None else before.version,
        "before_sha256": None if old is None else digest(old),
        "after_sha256": digest(change.body),
    }
    if change.budget_changed and old is not None:
        keys = [k for k in BUDGET_KEYS if k in old or k in change.body]
        detail["budget_change"] = {
            "before": {k: old.get(k) for k in keys},
            "after": {k: change.body.get(k) for k in keys},
        }
    return detail


# --- licences --------------------------------------------------------------------------------


async def prepare_licence_create(svc: Services, actx: AuditContext, body: Any) -> Prepared:
    """``POST /v1/admin/licences``. Raises risk when it is a reissue (``risk.reissued``:
    the subject's licences, any status, against the new one's datasets). The overlap rule the
    store's insert applies is checked here too, so a proposal that could never apply is not
    made. The proposal keeps the licence's id, so the approval issues that licence."""
    licence, reason = licence_request(body, svc.clock())
    actx.licence_id, actx.tier = licence.id, licence.tier
    await check_licence_policy(svc.registry, licence)
    await refuse_if_suspended(svc.store, licence)
    held = await svc.store.licences_for(licence.subject)
    check_no_overlap(licence, held)
    after = licence_digest_fields(licence)
    detail = {"after": after, "before_sha256": None, "after_sha256": digest(after)}
    draft = replace(actx.draft("ok", reason=reason, detail=detail), action="licence.create")
    base = held_state(held)
    requested = {**{k: v for k, v in body.items() if k != "reason"}, "id": licence.id}
    return Prepared(
        "licence.create", licence.id, requested, reason, base, reissued(licence, held),
        NewLicence(licence, draft, base),
    )  # fmt: skip


async def prepare_licence_patch(
    svc: Services, actx: AuditContext, licence_id: str, body: Any
) -> Prepared:
    """``PATCH /v1/admin/licences/{id}``. A licence held by its organisation's suspension is
    reactivated only with the organisation (``Conflict``)."""
    current = await svc.store.get_licence(licence_id)
    if current is None:
        raise NotFound("no such licence")
    actx.tier = current.tier
    updated, reason = patch_licence(current, body, svc.clock())
    await check_licence_policy(svc.registry, updated, before=current)
    if current.status != "active" and updated.status == "active":
        held_by = await svc.store.hold_of(current.id)
        if held_by is not None:
            raise Conflict(
                "the licence is suspended with its organisation; reactivate the organisation "
                "(POST /v1/admin/organisations/{name}/reactivate)"
            )
    before, after = licence_digest_fields(current), licence_digest_fields(updated)
    changes = {k: body[k] for k in body if k != "reason"}
    detail = {"changes": changes, "before_sha256": digest(before), "after_sha256": digest(after)}
    draft = replace(actx.draft("ok", reason=reason, detail=detail), action="licence.update")
    base = licence_state(current)
    write = LicenceWrite(current.id, {k: getattr(updated, k) for k in changes}, draft, base)
    return Prepared(
        "licence.update", current.id, changes, reason, base, risks(current, updated), write
    )


async def prepare_grant(svc: Services, actx: AuditContext, licence_id: str, body: Any) -> Prepared:
    """``POST /v1/admin/licences/{id}/grants``: always raises risk."""
    lic = await svc.store.get_licence(licence_id)
    if lic is None:
        raise NotFound("no such licence")
    actx.tier = lic.tier
    grant = grant_from_json(body, lic, actx.actor or "")
    actx.dataset = grant.dataset
    amounts = {k: v for k, v in grant.to_json().items() if k in ("epsilon", "delta", "layer")}
    draft = replace(
        actx.draft("ok", reason=grant.reason, detail={"grant": amounts}), action="licence.grant"
    )
    base = licence_state(lic)
    write = GrantWrite(grant, ceiling(await svc.registry.tier(lic.tier)), draft, base)
    requested = {k: v for k, v in body.items() if k != "reason"}
    return Prepared("licence.grant", lic.id, requested, grant.reason, base, [GRANT_RISK], write)


# --- organisations ---------------------------------------------------------------------------


async def prepare_reactivation(
    svc: Services, actx: AuditContext, organisation: str, reason: str
) -> Prepared:
    """Lift the organisation's suspension: its held licences become active again."""
    held = await svc.store.held_licences(organisation)
    if not held:
        raise Conflict("no licence of this organisation is held by a suspension")
    base = held_state([await svc.store.get_licence(i) for i in held])
    draft = replace(
        actx.draft("ok", reason=reason, detail={"organisation": organisation}),
        action="organisation.reactivate",
    )
    licence_draft = replace(
        actx.draft("ok", reason=reason, detail={"changes": {"status": "active"},
                                                "organisation": organisation}),
        action="licence.update",
    )  # fmt: skip
    write = Reactivation(organisation, draft, licence_draft, base)
    found = [f"organisation reactivated: {len(held)} licence(s)"]
    return Prepared("organisation.reactivate", organisation, {}, reason, base, found, write)


def system_draft(draft: AuditDraft) -> AuditDraft:
    """A record the gateway makes on its own (a proposal's expiry)."""
    return replace(draft, actor="system", roles=())

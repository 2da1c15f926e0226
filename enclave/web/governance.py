"""Four-eyes proposals and incident controls (role ``admin``; ``docs/governance.md``).

``gate()`` is the one place a change becomes a proposal: with ``governance.four_eyes`` on, a
change that raises risk (``governance/risk.py``) answers 202 with the proposal instead of
taking effect; unfreezing a dataset and reactivating an organisation always do, whatever the
switch says. A second admin approves (the change is validated again against the state at
that moment and applied, in one transaction, only if its target is unchanged) or rejects it.

Incident controls take effect at once: freezing a dataset (a new version of its definition,
so every replica refuses its queries at the next request) and suspending every active licence
of an organisation. Audit actions: ``proposal.create|approve|reject|expire``,
``dataset.freeze|unfreeze``, ``organisation.suspend|reactivate``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from aiohttp import web

from enclave.errors import BadRequest, NotFound
from enclave.governance.changes import (
    Prepared,
    freeze_prepared,
    prepare_freeze,
    prepare_grant,
    prepare_licence_create,
    prepare_licence_patch,
    prepare_policy,
    prepare_reactivation,
    system_draft,
)
from enclave.governance.proposal import (
    STATUSES,
    Decision,
    PolicyWrite,
    Proposal,
    check_decision,
    is_expired,
)
from enclave.ids import new_id
from enclave.inputs import MAX_NAME_CHARS, MAX_TEXT_CHARS, invalid, read_string
from enclave.models import iso
from enclave.policy.version import PolicyKind
from enclave.web.body import json_response, read_json
from enclave.web.keys import audit_ctx_key, services_key
from enclave.web.params import QueryParams
from enclave.web.roles import requires_role

routes = web.RouteTableDef()


async def gate(
    request: web.Request, prepared: Prepared, *, always: bool = False
) -> web.Response | None:
    """A 202 proposal when the change must wait for a second admin; None: apply it now."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    gov = svc.config.governance
    if not always and not (gov.four_eyes and prepared.risks):
        return None
    if not prepared.reason:
        raise invalid(
            ["reason: required: this change raises risk and waits for a second admin "
             f"({'; '.join(prepared.risks)})"]
        )  # fmt: skip
    now = svc.clock()
    proposal = Proposal(
        id=new_id("prop"), kind=prepared.kind, target=prepared.target, body=prepared.body,
        base=prepared.base, risks=tuple(prepared.risks), reason=prepared.reason,
        proposer=actx.actor or "", expires_at=iso(now + dt.timedelta(hours=gov.proposal_ttl_hours)),
    )  # fmt: skip
    actx.action = "proposal.create"
    stored = await svc.store.add_proposal(proposal, actx.draft("ok"))
    actx.audited = True
    response = json_response(stored.to_json(), status=202)
    response.headers["Location"] = f"/v1/admin/proposals/{stored.id}"
    return response


async def _reason(request: web.Request) -> str:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    problems = [f"{k}: unknown field" for k in sorted(str(k) for k in body) if k != "reason"]
    reason = read_string(problems, body.get("reason"), "reason", MAX_TEXT_CHARS)
    if problems:
        raise invalid(problems)
    assert reason is not None  # noqa: S101 (a problem was raised otherwise)
    return reason


def _name(request: web.Request, what: str) -> str:
    name = request.match_info["name"]
    if len(name) > MAX_NAME_CHARS:
        raise NotFound(f"no such {what}")
    return name


# --- proposals -------------------------------------------------------------------------------


async def _expire_due(request: web.Request) -> None:
    """Mark the proposals past their expiry ``expired`` (each audited) before answering."""
    svc = request.app[services_key]
    draft = system_draft(replace(request[audit_ctx_key].draft("ok"), action="proposal.expire"))
    await svc.store.expire_proposals(draft, svc.clock())


@routes.get("/v1/admin/proposals")
@requires_role("admin")
async def list_proposals(request: web.Request) -> web.Response:
    params = QueryParams(request.query, {"status"})
    status = params.choice("status", STATUSES)
    params.done()
    await _expire_due(request)
    found = await request.app[services_key].store.list_proposals(status)
    return json_response({"proposals": [p.to_json() for p in found]})


@routes.get("/v1/admin/proposals/{id}")
@requires_role("admin")
async def get_proposal(request: web.Request) -> web.Response:
    await _expire_due(request)
    return json_response((await _proposal(request)).to_json())


async def _proposal(request: web.Request) -> Proposal:
    pid = request.match_info["id"]
    found = (
        None
        if len(pid) > MAX_NAME_CHARS
        else await request.app[services_key].store.get_proposal(pid)
    )
    if found is None:
        raise NotFound("no such proposal")
    return found


@routes.post("/v1/admin/proposals/{id}/approve")
@requires_role("admin")
async def approve_proposal(request: web.Request) -> web.Response:
    """Validate the proposed change again, now, and apply it with the approval (one
    transaction); 409 if it expired, was decided, or its target changed since."""
    return await _decide(request, approve=True)


@routes.post("/v1/admin/proposals/{id}/reject")
@requires_role("admin")
async def reject_proposal(request: web.Request) -> web.Response:
    """Reject a proposal (its proposer may withdraw their own this way)."""
    return await _decide(request, approve=False)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "proposal.approve" if approve else "proposal.reject"
    reason = await _reason(request)
    p = await _proposal(request)
    actx.detail.update({"proposal_id": p.id, "proposed_by": p.proposer})
    actor = actx.actor or ""
    # early, before the change is validated again; the store checks the same in its transaction
    check_decision(p, approve, actor, await svc.store.licences_for(actor))
    now = svc.clock()
    write = None
    if approve and not is_expired(p, now):
        write = (await _prepare_again(request, p)).guarded(p.base)
    decision = Decision(
        p.id, approve, actor, reason, now, actx.draft("ok", reason=reason),
        system_draft(replace(actx.draft("ok"), action="proposal.expire")),
    )  # fmt: skip
    decided = await svc.store.decide_proposal(decision, write)
    actx.audited = True
    out: dict[str, Any] = decided.proposal.to_json()
    out["applied_seq"] = None if decided.applied is None else decided.applied.seq
    return json_response(out)


async def _prepare_again(request: web.Request, p: Proposal) -> Prepared:
    """The proposed change, validated against the state now, exactly as a direct change."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    body = {**p.body, "reason": p.reason}
    if p.kind in ("tier.update", "dataset.update"):
        kind: PolicyKind = "tier" if p.kind == "tier.update" else "dataset"
        actx.tier, actx.dataset = (p.target, None) if kind == "tier" else (None, p.target)
        return await prepare_policy(svc, actx, kind, p.target, {**body, "version": int(p.base)})
    if p.kind == "licence.create":
        return await prepare_licence_create(svc, actx, body)
    if p.kind == "licence.update":
        actx.licence_id = p.target
        return await prepare_licence_patch(svc, actx, p.target, body)
    if p.kind == "licence.grant":
        actx.licence_id = p.target
        return await prepare_grant(svc, actx, p.target, body)
    if p.kind == "dataset.unfreeze":
        actx.dataset = p.target
        change = await prepare_freeze(svc, p.target, p.reason, unfreeze=True)
        return freeze_prepared(svc, actx, change, "dataset.unfreeze")
    return await prepare_reactivation(svc, actx, p.target, p.reason)


# --- incident controls -----------------------------------------------------------------------


@routes.post("/v1/admin/datasets/{name}/freeze")
@requires_role("admin")
async def freeze_dataset(request: web.Request) -> web.Response:
    """Refuse every query and estimate of the dataset from the next request on, on every
    replica (423 ``dataset-frozen`` with the reason); spend and history are kept."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "dataset.freeze"
    actx.dataset = _name(request, "dataset")
    reason = await _reason(request)
    change = await prepare_freeze(svc, actx.dataset, reason, unfreeze=False)
    w = freeze_prepared(svc, actx, change, "dataset.freeze").write
    assert isinstance(w, PolicyWrite)  # noqa: S101 (a dataset change)
    stored, _ = await svc.store.put_policy(w.kind, w.name, w.body, w.actor, w.draft, w.expected)
    actx.audited = True
    return json_response({**stored.body, "version": stored.version})


@routes.post("/v1/admin/datasets/{name}/unfreeze")
@requires_role("admin")
async def unfreeze_dataset(request: web.Request) -> web.Response:
    """Always a proposal (202): a second admin approves lifting a freeze."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "dataset.unfreeze"
    actx.dataset = _name(request, "dataset")
    reason = await _reason(request)
    change = await prepare_freeze(svc, actx.dataset, reason, unfreeze=True)
    response = await gate(
        request, freeze_prepared(svc, actx, change, "dataset.unfreeze"), always=True
    )
    assert response is not None  # noqa: S101 (always=True)
    return response


@routes.post("/v1/admin/organisations/{name}/suspend")
@requires_role("admin")
async def suspend_organisation(request: web.Request) -> web.Response:
    """Suspend every active licence whose ``organization`` is exactly ``name``, in one
    transaction, and hold them: each is reactivated only with the organisation."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "organisation.suspend"
    org = _name(request, "organisation")
    reason = await _reason(request)
    actx.detail["organisation"] = org
    draft = actx.draft("ok", reason=reason)
    licence_draft = replace(
        actx.draft("ok", reason=reason, detail={"changes": {"status": "suspended"}}),
        action="licence.update",
    )
    done = await svc.store.suspend_organisation(org, reason, draft, licence_draft)
    actx.audited = True
    return json_response(
        {"organisation": org, "suspended": list(done.licence_ids), "audit_seq": done.record.seq}
    )


@routes.post("/v1/admin/organisations/{name}/reactivate")
@requires_role("admin")
async def reactivate_organisation(request: web.Request) -> web.Response:
    """Always a proposal (202): approving it makes the held licences active again."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "organisation.reactivate"
    org = _name(request, "organisation")
    reason = await _reason(request)
    actx.detail["organisation"] = org
    response = await gate(request, await prepare_reactivation(svc, actx, org, reason), always=True)
    assert response is not None  # noqa: S101 (always=True)
    return response

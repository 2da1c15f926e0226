"""Admin endpoints: licences, tiers, datasets, token revocations. Every change is audited in
the same store transaction as the change itself, with before/after digests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from enclave.audit.licence_status import status_reason
from enclave.errors import BadRequest, Conflict, NotFound
from enclave.governance.changes import (
    prepare_licence_create,
    prepare_licence_patch,
    prepare_policy,
)
from enclave.governance.proposal import LicenceWrite, NewLicence, PolicyWrite
from enclave.inputs import MAX_EXPIRY_DAYS, MAX_TEXT_CHARS, MAX_VERSION
from enclave.models import Licence
from enclave.policy.version import PolicyKind
from enclave.store.base import Store
from enclave.web.body import json_response, read_json
from enclave.web.governance import gate
from enclave.web.keys import audit_ctx_key, services_key
from enclave.web.params import QueryParams
from enclave.web.roles import requires_role

routes = web.RouteTableDef()
PUT_ATTEMPTS = 10  # a PUT without a version is checked again after losing a race, up to this


@routes.get("/v1/admin/licences")
@requires_role("admin")
async def list_licences(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    params = QueryParams(request.query, {"subject", "expiring_within_days"})
    subject = params.text("subject")
    days = params.integer("expiring_within_days", default=None, low=0, high=MAX_EXPIRY_DAYS)
    params.done()
    licences = await svc.store.list_licences(subject)
    if days is not None:
        now = svc.clock()
        horizon = now + dt.timedelta(days=days)
        licences = [
            lic for lic in licences if lic.status != "revoked" and now <= lic.valid_until <= horizon
        ]
    return json_response({"licences": [await _licence_json(svc.store, lic) for lic in licences]})


async def _licence_json(store: Store, lic: Licence) -> dict[str, Any]:
    return {**lic.to_json(), "status_reason": await status_reason(store, lic)}


@routes.post("/v1/admin/licences")
@requires_role("admin")
async def create_licence(request: web.Request) -> web.Response:
    """A reissue (the subject holds or held a licence on one of its datasets) waits for a
    second admin when four-eyes is on (202); a first licence is issued at once."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "licence.create"
    prepared = await prepare_licence_create(svc, actx, await read_json(request))
    if (proposal := await gate(request, prepared)) is not None:
        return proposal
    w = prepared.write
    assert isinstance(w, NewLicence)  # noqa: S101 (a new licence)
    await svc.store.issue_licence(w)
    actx.audited = True
    return json_response(await _licence_json(svc.store, w.licence), status=201)


@routes.get("/v1/admin/licences/{id}")
@requires_role("admin")
async def get_licence(request: web.Request) -> web.Response:
    lic = await request.app[services_key].store.get_licence(request.match_info["id"])
    if lic is None:
        raise NotFound("no such licence")
    return json_response(await _licence_json(request.app[services_key].store, lic))


@routes.patch("/v1/admin/licences/{id}")
@requires_role("admin")
async def update_licence(request: web.Request) -> web.Response:
    """A change that raises risk waits for a second admin when four-eyes is on (202)."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "licence.update"
    actx.licence_id = request.match_info["id"]
    prepared = await prepare_licence_patch(svc, actx, actx.licence_id, await read_json(request))
    if (proposal := await gate(request, prepared)) is not None:
        return proposal
    w = prepared.write
    assert isinstance(w, LicenceWrite)  # noqa: S101 (a licence change)
    lic, _ = await svc.store.update_licence(w.licence_id, w.changes, w.draft)
    actx.audited = True
    return json_response(await _licence_json(svc.store, lic))


@routes.post("/v1/admin/revocations")
@requires_role("admin")
async def create_revocation(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "revocation.create"
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"jti", "reason"}:
        raise BadRequest('the body must be {"jti": ..., "reason": ...}')
    jti, reason = body.get("jti"), body.get("reason")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise BadRequest("jti: required, a string of at most 256 characters")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_TEXT_CHARS:
        raise BadRequest(f"reason: required, at most {MAX_TEXT_CHARS} characters")
    await svc.store.add_revocation(
        jti, reason, actx.draft("ok", reason=reason, detail={"jti": jti})
    )
    actx.audited = True
    return json_response({"jti": jti, "reason": reason, "revoked": True}, status=201)


async def _list_policies(request: web.Request, kind: PolicyKind) -> web.Response:
    items = await request.app[services_key].store.list_policies(kind)
    return json_response({f"{kind}s": [{**p.body, "version": p.version} for p in items]})


async def _get_policy(request: web.Request, kind: PolicyKind) -> web.Response:
    store = request.app[services_key].store
    name = request.match_info["name"]
    params = QueryParams(request.query, {"version"})
    version = params.integer("version", default=None, low=1, high=MAX_VERSION)
    params.done()
    found = await store.get_policy(kind, name, version)
    if found is None:
        raise NotFound(f"no such {kind}" if version is None else f"no such {kind} version")
    history = await store.policy_history(kind, name)
    return json_response(
        {
            **found.body,
            "version": found.version,
            "created_at": found.created_at,
            "changed_by": found.actor,
            "versions": [p.version for p in history],
        }
    )


async def _put_policy(request: web.Request, kind: PolicyKind) -> web.Response:
    """Validate everything first (``PolicyFileError`` lists every problem; nothing is written),
    then store the next version and its audit record in one transaction; a change that raises
    risk waits for a second admin when four-eyes is on (202, ``web/governance.py``)."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = f"{kind}.update"
    name = request.match_info["name"]
    if kind == "tier":
        actx.tier = name
    else:
        actx.dataset = name
    body = await read_json(request)
    for attempt in range(1, PUT_ATTEMPTS + 1):
        prepared = await prepare_policy(svc, actx, kind, name, body)
        if (proposal := await gate(request, prepared)) is not None:
            return proposal
        w = prepared.write
        assert isinstance(w, PolicyWrite)  # noqa: S101 (a policy change)
        created = w.expected == 0
        try:
            stored, _ = await svc.store.put_policy(
                w.kind, w.name, w.body, w.actor, w.draft, w.expected
            )
            break
        except Conflict:
            # A caller who named a version gets the 409; one who did not asked to write
            # regardless, so a concurrent change only means checking again.
            named = isinstance(body, dict) and "version" in body and not created
            if named or attempt == PUT_ATTEMPTS:
                raise
    actx.audited = True
    status = 201 if created else 200
    return json_response({**stored.body, "version": stored.version}, status=status)


@routes.get("/v1/admin/tiers")
@requires_role("admin")
async def list_tiers(request: web.Request) -> web.Response:
    return await _list_policies(request, "tier")


@routes.get("/v1/admin/tiers/{name}")
@requires_role("admin")
async def get_tier(request: web.Request) -> web.Response:
    return await _get_policy(request, "tier")


@routes.put("/v1/admin/tiers/{name}")
@requires_role("admin")
async def put_tier(request: web.Request) -> web.Response:
    return await _put_policy(request, "tier")


@routes.get("/v1/admin/datasets")
@requires_role("admin")
async def list_datasets(request: web.Request) -> web.Response:
    return await _list_policies(request, "dataset")


@routes.get("/v1/admin/datasets/{name}")
@requires_role("admin")
async def get_dataset(request: web.Request) -> web.Response:
    return await _get_policy(request, "dataset")


@routes.put("/v1/admin/datasets/{name}")
@requires_role("admin")
async def put_dataset(request: web.Request) -> web.Response:
    return await _put_policy(request, "dataset")

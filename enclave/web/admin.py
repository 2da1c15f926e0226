"""Admin endpoints: licences, tiers, datasets, token revocations. Every change is audited in
the same store transaction as the change itself, with before/after digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from aiohttp import web

from enclave.errors import BadRequest, NotFound
from enclave.licences import licence_digest_fields, licence_from_json, patch_licence
from enclave.policy.files import dataset_from_dict, dataset_to_dict, tier_from_dict, tier_to_dict
from enclave.store.base import PolicyKind
from enclave.web.body import json_response, read_json
from enclave.web.keys import audit_ctx_key, services_key
from enclave.web.roles import requires_role

routes = web.RouteTableDef()


def digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@routes.get("/v1/admin/licences")
@requires_role("admin")
async def list_licences(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    subject = request.query.get("subject")
    licences = await svc.store.list_licences(subject)
    raw_days = request.query.get("expiring_within_days")
    if raw_days is not None:
        if not raw_days.isdigit() or int(raw_days) > 36500:
            raise BadRequest("expiring_within_days must be a whole number of days")
        now = svc.clock()
        horizon = now + dt.timedelta(days=int(raw_days))
        licences = [
            lic for lic in licences if lic.status != "revoked" and now <= lic.valid_until <= horizon
        ]
    return json_response({"licences": [lic.to_json() for lic in licences]})


@routes.post("/v1/admin/licences")
@requires_role("admin")
async def create_licence(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "licence.create"
    licence = licence_from_json(await read_json(request), svc.clock())
    actx.licence_id = licence.id
    actx.tier = licence.tier
    if await svc.registry.tier(licence.tier) is None:
        raise BadRequest(f"tier: unknown tier '{licence.tier}'")
    for name in licence.datasets:
        if await svc.registry.dataset(name) is None:
            raise BadRequest(f"datasets: unknown dataset '{name}'")
    after = licence_digest_fields(licence)
    await svc.store.insert_licence(
        licence, actx.draft("ok", detail={"after": after, "after_sha256": digest(after)})
    )
    actx.audited = True
    return json_response(licence.to_json(), status=201)


@routes.get("/v1/admin/licences/{id}")
@requires_role("admin")
async def get_licence(request: web.Request) -> web.Response:
    lic = await request.app[services_key].store.get_licence(request.match_info["id"])
    if lic is None:
        raise NotFound("no such licence")
    return json_response(lic.to_json())


@routes.patch("/v1/admin/licences/{id}")
@requires_role("admin")
async def update_licence(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "licence.update"
    actx.licence_id = request.match_info["id"]
    body = await read_json(request)
    current = await svc.store.get_licence(actx.licence_id)
    if current is None:
        raise NotFound("no such licence")
    actx.tier = current.tier
    updated, reason = patch_licence(current, body, svc.clock())
    if updated.tier != current.tier and await svc.registry.tier(updated.tier) is None:
        raise BadRequest(f"tier: unknown tier '{updated.tier}'")
    for name in set(updated.datasets) - set(current.datasets):
        if await svc.registry.dataset(name) is None:
            raise BadRequest(f"datasets: unknown dataset '{name}'")
    before, after = licence_digest_fields(current), licence_digest_fields(updated)
    changes = {k: body[k] for k in body if k != "reason"}
    lic, _ = await svc.store.update_licence(
        current.id,
        {k: getattr(updated, k) for k in changes},
        actx.draft(
            "ok",
            reason=reason,
            detail={
                "changes": changes,
                "before_sha256": digest(before),
                "after_sha256": digest(after),
            },
        ),
    )
    actx.audited = True
    return json_response(lic.to_json())


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
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason: required")
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
    raw_version = request.query.get("version")
    if raw_version is not None and not raw_version.isdigit():
        raise BadRequest("version must be a whole number")
    version = int(raw_version) if raw_version else None
    found = await store.get_policy(kind, name, version)
    if found is None:
        raise NotFound(f"no such {kind}")
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
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = f"{kind}.update"
    name = request.match_info["name"]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    body = {
        k: v
        for k, v in body.items()
        if k not in ("version", "versions", "created_at", "changed_by")
    }
    if body.get("name", name) != name:
        raise BadRequest("name: must match the URL")
    body["name"] = name
    cfg = svc.config.policies
    where = f"{kind} {name}"
    if kind == "tier":
        clean = tier_to_dict(tier_from_dict(body, where=where))
    else:
        actx.dataset = name
        spec = dataset_from_dict(
            body, base_dir=cfg.dir / "datasets", data_dir=cfg.data_dir, where=where
        )
        previous = await svc.registry.dataset(name)
        _check_identifier_unchanged(previous, spec)
        clean = dataset_to_dict(spec)
    before = await svc.store.get_policy(kind, name)
    version, _ = await svc.store.put_policy(
        kind,
        name,
        clean,
        actx.actor or "",
        actx.draft(
            "ok",
            detail={
                "name": name,
                "before_version": before.version if before else None,
                "before_sha256": digest(before.body) if before else None,
                "after_sha256": digest(clean),
            },
        ),
    )
    actx.audited = True
    return json_response({**version.body, "version": version.version})


def _check_identifier_unchanged(previous: Any, spec: Any) -> None:
    if previous is None:
        return
    if previous.privacy_unit.lower() != spec.privacy_unit.lower():
        raise BadRequest("privacy_unit: cannot be changed for an existing dataset")
    for col in previous.columns:
        new = spec.column(col.name)
        if col.type == "identifier" and (new is None or new.type != "identifier"):
            raise BadRequest(f"columns.{col.name}: an identifier cannot be retyped or removed")


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

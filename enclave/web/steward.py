"""The steward's everyday tools (role ``admin``): per-licence spend, budget grants, bulk
licence import, and registering a dataset from a file in the data folder.

Every change is audited with the actor and the reason given, in the same store transaction
as the change (grants: ``licence.grant``; imported licences: one ``licence.create`` each). A
schema proposal is audited too (``dataset.schema``): it opens a file of the data folder,
although it reads only the file's schema, never a value.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from enclave import data_files
from enclave.budget_layers import budget_layers, layers_json
from enclave.errors import NotFound
from enclave.governance.changes import prepare_grant
from enclave.governance.proposal import GrantWrite
from enclave.inputs import invalid
from enclave.licence_grants import licence_budget
from enclave.licence_import import issue_import, plan_import
from enclave.licences import licence_digest_fields
from enclave.models import Licence
from enclave.policy.registry import state_paths
from enclave.services import Services
from enclave.web.body import json_response, read_csv_text, read_json
from enclave.web.governance import gate
from enclave.web.keys import audit_ctx_key, services_key
from enclave.web.params import QueryParams
from enclave.web.roles import requires_role

routes = web.RouteTableDef()


async def _licence(svc: Services, licence_id: str) -> Licence:
    lic = await svc.store.get_licence(licence_id)
    if lic is None:
        raise NotFound("no such licence")
    return lic


@routes.get("/v1/admin/licences/{id}/budget")
@requires_role("admin")
async def get_licence_budget(request: web.Request) -> web.Response:
    """Spent, granted, limit and remaining per dataset of one licence (exact decimal text),
    with every budget layer (``layers``: licence, subject, organisation, dataset) exactly."""
    return json_response(await licence_budget_json(request.app[services_key], request))


async def licence_budget_json(svc: Services, request: web.Request) -> dict[str, Any]:
    """The licence ``{id}``'s budget per dataset with all its layers (admins and auditors)."""
    lic = await _licence(svc, request.match_info["id"])
    tier = await svc.registry.tier(lic.tier)
    now = svc.clock()
    budgets = []
    for row in await licence_budget(svc.store, lic, tier, now):
        spec = await svc.registry.dataset(row.dataset)
        layers = (
            []
            if tier is None
            else layers_json(await budget_layers(svc.store, lic, tier, spec or row.dataset, now))
        )
        budgets.append({**row.to_json(), "layers": layers})
    return {"licence_id": lic.id, "tier": lic.tier, "budgets": budgets}


@routes.get("/v1/admin/licences/{id}/grants")
@requires_role("admin")
async def list_grants(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    lic = await _licence(svc, request.match_info["id"])
    return json_response({"grants": [g.to_json() for g in await svc.store.grants(lic.id)]})


@routes.post("/v1/admin/licences/{id}/grants")
@requires_role("admin")
async def create_grant(request: web.Request) -> web.Response:
    """Top up a licence's budget for one dataset; the reason is required and audited. A grant
    raises risk: with four-eyes on it waits for a second admin (202)."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "licence.grant"
    actx.licence_id = request.match_info["id"]
    prepared = await prepare_grant(svc, actx, actx.licence_id, await read_json(request))
    if (proposal := await gate(request, prepared)) is not None:
        return proposal
    w = prepared.write
    assert isinstance(w, GrantWrite)  # noqa: S101 (a grant)
    record = await svc.store.add_grant(w.grant, w.ceiling, w.draft)
    actx.audited = True
    stored = {**w.grant.to_json(), "audit_seq": record.seq, "created_at": record.ts}
    return json_response(stored, status=201)


@routes.post("/v1/admin/licences/import")
@requires_role("admin")
async def import_licences(request: web.Request) -> web.Response:
    """Issue licences from a CSV body: every row checked, every problem listed (row and
    column), all or none; ``dry_run=true`` checks only. ``reason`` is required to issue."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "licence.import"
    params = QueryParams(request.query, {"dry_run", "reason"})
    dry_run = params.choice("dry_run", ("true", "false"), default="false") == "true"
    reason = params.text("reason")  # a query parameter: at most MAX_NAME_CHARS
    if not dry_run and not (reason or "").strip():
        params.problems.append("reason: required to issue licences (kept in the audit log)")
    text = await read_csv_text(request)
    plan = await plan_import(
        text, svc.store, svc.registry, svc.clock(), four_eyes=svc.config.governance.four_eyes
    )
    if problems := [*params.problems, *plan.problems]:  # the parameters' and the rows', together
        raise invalid(problems)
    if not dry_run:
        actx.action = "licence.create"
        await issue_import(
            svc.store,
            plan,
            lambda lic: actx.draft(
                "ok",
                reason=reason,
                detail={"after": licence_digest_fields(lic), "import": "api"},
            ),
        )
        actx.audited = True
    return json_response(
        {
            "dry_run": dry_run,
            "count": len(plan.licences),
            "licences": [lic.to_json() for lic in plan.licences],
        },
        status=200 if dry_run else 201,
    )


@routes.get("/v1/admin/data-files")
@requires_role("admin")
async def list_data_files(request: web.Request) -> web.Response:
    """Data files a dataset can be registered from: paths relative to ``policies.data_dir``."""
    svc = request.app[services_key]
    found = await asyncio.to_thread(
        data_files.list_files, svc.config.policies.data_dir, state_paths(svc.config)
    )
    return json_response({"files": found})


@routes.get("/v1/admin/data-files/schema")
@requires_role("admin")
async def propose_schema(request: web.Request) -> web.Response:
    """Column names and types proposed from a data file's schema alone (never its values)."""
    svc = request.app[services_key]
    actx = request[audit_ctx_key]
    actx.action = "dataset.schema"
    params = QueryParams(request.query, {"source"})
    source = params.text("source")  # a query parameter: at most MAX_NAME_CHARS
    if source is None:
        params.problems.append("source: required, a file path relative to the data folder")
    params.done()
    assert source is not None  # noqa: S101 (refused above)
    actx.detail["path"] = source
    spec = svc.registry.source_spec(source, forbidden=state_paths(svc.config))
    proposal = data_files.propose(await svc.warehouse.source_schema(spec))
    await svc.store.append(actx.draft("ok", detail={"columns": len(proposal)}))
    actx.audited = True
    return json_response({"source": source, "columns": proposal})

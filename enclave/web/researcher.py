"""Researcher endpoints: datasets, queries, estimates, budget, own history."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from enclave import pipeline
from enclave.audit.log import AuditFilter
from enclave.budget_layers import budget_layers, researcher_json
from enclave.dummy import DEFAULT_ROWS, FORMATS, MAX_ROWS, MAX_SEED, DummyRequest, dummy_filename
from enclave.errors import QueryTimeout, ReleaseFailed
from enclave.ledger.budget import period_window
from enclave.models import DatasetSpec
from enclave.policy.decide import visible_datasets
from enclave.query.request import BatchRequest, QueryRequest
from enclave.web.body import json_response, read_json
from enclave.web.keys import audit_ctx_key, metrics_key, principal_key, services_key
from enclave.web.params import QueryParams
from enclave.web.roles import requires_role

routes = web.RouteTableDef()


@routes.get("/v1/datasets")
@requires_role("researcher")
async def list_datasets(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    principal = request[principal_key]
    licences = await svc.store.licences_for(principal.subject)
    tiers = await svc.registry.tier_map()
    specs = await svc.registry.datasets()
    visible = visible_datasets(licences, tiers, specs, svc.clock())
    return json_response({"datasets": [_dataset_json(s) for s in visible]})


def _dataset_json(spec: DatasetSpec) -> dict[str, Any]:
    out = spec.to_json()
    out.pop("source", None)  # where the data lives is the steward's business
    return out


@routes.get("/v1/datasets/{name}/dummy")
@requires_role("researcher")
async def get_dummy(request: web.Request) -> web.Response:
    """Dummy rows shaped like the dataset, from its public metadata only: free, audited."""
    actx = request[audit_ctx_key]
    actx.action = "dataset.dummy"

    def read_request() -> DummyRequest:
        params = QueryParams(request.query, {"rows", "seed", "format"})
        rows = params.integer("rows", default=DEFAULT_ROWS, low=1, high=MAX_ROWS)
        seed = params.integer("seed", default=0, low=0, high=MAX_SEED)
        fmt = params.choice("format", FORMATS, default="parquet")
        params.done()
        return DummyRequest(rows=rows or DEFAULT_ROWS, seed=seed or 0, format=fmt or "parquet")

    spec, req, body = await pipeline.dummy_data(
        request.app[services_key],
        request[principal_key],
        request.match_info["name"],
        read_request,
        actx,
    )
    disposition = f'attachment; filename="{dummy_filename(spec, req)}"'
    return web.Response(
        body=body, content_type=req.media_type, headers={"Content-Disposition": disposition}
    )


@routes.post("/v1/queries")
@requires_role("researcher")
async def post_query(request: web.Request) -> web.Response:
    actx = request[audit_ctx_key]
    actx.action = "query"
    req = QueryRequest.from_json(await read_json(request))
    metrics = request.app[metrics_key]
    try:
        result = await pipeline.run_query(
            request.app[services_key], request[principal_key], req, actx
        )
    except (QueryTimeout, ReleaseFailed) as failure:  # charged as a release is: counted alike
        metrics.record_charge(failure.charged)
        raise
    metrics.record_release(result.cached, float(result.epsilon))
    return json_response(result.to_json())


@routes.post("/v1/queries/estimate")
@requires_role("researcher")
async def post_estimate(request: web.Request) -> web.Response:
    request[audit_ctx_key].action = "query.estimate"
    req = QueryRequest.from_json(await read_json(request))
    svc, principal = request.app[services_key], request[principal_key]
    return json_response(await pipeline.estimate_query(svc, principal, req, request[audit_ctx_key]))


@routes.post("/v1/queries/estimate/batch")
@requires_role("researcher")
async def post_estimate_batch(request: web.Request) -> web.Response:
    """Price several queries on one dataset together against the budget left; free."""
    request[audit_ctx_key].action = "query.estimate"
    req = BatchRequest.from_json(await read_json(request))
    svc, principal = request.app[services_key], request[principal_key]
    return json_response(await pipeline.estimate_batch(svc, principal, req, request[audit_ctx_key]))


@routes.get("/v1/budget")
@requires_role("researcher")
async def get_budget(request: web.Request) -> web.Response:
    """Per licence and dataset: the licence's spend and limit, and what is left of the
    binding budget layer (``budget_layers.researcher_json``: shared layers coarsely)."""
    svc = request.app[services_key]
    principal = request[principal_key]
    now = svc.clock()
    out = []
    for lic in await svc.store.licences_for(principal.subject):
        tier = await svc.registry.tier(lic.tier)
        if tier is None:
            continue
        _, renews = period_window(lic.valid_from, tier.period_days, now)
        for name in lic.datasets:
            spec = await svc.registry.dataset(name)
            budgets = await budget_layers(svc.store, lic, tier, spec or name, now)
            own = budgets[0]
            out.append(
                {
                    "dataset": name,
                    "licence_id": lic.id,
                    "licence_status": lic.status,
                    "tier": tier.name,
                    "epsilon_spent": own.spent.epsilon_float,
                    "delta_spent": own.spent.delta_float,
                    "epsilon_limit": own.layer.limit.epsilon_float,
                    "delta_limit": own.layer.limit.delta_float,
                    **researcher_json(budgets, renews=renews),
                }
            )
    return json_response({"budgets": out})


@routes.get("/v1/queries")
@requires_role("researcher")
async def list_queries(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    principal = request[principal_key]
    params = QueryParams(request.query, {"limit", "cursor"})
    limit, after = params.limit(), params.cursor()
    params.done()
    records = await svc.store.audit_events(
        AuditFilter(actor=principal.subject, action="query"), after_seq=after, limit=limit
    )
    items = [
        {
            "query_id": (r.detail or {}).get("query_id"),
            "ts": r.ts,
            "dataset": r.dataset,
            "sql": r.sql,
            "epsilon": r.epsilon,
            "delta": r.delta,
            "cached": r.cached,
            "outcome": r.outcome,
            "reason": r.reason,
            "audit_seq": r.seq,
        }
        for r in records
    ]
    next_cursor = str(records[-1].seq) if len(records) == limit else None
    return json_response({"queries": items, "next_cursor": next_cursor})

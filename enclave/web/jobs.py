"""Jobs: ``POST /v1/synthetic``, ``POST /v1/queries/jobs``, ``GET /v1/jobs/{id}`` and its
result.

A job is visible to the researcher who submitted it and to admins and auditors; to anyone
else it does not exist (404, as an unseen dataset)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from enclave import pipeline
from enclave.dummy import FORMATS
from enclave.engine.child import ChildPool
from enclave.errors import NotFound
from enclave.jobs import query as query_jobs
from enclave.jobs.job import Job
from enclave.jobs.runner import JobRunner
from enclave.models import Principal, Release
from enclave.query.request import QueryRequest
from enclave.synthetic import flow
from enclave.synthetic.request import SyntheticRequest
from enclave.web.body import json_response, read_json
from enclave.web.keys import (
    audit_ctx_key,
    metrics_key,
    principal_key,
    runner_key,
    services_key,
)
from enclave.web.params import QueryParams
from enclave.web.roles import requires_role

routes = web.RouteTableDef()
RESULT_FORMATS = (*FORMATS, "report")


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The job runner and its child processes; on stop, running jobs go back to the queue."""
    svc = app[services_key]
    children = ChildPool(svc.config.jobs.workers)
    metrics = app[metrics_key]
    runner = JobRunner(
        svc.store,
        svc.config.jobs,
        {flow.KIND: flow.handler(svc, children), query_jobs.KIND: query_jobs.handler(svc)},
        clock=svc.clock,
        on_end=lambda run: metrics.record_job(run.job.kind, run.state or "", run.charged),
    )
    app[runner_key] = runner
    runner.start()
    try:
        yield
    finally:
        await runner.stop()
        children.close()


@routes.post("/v1/synthetic")
@requires_role("researcher")
async def post_synthetic(request: web.Request) -> web.Response:
    actx = request[audit_ctx_key]
    actx.action = flow.KIND
    req = SyntheticRequest.from_json(await read_json(request))
    job, created = await flow.submit(request.app[services_key], request[principal_key], req, actx)
    if created:
        request.app[runner_key].wake()
    body = job_json(job)
    body["cached"] = not created and job.state == "done"  # a repeat: nothing spent
    return _job_response(body, 202 if created else 200)


@routes.post("/v1/queries/jobs")
@requires_role("researcher")
async def post_query_job(request: web.Request) -> web.Response:
    """A query as a job (docs/researcher.md): refusals and a cached repeat answer at once."""
    actx = request[audit_ctx_key]
    actx.action = query_jobs.SUBMIT_ACTION
    req = QueryRequest.from_json(await read_json(request))
    svc = request.app[services_key]
    submitted = await query_jobs.submit(svc, request[principal_key], req, actx)
    if isinstance(submitted, Release):  # a repeat of a released query: free, no job
        request.app[metrics_key].record_release(True, 0.0)
        return json_response(submitted.to_json())
    job, created = submitted
    if created:
        request.app[runner_key].wake()
    return _job_response(job_json(job), 202)


def _job_response(body: dict[str, Any], status: int) -> web.Response:
    response = json_response(body, status=status)
    response.headers["Location"] = str(body["status_url"])
    return response


@routes.get("/v1/jobs/{id}")
@requires_role("researcher", "admin", "auditor")
async def get_job(request: web.Request) -> web.Response:
    job = await _visible_job(request)
    return json_response(job_json(job))


@routes.get("/v1/jobs/{id}/result")
@requires_role("researcher", "admin", "auditor")
async def get_result(request: web.Request) -> web.StreamResponse:
    job = await _visible_job(request)
    query = job.kind == query_jobs.KIND
    params = QueryParams(request.query, {"format"})
    choices = tuple(query_jobs.RESULT_FORMATS) if query else RESULT_FORMATS
    fmt = params.choice("format", choices, default=choices[0]) or choices[0]
    params.done()
    svc = request.app[services_key]
    principal = request[principal_key]
    if principal.subject == job.owner and principal.has("researcher"):
        # the owner's licence must still be usable, as for a cached query's replay
        await pipeline.resolve_dataset(svc, principal, job.dataset, request[audit_ctx_key])
    if query:
        return _query_result(job, fmt)
    path = flow.result_file(svc, job, fmt)
    if not await asyncio.to_thread(path.is_file):
        raise NotFound("the job's result files are gone")
    media = "application/json" if fmt == "report" else FORMATS[fmt]
    ext = "json" if fmt == "report" else fmt
    name = f"{job.id}-{'report' if fmt == 'report' else 'synthetic'}.{ext}"
    return web.FileResponse(
        path,
        headers={"Content-Type": media, "Content-Disposition": f'attachment; filename="{name}"'},
    )


def _query_result(job: Job, fmt: str) -> web.Response:
    body = query_jobs.answer(job)
    if body is None:
        raise NotFound("the job has no result (yet)")
    if fmt == "json":
        return json_response(body)
    name = f"{job.id}-query.csv"
    return web.Response(
        body=query_jobs.as_csv(body),
        headers={
            "Content-Type": query_jobs.RESULT_FORMATS["csv"],
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


async def _visible_job(request: web.Request) -> Job:
    job = await flow.get_job(request.app[services_key], request.match_info["id"])
    if not _may_read(request[principal_key], job):
        raise NotFound("unknown job")
    return job


def _may_read(principal: Principal, job: Job) -> bool:
    return principal.subject == job.owner or principal.has("admin") or principal.has("auditor")


def job_json(job: Job) -> dict[str, Any]:
    url = f"/v1/jobs/{job.id}"
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "dataset": job.dataset,
        "request": job.request.get("body"),
        "attempts": job.attempts,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "status_url": url,
    }
    if job.state == "done" and job.kind == query_jobs.KIND:
        out["result"] = query_jobs.summary(job, url)
    elif job.state == "done" and job.result is not None:
        out["result"] = {
            "epsilon": float(job.result["epsilon"]),
            "delta": float(job.result["delta"]),
            "rows": job.result["rows"],
            "result_sha256": job.result["result_sha256"],
            "files": {fmt: f"{url}/result?format={fmt}" for fmt in RESULT_FORMATS},
        }
    elif job.state == "failed" and job.result is not None:
        out["problem"] = job.result.get("problem")
    return out

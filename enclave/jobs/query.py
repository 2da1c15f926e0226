"""Queries as jobs (``POST /v1/queries/jobs``, docs/researcher.md): a long query that answers
later, through the same stages and the same charged stage as ``POST /v1/queries``.

``submit`` is a synchronous query up to the data (``pipeline.admit_run``): validate, resolve,
rate limit, parse, authorize, price, budget pre-check and spend guard, every refusal free and
answered at once (audited ``query.submit``). A repeat of a released query is answered from
the release cache at once, free, exactly as ``POST /v1/queries`` answers it (no job). Else a
``query`` job is queued (one active job per licence and query: a repeat while it runs joins
it) and the submission audited ``query.submit`` (nothing spent).

``run`` is the job's handler (``jobs/runner.py``). A job whose token was revoked since ends
``failed``, uncharged: checked when the attempt starts and again after the dataset's
preparation, just before the budget is reserved (``charged.reserve_unrevoked``). It admits
the query again as its owner
(without counting the rate limit twice): whatever changed since the submission (licence,
tier, dataset version, budget, and the budget reservation made last, before the data is read)
ends the job ``failed`` with no charge; a release of the same
query made meanwhile ends it ``done`` from the cache, free. Then ``charged.read_and_release``
runs it within ``jobs.timeout_s`` and its debit carries the job's end (``jobs.finish``), so the
charge and the job's end commit together: a job is charged once, whatever restarts or lost
leases happen, and a failure after the data was read is charged as a synchronous one is.
The answer's budget and audit sequence are known once the debit has committed; they are
written to the job right after (``jobs.annotate``).
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from enclave import pipeline
from enclave.audit.context import AuditContext
from enclave.audit.export import neutralise
from enclave.charged import read_and_release
from enclave.dp.accuracy import bounding_note
from enclave.errors import (
    BudgetExhausted,
    Conflict,
    DatasetUnavailable,
    EnclaveError,
    QueryTimeout,
    ReleaseFailed,
    ServiceUnavailable,
)
from enclave.ids import new_id
from enclave.jobs.job import Job, JobOp, queued
from enclave.jobs.runner import Handler, JobRun, enqueue, require_unrevoked, submitter
from enclave.models import Principal, Release
from enclave.query.request import QueryRequest
from enclave.services import Services
from enclave.store import jobs

KIND = "query"
SUBMIT_ACTION = "query.submit"
RESULT_FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


def request_body(req: QueryRequest) -> dict[str, Any]:
    """The validated request, as the job keeps it (and ``GET /v1/jobs/{id}`` shows it)."""
    return {
        "dataset": req.dataset,
        "sql": req.sql,
        "epsilon": None if req.epsilon is None else str(req.epsilon),
        "accuracy": req.accuracy,
        "max_share": None if req.max_share is None else str(req.max_share),
    }


def _request(body: dict[str, Any]) -> QueryRequest:
    def dec(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return QueryRequest(
        dataset=body["dataset"],
        sql=body["sql"],
        epsilon=dec(body.get("epsilon")),
        accuracy=body.get("accuracy"),
        max_share=dec(body.get("max_share")),
    )


async def submit(
    svc: Services, principal: Principal, req: QueryRequest, actx: AuditContext
) -> Release | tuple[Job, bool]:
    """A cached repeat's answer (free, at once), or the job (new: True; a running twin)."""
    adm = await pipeline.admit_run(svc, principal, req, actx)
    if adm.cached is not None:
        actx.action = "query"  # answered as a query: the same audit record as a sync repeat
        query_id = new_id("q")
        actx.detail["query_id"] = query_id
        return await pipeline.replay(svc, adm, actx, query_id)
    access = adm.access
    job, created = await enqueue(
        svc.store,
        queued(
            new_id("job"),
            KIND,
            principal.subject,
            access.licence.id,
            access.spec.name,
            adm.cache_key,
            {
                "body": request_body(req),
                "version": access.spec.version,
                "audit": actx.origin(),
                "jti": principal.jti,
            },
            svc.clock(),
        ),
        svc.config.jobs.max_active_per_licence,
    )
    cost = adm.cost()
    detail = {"job_id": job.id, "estimated_epsilon": cost.epsilon_float}
    await svc.store.append(actx.draft("ok", epsilon=0.0, detail=detail))
    actx.audited = True
    return job, created


# --- the job ------------------------------------------------------------------------------


def handler(svc: Services) -> Handler:
    async def run(job_run: JobRun) -> None:
        await _run(svc, job_run)

    return run


async def _run(svc: Services, run: JobRun) -> None:
    job = run.job
    audit = job.request["audit"]
    actx = AuditContext(
        request_id=audit["request_id"],
        client=audit["client"],
        action="query",
        actor=job.owner,
        roles=tuple(audit["roles"]),
        max_sql=svc.config.limits.audit_sql_chars,
        max_name=svc.config.limits.audit_name_chars,
        detail={"job_id": job.id, "attempt": job.attempts},
    )
    principal = Principal(subject=job.owner, roles=frozenset({"researcher"}))
    query_id = new_id("q")
    try:
        await require_unrevoked(svc.store, job)
        adm = await pipeline.admit_run(
            svc, principal, _request(job.request["body"]), actx, count=False
        )
        if adm.spec.version != job.request["version"]:
            raise Conflict("the dataset changed since the request; submit it again")
        actx.detail["query_id"] = query_id
        if adm.cached is not None:  # released meanwhile (a synchronous twin): free
            release = await pipeline.replay(svc, adm, actx, query_id)
            await run.finish("done", {"answer": release.to_json()})
            return
        charged = await pipeline.charged_query(
            svc, adm, query_id, svc.config.jobs.timeout_s, submitter(job), hold=f"res_{job.id}"
        )
    except DatasetUnavailable as exc:  # not prepared (failed, or still running): not charged
        await run.finish("failed", {"problem": _problem(exc, charged=False)})
        return
    except ServiceUnavailable:
        raise  # the store: the job runs again later
    except EnclaveError as exc:  # refused since the submission: nothing read, nothing spent
        await svc.store.append(actx.draft(exc.outcome, reason=exc.detail, epsilon=0.0))
        await run.finish("failed", {"problem": _problem(exc, charged=False)})
        return
    note = {**adm.epsilon_note(), "bounding": bounding_note(adm.spec)}

    def end(state: str, result: dict[str, Any]) -> JobOp:
        return jobs.finish(job, state, {**result, "query_id": query_id, "note": note}, svc.clock())

    # ---- after this line data has been read: every outcome is charged (charged.py) ----
    try:
        stored, debited = await read_and_release(svc, charged, actx, job=end)
    except BudgetExhausted as exc:  # its reservation expired (store/reserve.py): as a sync query
        await run.finish("failed", {"problem": _problem(exc, charged=False)})
        return
    except (QueryTimeout, ReleaseFailed):  # charged, and the job's end written with it
        run.ended("failed", charged.charge.cost.epsilon_float)
        return
    run.ended("done", charged.charge.cost.epsilon_float)
    body = pipeline.answer(adm, stored, query_id, debited).to_json()
    result = {"release": stored, "query_id": query_id, "note": note, "answer": body}
    await svc.store.job_write(jobs.annotate(job.id, result))


def _problem(exc: EnclaveError, *, charged: bool) -> dict[str, Any]:
    return {
        "type": exc.type_uri(),
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "charged": charged,
    }


# --- reading a query job ------------------------------------------------------------------


def answer(job: Job) -> dict[str, Any] | None:
    """A done query job's answer: the body ``POST /v1/queries`` returns. ``budget`` and
    ``audit_seq`` are null only if the gateway stopped between the charge and writing them."""
    if job.state != "done" or job.result is None:
        return None
    if "answer" in job.result:
        done: dict[str, Any] = job.result["answer"]
        return done
    stored = job.result["release"]
    release = Release.from_stored(
        stored,
        query_id=job.result["query_id"],
        dataset=job.dataset,
        cached=False,
        budget={},
        audit_seq=0,
        extra=job.result.get("note") or {},
    )
    return {**release.to_json(), "budget": None, "audit_seq": None}


def summary(job: Job, url: str) -> dict[str, Any] | None:
    """The ``result`` block of ``GET /v1/jobs/{id}`` for a done query job."""
    body = answer(job)
    if body is None:
        return None
    out = {
        "epsilon": body["epsilon_spent"],
        "delta": body["delta_spent"],
        "cached": body["cached"],
        "rows": len(body["rows"]),
        "files": {fmt: f"{url}/result?format={fmt}" for fmt in RESULT_FORMATS},
    }
    digest = (job.result or {}).get("release", {}).get("result_sha256")
    return out if digest is None else {**out, "result_sha256": digest}


def as_csv(body: dict[str, Any]) -> bytes:
    """The released rows as CSV (a header of the columns); the accuracy stays in the JSON. A
    text cell a spreadsheet could read as a formula (a caller's alias ``"=HYPERLINK(…)"``, a
    declared category value) gets a leading ``'``, as in the audit export (``neutralise``);
    numbers are written as they are."""

    def cell(value: Any) -> Any:
        return neutralise(value) if isinstance(value, str) else value

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([cell(c) for c in body["columns"]])
    writer.writerows([cell(v) for v in row] for row in body["rows"])
    return out.getvalue().encode()

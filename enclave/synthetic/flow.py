"""The synthetic-data flow: submit (the request), run (the job), read (status and files).

``submit`` does everything that needs no data, in the order queries do (``pipeline.py``):
resolve the dataset, licence and tier (an unseen dataset is 404); count the licence's rate
limit; refuse for free what the tier or the public schema rules out; answer a repeat from the
release cache (free, audited ``cached``); pre-check the budget at the requested epsilon; queue
the job (one active job per licence and request: a repeat while it runs joins it) and audit the
submission (nothing spent).

``run`` is the job's handler (``jobs/runner.py``). It re-checks what may have changed since
the submission (the submitting token revoked, dataset version, licence, tier, budget:
refusals end the job ``failed`` with no charge), prepares the bounded table (waiting for it if
it is being prepared, here or by another process), checks the submitting token once more and
reserves the requested epsilon on every budget layer (``charged.reserve_unrevoked``, the last
step before the data; revoked or refused: ``failed``, no charge, nothing read), and then,
with the data read in a child process
(``synthetic/mst.py``), every outcome is charged, in one store transaction with the job's
end (which turns the reservation into the charge):

- done: the charge is OpenDP's privacy map of the release rounded up to the ledger's grid
  (never above the requested epsilon), the release is kept in the cache and audited ``ok``;
- failed (any error or the time limit after the data was read): the requested epsilon is
  charged and audited ``error`` with a fixed reason, as a failed query is (``charged.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import shutil
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from enclave import budget_layers as layers
from enclave.audit.context import AuditContext
from enclave.audit.record import SYNTHETIC_FAILED_REASON, AuditDraft
from enclave.charged import reserve_unrevoked
from enclave.engine.child import ChildPool
from enclave.errors import (
    BudgetExhausted,
    EnclaveError,
    NotFound,
    RevokedToken,
    ServiceUnavailable,
    describe,
)
from enclave.ids import new_id
from enclave.jobs.job import Job, queued
from enclave.jobs.runner import Handler, JobRun, enqueue, require_unrevoked, submitter
from enclave.ledger.charge import CacheEntry, Charge
from enclave.ledger.grid import Amount
from enclave.models import DatasetSpec, Licence, Principal
from enclave.pipeline import resolve_dataset
from enclave.policy.decide import authorize
from enclave.services import Services
from enclave.store import jobs
from enclave.synthetic.mst import REPORT_FILE, RESULT_FILES, SynthTask, synthesize
from enclave.synthetic.request import SyntheticRequest, check_tier, synth_columns

log = logging.getLogger(__name__)

KIND = "synthetic"
FAILED_REASON = SYNTHETIC_FAILED_REASON
FAILED_TITLE = "the synthetic release failed after the data was read; its cost was charged"


def require_extra() -> None:
    """The ``synth`` extra is installed (checked before anything is charged)."""
    if importlib.util.find_spec("mbi") is None or importlib.util.find_spec("polars") is None:
        raise ServiceUnavailable(
            "synthetic data is not available: install enclave-gateway[synth] on the gateway"
        )


def _detail(req: SyntheticRequest) -> dict[str, Any]:
    return {"columns": list(req.columns), "rows": req.rows, "bins": req.bins}


async def submit(
    svc: Services, principal: Principal, req: SyntheticRequest, actx: AuditContext
) -> tuple[Job, bool]:
    """The job for ``req`` (new: True; a cached release or a running twin: False)."""
    actx.epsilon = float(req.epsilon)
    actx.detail.update(_detail(req))
    spec, licence, tier, _ = await resolve_dataset(svc, principal, req.dataset, actx)
    await svc.limiter.hit({f"lic:{licence.id}": tier.rate_limit_per_minute})
    check_tier(tier, req.epsilon)
    synth_columns(spec, req)  # the public schema's refusals, free
    require_extra()
    key = req.cache_key(spec)
    cached = await svc.store.get_cached(licence.id, key)
    if cached is not None:
        job = await get_job(svc, cached["job_id"])
        await svc.store.append(
            actx.draft(
                "ok",
                epsilon=0.0,
                cached=True,
                result_sha256=cached["result_sha256"],
                detail={"release_of": job.id},
            )
        )
        actx.audited = True
        return job, False
    # every budget layer (licence, subject, organisation, dataset), as queries are checked
    budgets = await layers.budget_layers(svc.store, licence, tier, spec, svc.clock())
    layers.check(budgets, Amount.charge(req.epsilon))
    job, created = await enqueue(
        svc.store,
        queued(
            new_id("job"),
            KIND,
            principal.subject,
            licence.id,
            spec.name,
            key,
            {
                "body": req.to_json(),
                "version": spec.version,
                "audit": {**actx.origin(), "tier": tier.name},
                "jti": principal.jti,
            },
            svc.clock(),
        ),
        svc.config.jobs.max_active_per_licence,
    )
    await svc.store.append(actx.draft("ok", epsilon=0.0, detail={"job_id": job.id}))
    actx.audited = True
    return job, created


async def get_job(svc: Services, job_id: str) -> Job:
    found = jobs.jobs_of(await svc.store.job_read(jobs.get(job_id)))
    if not found:
        raise NotFound("unknown job")
    return found[0]


def job_folder(svc: Services, job: Job) -> Path | None:
    """The folder of a finished job's files (``jobs.dir/<id>/<claim>``), else None."""
    if job.state != "done" or job.result is None:
        return None
    return Path(svc.config.jobs.dir) / job.id / str(job.result["claim"])


def result_file(svc: Services, job: Job, fmt: str) -> Path:
    folder = job_folder(svc, job)
    if folder is None:
        raise NotFound("the job has no result (yet)")
    return folder / (REPORT_FILE if fmt == "report" else RESULT_FILES[fmt])


# --- the job ------------------------------------------------------------------------------


def handler(svc: Services, children: ChildPool) -> Handler:
    async def run(job_run: JobRun) -> None:
        await _run(svc, children, job_run)

    return run


async def _run(svc: Services, children: ChildPool, run: JobRun) -> None:
    job = run.job
    req = SyntheticRequest(
        dataset=job.request["body"]["dataset"],
        columns=tuple(job.request["body"]["columns"]),
        epsilon=Decimal(job.request["body"]["epsilon"]),
        rows=int(job.request["body"]["rows"]),
        bins=int(job.request["body"]["bins"]),
    )
    now = await _recheck(svc, job, req)
    if isinstance(now, str):
        await run.finish("failed", {"problem": {"title": now, "charged": False}})
        return
    spec, licence, budgets = now
    try:
        bounded = await svc.warehouse.bounded_file(spec)
    except EnclaveError:
        await run.finish(
            "failed", {"problem": {"title": "the dataset is unavailable", "charged": False}}
        )
        return
    out_dir = Path(svc.config.jobs.dir) / job.id / str(job.claim)
    try:  # a folder that cannot be written fails the job here, before the data is read
        await asyncio.to_thread(shutil.rmtree, out_dir, True)  # an earlier attempt's leftovers
        await asyncio.to_thread(out_dir.mkdir, parents=True)
    except OSError:
        log.error("job %s: jobs.dir cannot be written", job.id)
        await run.finish(
            "failed", {"problem": {"title": "the gateway cannot store results", "charged": False}}
        )
        return
    task = SynthTask(
        bounded=str(bounded),
        columns=synth_columns(spec, req),
        k=spec.max_rows_per_unit,
        epsilon=float(req.epsilon),
        rows=req.rows,
        out_dir=str(out_dir),
    )
    try:  # the last step before the data: the debit below turns the reservation into the charge
        held = await reserve_unrevoked(
            svc,
            layers.charge_for(licence, job.dataset, budgets, Amount.charge(req.epsilon)),
            svc.config.jobs.timeout_s,
            f"res_{job.id}",  # a new attempt replaces an interrupted one's
            submitter(job),  # revoked while the job waited (its dataset's preparation)
        )
    except (RevokedToken, BudgetExhausted) as exc:  # or spent or held meanwhile: nothing read
        await asyncio.to_thread(shutil.rmtree, out_dir, True)
        title = _refused(exc.detail) if isinstance(exc, RevokedToken) else "budget exhausted"
        await run.finish("failed", {"problem": {"title": title, "charged": False}})
        return
    run.advance(0.1)
    # ---- from here on the data is read: every outcome is charged ----
    try:
        report = await children.call(svc.config.jobs.timeout_s, synthesize, task)
        cost = Amount.charge(Decimal(repr(float(report["epsilon"]))))
        if not cost.within(Amount.charge(req.epsilon)):  # the child refuses this before reading
            raise ValueError("the release's privacy map exceeds its cap")
        digest = await asyncio.to_thread(_sha256, out_dir / RESULT_FILES["parquet"])
    except asyncio.CancelledError:
        raise  # stopping: nothing released, nothing charged; the job is handed back
    except Exception as exc:
        log.error(
            "job %s: synthetic release failed after the data was read: %s", job.id, describe(exc)
        )
        await _charge_failure(svc, run, req, held)
        await asyncio.to_thread(shutil.rmtree, out_dir, True)  # never served: a failed attempt
        return
    run.advance(0.9)
    result = {
        "claim": job.claim,
        "epsilon": str(cost.epsilon_decimal),
        "delta": "0",
        "rows": int(report["rows"]),
        "result_sha256": digest,
    }
    draft = _draft(job, req, "ok", cost, result_sha256=digest)
    cache = CacheEntry(job.licence_id, job.request_key, {"job_id": job.id, **result})
    try:
        await svc.store.debit(
            draft,
            replace(held, cost=cost),  # at most what was reserved
            cache,
            job=jobs.finish(job, "done", result, svc.clock()),
        )
    except BudgetExhausted:  # its reservation expired meanwhile: released nothing, as queries
        await run.finish("failed", {"problem": {"title": "budget exhausted", "charged": False}})
    else:
        run.ended("done", cost.epsilon_float)
        await asyncio.to_thread(_drop_other_attempts, out_dir)


def _drop_other_attempts(kept: Path) -> None:
    """Earlier attempts' folders (a restart mid-job) beside the one the job released."""
    with contextlib.suppress(OSError):
        for folder in kept.parent.iterdir():
            if folder != kept:
                shutil.rmtree(folder, ignore_errors=True)


async def _charge_failure(
    svc: Services,
    run: JobRun,
    req: SyntheticRequest,
    charge: Charge,
) -> None:
    job = run.job
    cost = charge.cost
    problem = {"title": FAILED_TITLE, "charged": True, "epsilon": str(cost.epsilon_decimal)}
    try:
        await svc.store.debit(
            _draft(job, req, "error", cost, reason=FAILED_REASON),
            charge,
            job=jobs.finish(job, "failed", {"problem": problem}, svc.clock()),
        )
    except BudgetExhausted:
        await run.finish("failed", {"problem": {"title": "budget exhausted", "charged": False}})
    else:
        run.ended("failed", cost.epsilon_float)


async def _recheck(
    svc: Services, job: Job, req: SyntheticRequest
) -> tuple[DatasetSpec, Licence, tuple[layers.LayerBudget, ...]] | str:
    """What changed since the submission and now refuses the job (no data read), or the
    dataset, the licence and every budget layer to charge against."""
    try:
        await require_unrevoked(svc.store, job)
    except EnclaveError as exc:
        return _refused(exc.detail)
    spec = await svc.registry.dataset(job.dataset)
    if spec is None or spec.retired or spec.version != job.request["version"]:
        return "the dataset changed since the request; submit it again"
    licence = await svc.store.get_licence(job.licence_id)
    tiers = await svc.registry.tier_map()
    tier = tiers.get(licence.tier) if licence is not None else None
    principal = Principal(subject=job.owner, roles=frozenset({"researcher"}))
    decision = authorize(principal, licence, tier, spec, None, None, svc.clock(), tiers=tiers)
    if not decision.allowed or tier is None or licence is None:
        return _refused(decision.reason)
    try:
        check_tier(tier, req.epsilon)
    except EnclaveError as exc:
        return _refused(exc.detail)
    budgets = await layers.budget_layers(svc.store, licence, tier, spec, svc.clock())
    if not layers.fits(budgets, Amount.charge(req.epsilon)):
        return "budget exhausted"
    return spec, licence, budgets


def _refused(reason: str) -> str:
    """A failed job's title for a refusal since the request (nothing read, nothing charged)."""
    return f"refused since the request: {reason}"


def _audit(job: Job) -> dict[str, Any]:
    audit: dict[str, Any] = job.request["audit"]
    return audit


def _draft(
    job: Job,
    req: SyntheticRequest,
    outcome: str,
    cost: Amount,
    *,
    reason: str | None = None,
    result_sha256: str | None = None,
) -> AuditDraft:
    audit = _audit(job)
    return AuditDraft(
        action=KIND,
        outcome=outcome,
        actor=job.owner,
        roles=tuple(audit["roles"]),
        request_id=audit["request_id"],
        licence_id=job.licence_id,
        tier=audit["tier"],
        dataset=job.dataset,
        epsilon=cost.epsilon_float,
        delta=0.0,
        reason=reason,
        client=audit["client"],
        result_sha256=result_sha256,
        detail={"job_id": job.id, "attempt": job.attempts, **_detail(req)},
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

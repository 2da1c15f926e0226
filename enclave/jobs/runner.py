"""The durable job runner: work a request leaves behind, kept in the store (``store/jobs.py``).

A request that takes long (a synthetic table, ``synthetic/flow.py``; a query sent as a job,
``jobs/query.py``: a job has a ``kind`` and each kind registers a handler) inserts a
``queued`` job and answers 202 with its URL. Each gateway runs ``jobs.workers`` loops that
claim queued jobs from the store, so a job submitted to one replica may run on another, and
a job outlives the process that accepted it:

- a running job holds a *lease* (``jobs.lease_s``), renewed every third of it while its
  handler runs, with its progress;
- on a clean stop the runner hands its jobs back (state ``queued``): the next start, or
  another replica, claims them at once;
- if the process dies, the lease runs out and any runner claims the job again (``attempts``
  counts claims), so a job submitted before a crash still completes after the restart;
- a runner that loses its lease (it stalled past ``lease_s``) is cancelled as soon as a
  renewal finds the job gone, and its final write cannot land: a job's end is written only
  while its claim holds it (``JobLost``), in the same transaction as its charge.

A job keeps the ``jti`` of the token that submitted it (``submitter``). Each handler checks
it when an attempt starts (``require_unrevoked``) and again as the last step before any data is
read, after every wait (its dataset's preparation, possibly by another process, and anything
else an attempt awaits) and before its budget is reserved (``charged.reserve_unrevoked``). So
revoking that token stops its jobs as it stops its requests, whether they are queued or
waiting: they end ``failed``, uncharged; only a job already reading data goes on (and is
charged).

A handler owns its job's end: it calls ``finish`` (no charge) or ends it inside
``Store.debit`` (charged, ``store/jobs.py``). If the store cannot be written
(``ServiceUnavailable``) the job is left as it is: its lease lapses and it runs again later
(nothing was released or charged). A handler that raises anything else has its job marked
``failed`` with a fixed text and no charge: a handler that read data charges first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from enclave.auth.principal import refuse_revoked
from enclave.charged import Asker
from enclave.config import JobsConfig
from enclave.errors import (
    EnclaveError,
    RateLimited,
    ServiceUnavailable,
    describe,
)
from enclave.jobs.job import Job, JobLost
from enclave.models import utcnow
from enclave.store import jobs
from enclave.store.base import Store

log = logging.getLogger(__name__)

FAILED_TEXT = "the job failed before any data was read; nothing was charged"
JOB_RETRY_S = 30  # Retry-After of a submission refused for a full per-licence queue
JOB_REVOKED = "the token that submitted this job has been revoked"


@dataclass
class JobRun:
    """One claimed job as its handler sees it."""

    job: Job
    store: Store
    clock: Callable[[], dt.datetime]
    progress: float = 0.0
    finished: bool = field(default=False)
    state: str | None = None  # how it ended here: "done" or "failed"
    charged: float = 0.0  # the epsilon its end charged

    def ended(self, state: str, charged: float = 0.0) -> None:
        """Record how the job ended (after its end was written)."""
        self.finished, self.state, self.charged = True, state, charged

    def advance(self, progress: float) -> None:
        """Progress from 0 to 1, written with the next lease renewal."""
        self.progress = max(self.progress, min(1.0, progress))

    async def finish(self, state: str, result: dict[str, Any]) -> None:
        """End the job without a charge (``JobLost`` if another runner holds it now)."""
        await self.store.job_write(jobs.finish(self.job, state, result, self.clock()))
        self.ended(state)


async def enqueue(store: Store, job: Job, max_active: int) -> tuple[Job, bool]:
    """Queue ``job`` (True), or join the active job of the same licence and request (False).

    A licence holds at most ``max_active`` jobs queued or running (``RateLimited`` for one
    more; joining a twin adds none), so one researcher's backlog cannot fill the queue that
    every licence's jobs share. Counted before the insert: on PostgreSQL, submissions racing
    each other may pass the cap by as many as race."""

    async def twin() -> Job | None:  # the same request, queued or running
        found = await store.job_read(jobs.active(job.licence_id, job.request_key))
        return next(iter(jobs.jobs_of(found)), None)

    if (joined := await twin()) is not None:
        return joined, False
    [(count,)] = await store.job_read(jobs.active_count(job.licence_id))
    if int(count) >= max_active:
        raise RateLimited(
            f"this licence has {max_active} jobs queued or running; submit more when one ends",
            JOB_RETRY_S,
        )
    rows = await store.job_write(jobs.insert(job))
    if not rows and (joined := await twin()) is not None:  # queued meanwhile: join it
        return joined, False
    return job, bool(rows)


def submitter(job: Job) -> Asker:
    """The token that submitted ``job``: checked when an attempt starts and, always, again
    as the last step before its data (``charged.reserve_unrevoked``)."""
    jti = job.request.get("jti")
    return Asker(jti if isinstance(jti, str) else None, JOB_REVOKED)


async def require_unrevoked(store: Store, job: Job) -> None:
    """``RevokedToken`` if the token that submitted ``job`` has been revoked since."""
    who = submitter(job)
    await refuse_revoked(store.is_revoked, who.jti, who.refusal)


Handler = Callable[[JobRun], Coroutine[Any, Any, None]]


class JobRunner:
    def __init__(
        self,
        store: Store,
        cfg: JobsConfig,
        handlers: dict[str, Handler],
        clock: Callable[[], dt.datetime] = utcnow,
        on_end: Callable[[JobRun], None] | None = None,
    ) -> None:
        self._store = store
        self._on_end = on_end  # e.g. metrics: called once per job ended by this runner
        self._cfg = cfg
        self._handlers = handlers
        self._clock = clock
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._held: dict[str, Job] = {}  # job id -> the job as claimed, while its handler runs

    def start(self) -> None:
        for i in range(self._cfg.workers):
            self._loops.append(asyncio.create_task(self._loop(), name=f"enclave-jobs-{i}"))

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the loops, then hand every job still held back to the queue."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        for job in list(self._held.values()):
            with contextlib.suppress(EnclaveError):
                await self._store.job_write(jobs.requeue(job, self._clock()))
        self._held.clear()

    async def _loop(self) -> None:
        while True:
            try:
                job = await self._claim()
            except EnclaveError as exc:  # store unavailable: try again at the next poll
                log.warning("job runner: cannot claim (%s)", describe(exc))
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._cfg.poll_s)
                continue
            await self._run(job)

    async def _claim(self) -> Job | None:
        op = jobs.claim(
            secrets.token_hex(8), self._clock(), self._cfg.lease_s, tuple(self._handlers)
        )
        rows = await self._store.job_write(op)
        return jobs.jobs_of(rows)[0] if rows else None

    async def _run(self, job: Job) -> None:
        run = JobRun(job=job, store=self._store, clock=self._clock)
        self._held[job.id] = job
        work = asyncio.create_task(self._handlers[job.kind](run))
        keeper = asyncio.create_task(self._keep(run, work))
        stopping = False
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                stopping = True  # the runner is stopping: stop() hands the job back
                raise
            log.warning("job %s: stopped after its lease was lost", job.id)
        except JobLost:
            log.warning("job %s: another runner holds it now", job.id)
        except ServiceUnavailable as exc:  # the store: the job stays claimed, its lease lapses
            log.error("job %s: left for a later claim (%s)", job.id, describe(exc))
        except Exception as exc:
            log.error("job %s failed: %s", job.id, describe(exc))
            if not run.finished:
                with contextlib.suppress(EnclaveError):
                    await run.finish("failed", {"problem": {"title": FAILED_TEXT}})
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if not stopping:
                self._held.pop(job.id, None)
        if run.state is not None and self._on_end is not None:
            self._on_end(run)

    async def _keep(self, run: JobRun, work: asyncio.Task[None]) -> None:
        """Renew the lease every third of it; cancel the work if the job was lost."""
        while True:
            await asyncio.sleep(self._cfg.lease_s / 3)
            try:
                await self._store.job_write(
                    jobs.renew(run.job, self._clock(), self._cfg.lease_s, run.progress)
                )
            except JobLost:
                log.warning("job %s: lease lost; stopping its work", run.job.id)
                work.cancel()
                return
            except EnclaveError as exc:
                log.warning("job %s: lease not renewed (%s)", run.job.id, describe(exc))

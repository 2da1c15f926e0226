"""The durable job queue (``store/jobs.py``) on both stores: claims, leases, hand-back, one
active job per request, and a job's end written with its charge, never twice."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from enclave.audit.log import AuditFilter
from enclave.errors import BudgetExhausted
from enclave.jobs.job import Job, JobLost, queued
from enclave.ledger.charge import CacheEntry
from enclave.ledger.grid import Amount
from enclave.store import jobs
from tests.store.conftest import Backend, charge, draft

LEASE = 30.0


def _job(job_id: str = "job_1", key: str = "key-1", kind: str = "synthetic") -> Job:
    request = {"body": {"rows": 10}}
    return queued(job_id, kind, "alice", "lic_1", "visits", key, request, dt.datetime.now(dt.UTC))


async def _claim(store: Any, backend: Backend, token: str) -> Job | None:
    rows = await store.job_write(jobs.claim(token, backend.clock(), LEASE, ("synthetic",)))
    return jobs.jobs_of(rows)[0] if rows else None


async def _get(store: Any, job_id: str = "job_1") -> Job:
    return jobs.jobs_of(await store.job_read(jobs.get(job_id)))[0]


async def test_one_active_job_per_request_and_a_claim_wins_once(
    store: Any, backend: Backend
) -> None:
    assert len(await store.job_write(jobs.insert(_job()))) == 1
    assert await store.job_write(jobs.insert(_job("job_2"))) == []  # same licence and key
    assert [j.id for j in jobs.jobs_of(await store.job_read(jobs.active("lic_1", "key-1")))] == [
        "job_1"
    ]
    assert await _claim(store, backend, "a") is not None
    job = await _get(store)
    assert (job.state, job.attempts, job.request) == ("running", 1, {"body": {"rows": 10}})
    # a running job with a live lease is nobody else's
    assert await _claim(store, backend, "b") is None
    # unknown kinds are never claimed
    await store.job_write(jobs.insert(_job("job_3", key="key-3", kind="query")))
    assert await _claim(store, backend, "c") is None


async def test_concurrent_claims_take_a_job_once(store: Any, backend: Backend) -> None:
    await store.job_write(jobs.insert(_job()))
    got = await asyncio.gather(*(_claim(store, backend, f"t{i}") for i in range(8)))
    assert sum(g is not None for g in got) == 1


async def test_a_lapsed_lease_is_claimed_again_and_the_old_claim_cannot_finish(
    store: Any, backend: Backend
) -> None:
    await store.job_write(jobs.insert(_job()))
    first = await _claim(store, backend, "first")
    assert first is not None
    backend.clock.advance(seconds=LEASE + 1)  # the first runner died or stalled
    second = await _claim(store, backend, "second")
    assert second is not None and second.attempts == 2
    with pytest.raises(JobLost):
        await store.job_write(jobs.renew(first, backend.clock(), LEASE, 0.5))
    head = await store.audit_head()
    with pytest.raises(JobLost):  # the stale runner's charge does not land
        await store.debit(
            draft(epsilon=1.0),
            charge("1.0", "5.0"),
            job=jobs.finish(first, "done", {}, backend.clock()),
        )
    assert await store.audit_head() == head
    assert await store.spent("lic_1", "visits", None) == Amount()
    await store.job_write(jobs.renew(second, backend.clock(), LEASE, 0.5))
    assert (await _get(store)).progress == 0.5


async def test_a_job_ends_with_its_charge_exactly_once(store: Any, backend: Backend) -> None:
    await store.job_write(jobs.insert(_job()))
    job = await _claim(store, backend, "only")
    assert job is not None
    cache = CacheEntry("lic_1", "key-1", {"job_id": job.id})
    done = jobs.finish(job, "done", {"rows": 10}, backend.clock())
    await store.debit(draft(epsilon=1.0), charge("1.0", "5.0"), cache, job=done)
    again = jobs.finish(job, "done", {"rows": 10}, backend.clock())
    with pytest.raises(JobLost):
        await store.debit(draft(epsilon=1.0), charge("1.0", "5.0"), cache, job=again)
    assert await store.spent("lic_1", "visits", None) == Amount.charge("1.0")
    assert (await _get(store)).state == "done"
    assert (await _get(store)).result == {"rows": 10}
    assert await store.get_cached("lic_1", "key-1") == {"job_id": "job_1"}
    records = await store.audit_events(AuditFilter(), 0, 100)
    assert len(records) == 1
    # a finished job is claimed by no one and leaves the active set: the request may run again
    assert await _claim(store, backend, "late") is None
    assert await store.job_read(jobs.active("lic_1", "key-1")) == []
    assert len(await store.job_write(jobs.insert(_job("job_2")))) == 1


async def test_a_refused_charge_leaves_the_job_running(store: Any, backend: Backend) -> None:
    await store.job_write(jobs.insert(_job()))
    job = await _claim(store, backend, "only")
    assert job is not None
    with pytest.raises(BudgetExhausted):
        await store.debit(
            draft(), charge("2.0", "1.0"), job=jobs.finish(job, "done", {}, backend.clock())
        )
    assert (await _get(store)).state == "running"  # rolled back with the refused charge


async def test_a_clean_stop_hands_the_job_back_and_it_survives_a_reopen(
    store: Any, backend: Backend
) -> None:
    await store.job_write(jobs.insert(_job()))
    job = await _claim(store, backend, "first")
    assert job is not None
    await store.job_write(jobs.requeue(job, backend.clock()))
    await store.close()
    reopened = backend.make()
    await reopened.open()
    try:
        again = await _claim(reopened, backend, "second")
        assert again is not None and again.claim == "second" and again.attempts == 2
    finally:
        await reopened.close()
        await store.open()


async def test_a_licence_holds_at_most_its_cap_of_active_jobs(store: Any, backend: Backend) -> None:
    """One licence's backlog cannot fill the shared queue: past the cap a new request is
    refused (429), a repeat of an active one still joins it, another licence is unaffected,
    and a job that ends makes room."""
    from enclave.errors import RateLimited
    from enclave.jobs.runner import enqueue

    def job(n: int, licence: str = "lic_1") -> Job:
        now = dt.datetime.now(dt.UTC)
        return queued(
            f"job_{licence}_{n}", "synthetic", "alice", licence, "visits", f"k{n}", {}, now
        )

    for n in range(2):
        assert (await enqueue(store, job(n), 2))[1] is True
    with pytest.raises(RateLimited) as refused:
        await enqueue(store, job(2), 2)
    assert refused.value.status == 429 and "2 jobs queued or running" in refused.value.detail
    joined, created = await enqueue(store, job(0), 2)  # the same request as job 0
    assert (joined.id, created) == ("job_lic_1_0", False)
    assert (await enqueue(store, job(0, "lic_2"), 2))[1] is True
    claimed = await _claim(store, backend, "runner-a")
    assert claimed is not None and claimed.licence_id == "lic_1"
    await store.job_write(jobs.finish(claimed, "done", {}, backend.clock()))
    assert (await enqueue(store, job(2), 2))[1] is True
    assert len(jobs.jobs_of(await store.job_read(jobs.active("lic_1", "k2")))) == 1

"""``copy_store``: a populated SQLite deployment copied into an empty store of each kind,
every table row for row, the audit chain verbatim (never re-hashed) and verified after."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.errors import BudgetExhausted, Conflict
from enclave.jobs.job import JobLost, queued
from enclave.ledger.charge import CacheEntry
from enclave.store import jobs
from enclave.store.bulk import TABLES
from enclave.store.sqlite import SqliteStore
from enclave.store_copy import copy_store
from tests.store.conftest import Backend, charge, draft, licence

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
KINDS = ("synthetic",)


async def populate(store: Any, queries: int = 30) -> None:
    await queue_jobs(store)
    await store.seed_policies([("tier", "standard", {"name": "standard"})], "policy-files")
    await store.put_policy("tier", "standard", {"name": "standard", "x": 1}, "bob", draft("t"))
    await store.insert_licence(licence("lic_1"), draft("licence.create", actor="bob"))
    await store.insert_licence(licence("lic_2", subject="carol"), draft("licence.create"))
    await store.update_licence("lic_2", {"status": "suspended"}, draft("licence.update"))
    await store.add_revocation("jti-1", "lost laptop", draft("revocation.create"))
    await store.shared_secret("truncation", bytes(range(32)))
    for i in range(queries):
        cache = None
        if i % 3 == 0:
            cache = CacheEntry("lic_1", f"key-{i}", {"rows": [[i, 0.1 * i]], "é": "ü"})
        try:
            await store.debit(draft(sql=f"SELECT {i}", epsilon=0.1), charge("0.1", "2.5"), cache)
        except BudgetExhausted:
            await store.append(draft(outcome="denied", reason="budget"))


async def queue_jobs(store: Any) -> None:
    """Three jobs: ``job_1`` running (progress 0.5), ``job_2`` done, ``job_3`` queued."""
    for n in (1, 2, 3):
        job = queued(f"job_{n}", "synthetic", "alice", "lic_1", "visits", f"k{n}", {"n": n}, NOW)
        await store.job_write(jobs.insert(job))
    (running,) = jobs.jobs_of(await store.job_write(jobs.claim("claim-a", NOW, 30.0, KINDS)))
    await store.job_write(jobs.renew(running, NOW, 30.0, 0.5))
    (done,) = jobs.jobs_of(await store.job_write(jobs.claim("claim-b", NOW, 30.0, KINDS)))
    await store.job_write(jobs.finish(done, "done", {"claim": "claim-b"}, NOW))


async def dump(store: Any) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with store.export_snapshot() as reader:
        for spec in TABLES:
            out[spec.name] = [row async for rows in reader.rows(spec, batch=7) for row in rows]
    return out


@pytest.fixture
async def source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source' / 'enclave.db'}"
    store = SqliteStore(url[len("sqlite:///") :])
    await store.open()
    try:
        await populate(store)
    finally:
        await store.close()
    return url


async def test_copy_is_verbatim_and_verified(source: str, backend: Backend) -> None:
    lines: list[str] = []
    report = await copy_store(source, backend.url, progress=lines.append, every=20, batch=9)
    assert report.ok, report.verdict()
    assert report.verdict().startswith("audit chain verified on the target: ")
    assert report.counts["audit"] == report.target_head[0] > 30
    assert report.counts["ledger"] == 25 and report.counts["release_cache"] == 9
    assert report.counts["jobs"] == 3
    total = sum(report.counts.values())
    marks = [int(line.split()[1]) for line in lines if "so far" in line]
    assert marks and all(m >= 20 * i for i, m in enumerate(marks, start=1))
    assert len(marks) == total // 20  # one line per 20 rows (10k in the CLI)
    assert lines[-1].startswith(f"copied {total} records: audit ")

    src = SqliteStore(source[len("sqlite:///") :])
    dst = backend.make()
    await src.open()
    await dst.open()
    try:
        assert await dump(src) == await dump(dst)  # every table, every value, same order
        src_records = [r async for r in src.audit_iter()]
        dst_records = [r async for r in dst.audit_iter()]
        assert dst_records == src_records and verify(dst_records).valid
        # the copy is a live store: the chain and the budget carry on where they stopped
        assert await dst.spent("lic_1", "visits", None) == await src.spent("lic_1", "visits", None)
        with pytest.raises(BudgetExhausted):
            await dst.debit(draft(), charge("0.1", "2.5"))
        record = await dst.append(draft())
        assert record.seq == src_records[-1].seq + 1
        assert record.prev_hash == src_records[-1].hash
        assert (await dst.get_policy("tier", "standard")).version == 2
        assert (await dst.get_licence("lic_2")).status == "suspended"
        assert await dst.is_revoked("jti-1")
        assert await dst.shared_secret("truncation", b"other") == bytes(range(32))
        cached = await dst.get_cached("lic_1", "key-3")
        assert cached == {"rows": [[3, 0.1 * 3]], "é": "ü"}
        await dst.put_policy("tier", "standard", {"name": "standard"}, "bob", draft("t"))
        assert (await dst.get_policy("tier", "standard")).version == 3
        if backend.name == "postgres":  # the ledger's id sequence moved past the copied ids
            await dst.debit(draft(), charge("0.1", "100", licence_id="lic_9"))
        assert verify([r async for r in dst.audit_iter()]).valid
        # the job queue carries on: the running job's lease runs out and it is claimed again
        later = NOW + dt.timedelta(minutes=1)
        (job,) = jobs.jobs_of(await dst.job_write(jobs.claim("claim-c", later, 30.0, KINDS)))
        assert (job.id, job.attempts, job.state) == ("job_1", 2, "running")
        with pytest.raises(JobLost):
            await dst.job_write(jobs.renew(replace(job, claim="claim-a"), later, 30.0, 0.9))
        (job,) = jobs.jobs_of(await dst.job_write(jobs.claim("claim-d", later, 30.0, KINDS)))
        assert job.id == "job_3"
        assert jobs.jobs_of(await dst.job_read(jobs.get("job_2")))[0].result == {"claim": "claim-b"}
    finally:
        await src.close()
        await dst.close()


async def test_refuses_a_non_empty_target(source: str, backend: Backend) -> None:
    store = backend.make()
    await store.open()
    try:
        await store.append(draft())
    finally:
        await store.close()
    with pytest.raises(Conflict, match="not empty"):
        await copy_store(source, backend.url)
    store = backend.make()
    await store.open()
    try:  # nothing was written
        assert [r.seq async for r in store.audit_iter()] == [1]
        assert await store.list_licences() == []
    finally:
        await store.close()


async def test_a_broken_source_chain_is_reported(source: str, backend: Backend) -> None:
    import sqlite3

    conn = sqlite3.connect(source[len("sqlite:///") :])
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET sql = 'SELECT 999' WHERE seq = 12")
    conn.commit()
    conn.close()
    report = await copy_store(source, backend.url)
    assert not report.ok
    assert report.target_chain.first_bad_seq == 12
    assert "INVALID" in report.verdict() and "source chain is invalid too" in report.verdict()

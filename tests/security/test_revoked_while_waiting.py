"""A token revoked while its work waits for the data reads nothing: a query job, a synthetic
job or a synchronous query that passed every check, then waits for its dataset's preparation
(held by "another process": this test holds the per-version preparation lock of
``engine/bounding.py``, so the gateway's real preparation waits on it), ends refused,
``revoked-token``, uncharged and unreleased once the preparation is let go, because the token
is checked again as the last step before the budget is reserved and the data read
(``charged.reserve_unrevoked``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from enclave.audit.log import AuditFilter
from enclave.config import Config
from enclave.engine.bounding import bounded_target, preparation_lock
from enclave.jobs.runner import JOB_REVOKED
from enclave.ledger.grid import Amount
from enclave.pipeline import RECHECK_AFTER_S
from enclave.policy.registry import registry_for
from enclave.store import open_store
from enclave.web.app import shared_truncation_key
from tests.conftest import ConfigFactory
from tests.security.test_revoked_token_jobs import JOBS, PROBLEM, _revoke, _wait, submit_two
from tests.spend import layer_spent
from tests.store.conftest import temporary_database
from tests.web.test_synthetic import _body, _deploy

SQL = "SELECT COUNT(*) AS n FROM visits"
PREPARE = "Warehouse.prepare"


@contextlib.asynccontextmanager
async def preparation_held(cfg: Config, dataset: str) -> AsyncIterator[None]:
    """Hold ``dataset``'s preparation lock as another process bounding it would: the
    gateway's own preparation of it waits until this block ends. Entered before the gateway
    starts (it starts preparing every dataset at once); the store is seeded and the seed read
    as the gateway does, so the lock is the one its preparation takes."""
    state = Path(cfg.engine.state_dir)
    store = open_store(cfg.store.url)
    await store.open()
    try:
        registry = registry_for(store, cfg)
        await registry.seed()
        spec = await registry.dataset(dataset)
        assert spec is not None
        key = await shared_truncation_key(store, state)
    finally:
        await store.close()
    with preparation_lock(state, bounded_target(spec, state, key)):
        yield


async def _preparing(gw: Any, dataset: str) -> None:
    spec = await gw.services.registry.dataset(dataset)
    assert await gw.services.warehouse.status(spec) == "preparing"


def _waiting_in(qualname: str) -> int:
    """How many tasks are suspended inside the coroutine ``qualname`` (each task's chain of
    awaits followed down)."""
    count = 0
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        while coro is not None:
            code = getattr(coro, "cr_code", None)
            if code is not None and code.co_qualname == qualname:
                count += 1
                break
            coro = getattr(coro, "cr_await", None)
    return count


async def _until_waiting(what: str = PREPARE) -> None:
    for _ in range(300):
        if _waiting_in(what):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing waits in {what}")


async def _records(gw: Any, action: str) -> list[Any]:
    found: list[Any] = await gw.services.store.audit_events(AuditFilter(action=action), 0, 100)
    return found


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_query_job_revoked_while_it_waits_for_the_preparation_reads_nothing(
    make_gateway: Any, config_factory: ConfigFactory, backend: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        url = "sqlite:///state/enclave.db"
        if backend == "postgres":
            url = await stack.enter_async_context(temporary_database())
        async with preparation_held(config_factory(store_url=url), "visits"):
            gw = await make_gateway(jobs=JOBS, store_url=url)
            lic = await gw.licence()
            await _preparing(gw, "visits")
            urls = await submit_two(gw)
            await _until_waiting()  # "stolen" passed its start check: it waits for the data
            await _revoke(gw, "stolen")
        # the preparation goes on and ends
        refused = await _wait(gw, urls["stolen"])
        assert refused["state"] == "failed", refused
        assert refused["problem"]["type"] == PROBLEM + "revoked-token"
        assert refused["problem"]["detail"] == JOB_REVOKED
        assert refused["problem"]["charged"] is False and "result" not in refused
        kept = await _wait(gw, urls["laptop"])  # the other token's job, same wait: released
        assert kept["state"] == "done", kept
        store = gw.services.store
        assert await layer_spent(store, "licence", lic.id, "visits", None) == Amount.charge("0.25")
        records = [(r.outcome, r.epsilon, r.reason) for r in await _records(gw, "query")]
        assert sorted(records) == [("denied", 0.0, JOB_REVOKED), ("ok", 0.25, None)]


async def test_a_synthetic_job_revoked_while_it_waits_for_the_preparation_reads_nothing(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    _deploy(config_factory)
    async with preparation_held(config_factory(), "pairs"):
        gw = await make_gateway(jobs=JOBS)
        lic = await gw.licence(tier="research", datasets=("pairs",))
        await _preparing(gw, "pairs")
        resp = await gw.client.post(
            "/v1/synthetic", json=_body(rows=200), headers=gw.auth("alice", jti="stolen")
        )
        assert resp.status == 202, await resp.text()
        job = await resp.json()
        await _until_waiting()  # past its start check, waiting for the bounded table
        await _revoke(gw, "stolen")
    refused = await _wait(gw, job["status_url"])
    assert refused["state"] == "failed", refused
    assert refused["problem"] == {
        "title": f"refused since the request: {JOB_REVOKED}",
        "charged": False,
    }
    store = gw.services.store
    assert await layer_spent(store, "licence", lic.id, "pairs", None) == Amount()
    [submitted] = await _records(gw, "synthetic")  # the submission's alone: nothing released
    assert (submitted.outcome, submitted.epsilon) == ("ok", 0.0)
    assert submitted.detail["job_id"] == job["id"]
    assert not [p for p in (Path(gw.config.jobs.dir) / job["id"]).rglob("*") if p.is_file()]


async def test_a_query_revoked_while_it_waits_for_the_preparation_reads_nothing(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    """A synchronous query waits for its dataset's preparation at most its time limit; one
    that waited ``RECHECK_AFTER_S`` or more asks for its token again before the data."""
    async with preparation_held(config_factory(), "visits"):
        gw = await make_gateway()
        lic = await gw.licence()
        await _preparing(gw, "visits")
        sent = asyncio.create_task(
            gw.client.post(
                "/v1/queries",
                json={"dataset": "visits", "sql": SQL, "epsilon": 0.5},
                headers=gw.auth("alice", jti="stolen"),
            )
        )
        await _until_waiting()  # authenticated, admitted, waiting for the data
        await _revoke(gw, "stolen")
        await asyncio.sleep(RECHECK_AFTER_S)
    resp = await sent
    assert resp.status == 401, await resp.text()
    problem = await resp.json()
    assert problem["type"] == PROBLEM + "revoked-token"
    assert await layer_spent(gw.services.store, "licence", lic.id, "visits", None) == Amount()
    [record] = await _records(gw, "query")  # a refusal: the epsilon asked, nothing charged
    assert (record.outcome, record.reason) == ("denied", "token has been revoked")

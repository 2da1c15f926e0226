"""Queries as jobs from the client (``submit_query``, ``wait_job``, ``job_answer``,
``query_job``; docs/researcher.md), async and blocking, against a live loopback gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.client import Client, EnclaveClient, SpendNotConfirmed
from enclave.errors import QueryTimeout, UnsupportedQuery
from enclave.ledger.grid import Amount
from tests.client.test_client import SQL, url_of

JOBS = {"lease_s": 6, "poll_s": 0.5, "timeout_s": 600}


async def test_a_query_job_from_the_client(make_gateway: Any) -> None:
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence()
    async with EnclaveClient(
        url_of(gw), gw.tokens(), confirm=lambda e: False, confirm_share=0.1
    ) as client:
        job = await client.submit_query(SQL, "visits", 0.5)
        assert job["kind"] == "query" and job["status_url"] == f"/v1/jobs/{job['id']}"
        done = await client.wait_job(str(job["id"]), timeout=60, poll=0.1)
        answer = await client.job_answer(str(done["id"]))
        same = await client.query_job(SQL, "visits", 0.5, timeout=60, poll=0.1)
        with pytest.raises(UnsupportedQuery):  # refused at once, as a synchronous query
            await client.query_job("SELECT * FROM visits", "visits", 0.5)
        with pytest.raises(SpendNotConfirmed):  # the spend guard applies to jobs too
            await client.query_job(SQL, "visits", 1.0)
    assert answer.epsilon_spent == 0.5 and not answer.cached
    assert {r[0] for r in answer.rows} == {"north", "south", "east", "west", "central"}
    assert same.cached and same.rows == answer.rows  # a repeat: the cache, no job
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.5")


async def test_a_failed_query_job_raises_what_a_query_would(make_gateway: Any) -> None:
    gw = await make_gateway(jobs={**JOBS, "timeout_s": 1e-6})
    lic = await gw.licence()
    token = gw.tokens()

    def script() -> None:
        with Client(url_of(gw), token) as client:
            client.query_job(SQL, "visits", 0.25, timeout=60, poll=0.1)

    with pytest.raises(QueryTimeout, match="its cost was charged"):
        await asyncio.to_thread(script)
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.25")

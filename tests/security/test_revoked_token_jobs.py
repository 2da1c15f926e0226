"""Revoking a token stops the work it left behind: a query job or a synthetic job submitted
with a token whose ``jti`` is revoked before the job runs ends ``failed``, unread and
uncharged, while the same subject's jobs sent with another token still run. (A stolen token
must not keep spending its researcher's budget after the steward revokes it.)"""

from __future__ import annotations

import asyncio
from typing import Any

from enclave.ledger.grid import Amount
from enclave.web.keys import runner_key
from tests.conftest import ConfigFactory
from tests.web.test_synthetic import _body, _deploy

SQL = "SELECT COUNT(*) AS n FROM visits"
JOBS = {"lease_s": 6, "poll_s": 0.5, "timeout_s": 600}
PROBLEM = "https://enclave-gateway.org/problems/"


async def _wait(gw: Any, url: str) -> Any:
    for _ in range(1200):
        resp = await gw.client.get(url, headers=gw.auth("carol", ("auditor",)))
        job = await resp.json()
        if job["state"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job not ended in time: {job}")


async def submit_two(gw: Any) -> dict[str, str]:
    """One query job from each of alice's two tokens, ``stolen`` and ``laptop``: status URLs."""
    urls = {}
    for jti, epsilon in (("stolen", 0.5), ("laptop", 0.25)):
        resp = await gw.client.post(
            "/v1/queries/jobs",
            json={"dataset": "visits", "sql": SQL, "epsilon": epsilon},
            headers=gw.auth("alice", jti=jti),
        )
        assert resp.status == 202, await resp.text()
        urls[jti] = (await resp.json())["status_url"]
    return urls


async def _revoke(gw: Any, jti: str) -> None:
    resp = await gw.client.post(
        "/v1/admin/revocations",
        json={"jti": jti, "reason": "laptop stolen"},
        headers=gw.auth("stella", ["admin"]),
    )
    assert resp.status == 201, await resp.text()


async def test_a_queued_query_job_of_a_revoked_token_never_runs(make_gateway: Any) -> None:
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence()
    runner = gw.app[runner_key]
    await runner.stop()  # accepts, runs nothing: the jobs stay queued
    urls = await submit_two(gw)
    await _revoke(gw, "stolen")
    runner.start()
    refused = await _wait(gw, urls["stolen"])
    assert refused["state"] == "failed", refused
    assert refused["problem"]["type"] == PROBLEM + "revoked-token"
    assert refused["problem"]["charged"] is False
    kept = await _wait(gw, urls["laptop"])
    assert kept["state"] == "done", kept
    assert await gw.services.store.spent(lic.id, "visits", None) == Amount.charge("0.25")


async def test_a_queued_synthetic_job_of_a_revoked_token_never_runs(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    _deploy(config_factory)
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence(tier="research", datasets=("pairs",))
    runner = gw.app[runner_key]
    await runner.stop()
    resp = await gw.client.post(
        "/v1/synthetic", json=_body(rows=200), headers=gw.auth("alice", jti="stolen")
    )
    assert resp.status == 202, await resp.text()
    url = (await resp.json())["status_url"]
    await _revoke(gw, "stolen")
    runner.start()
    refused = await _wait(gw, url)
    assert refused["state"] == "failed", refused
    assert refused["problem"]["charged"] is False and "revoked" in refused["problem"]["title"]
    assert await gw.services.store.spent(lic.id, "pairs", None) == Amount()

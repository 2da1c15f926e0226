"""No cache serves a stale licence, tier or revocation: with every cache warm (verified token,
parsed plan, price, OpenDP domains, the release itself), a suspension, a revocation or a tier
change takes effect on the very next request."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client.test_client import set_tier

SQL = "SELECT COUNT(*) AS n FROM visits WHERE age >= 30"
PROBLEM = "https://enclave-gateway.org/problems/"
ADMIN = ("root", ["admin"])


async def send(gw: Any, headers: dict[str, str], path: str = "/v1/queries") -> Any:
    body = {"dataset": "visits", "sql": SQL, "epsilon": 0.5}
    return await gw.client.post(path, json=body, headers=headers)


async def suspend(gw: Any, licence_id: str) -> None:
    body = {"status": "suspended", "reason": "review"}
    path = f"/v1/admin/licences/{licence_id}"
    resp = await gw.client.patch(path, json=body, headers=gw.auth(*ADMIN))
    assert resp.status == 200, await resp.text()


async def revoke(gw: Any, _: str) -> None:
    body = {"jti": "tok-warm", "reason": "laptop stolen"}
    resp = await gw.client.post("/v1/admin/revocations", json=body, headers=gw.auth(*ADMIN))
    assert resp.status == 201


async def lower_cap(gw: Any, _: str) -> None:
    await set_tier(gw, max_epsilon_per_query=0.4)


@pytest.mark.parametrize(
    ("change", "status", "problem"),
    [
        (suspend, 403, "licence-suspended"),
        (revoke, 401, "revoked-token"),
        (lower_cap, 403, "tier-refused"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/estimate"])
async def test_a_change_takes_effect_on_the_next_request_with_every_cache_warm(
    make_gateway: Any, change: Any, status: int, problem: str, path: str
) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    headers = gw.auth("alice", jti="tok-warm")  # one token string: the verified-token cache
    first = await send(gw, headers)
    assert first.status == 200
    again = await send(gw, headers)  # a release-cache repeat: parse and price caches warm too
    assert again.status == 200 and (await again.json())["cached"] is True
    assert (await send(gw, headers, "/v1/queries/estimate")).status == 200
    await change(gw, lic.id)
    resp = await send(gw, headers, path)
    assert resp.status == status
    assert (await resp.json(content_type=None))["type"] == PROBLEM + problem

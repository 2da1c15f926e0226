"""Token revocation: refused at once (401 revoked-token), and still after a restart."""

from __future__ import annotations

from typing import Any

from enclave.audit.log import AuditFilter
from enclave.web.app import create_app

ADMIN = ("root", ["admin"])
PROBLEM = "https://enclave-gateway.org/problems/"


async def revoke(gw: Any, body: Any) -> tuple[int, Any]:
    resp = await gw.client.post("/v1/admin/revocations", json=body, headers=gw.auth(*ADMIN))
    return resp.status, await resp.json(content_type=None)


async def test_a_revoked_token_is_refused_at_once_and_after_a_restart(
    make_gateway: Any, aiohttp_client: Any
) -> None:
    gw = await make_gateway()
    await gw.licence()
    stolen = gw.auth("alice", jti="tok-stolen")
    other = gw.auth("alice", jti="tok-other")
    resp = await gw.client.get("/v1/budget", headers=stolen)
    assert resp.status == 200
    status, body = await revoke(gw, {"jti": "tok-stolen", "reason": "laptop stolen"})
    assert status == 201 and body == {
        "jti": "tok-stolen",
        "reason": "laptop stolen",
        "revoked": True,
    }
    resp = await gw.client.get("/v1/budget", headers=stolen)
    problem = await resp.json(content_type=None)
    assert resp.status == 401 and problem["type"] == PROBLEM + "revoked-token"
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    assert (await gw.client.get("/v1/budget", headers=other)).status == 200
    [record] = await gw.services.store.audit_events(AuditFilter(action="revocation.create"))
    assert record.actor == "root" and record.reason == "laptop stolen"
    assert record.detail["jti"] == "tok-stolen"
    # revoking again is harmless and audited again
    assert (await revoke(gw, {"jti": "tok-stolen", "reason": "again"}))[0] == 201
    await gw.client.close()

    # a new process over the same config and state: still refused, for every role
    client2 = await aiohttp_client(create_app(gw.config))
    resp = await client2.get("/v1/budget", headers=stolen)
    assert resp.status == 401
    assert (await resp.json(content_type=None))["type"] == PROBLEM + "revoked-token"
    admin_stolen = gw.auth("root", ["admin"], jti="tok-stolen")
    assert (await client2.get("/v1/admin/tiers", headers=admin_stolen)).status == 401
    assert (await client2.get("/v1/budget", headers=other)).status == 200


async def test_an_admin_can_revoke_their_own_token(make_gateway: Any) -> None:
    gw = await make_gateway()
    mine = gw.auth("root", ["admin"], jti="tok-admin")
    resp = await gw.client.post(
        "/v1/admin/revocations", json={"jti": "tok-admin", "reason": "rotating"}, headers=mine
    )
    assert resp.status == 201
    assert (await gw.client.get("/v1/admin/tiers", headers=mine)).status == 401


async def test_bad_revocation_bodies(make_gateway: Any) -> None:
    gw = await make_gateway()
    for body in (
        {"jti": "x"},
        {"reason": "r"},
        {"jti": "", "reason": "r"},
        {"jti": "x", "reason": "  "},
        {"jti": 7, "reason": "r"},
        {"jti": "x" * 257, "reason": "r"},
        {"jti": "x", "reason": "r", "until": "forever"},
        ["x"],
    ):
        status, problem = await revoke(gw, body)
        assert status == 400 and problem["type"] == PROBLEM + "bad-request", body
    assert await gw.services.store.is_revoked("x") is False

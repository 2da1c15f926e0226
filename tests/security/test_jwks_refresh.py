"""Removed signing keys die within ``auth.jwks_refresh_s``; a JWKS outage keeps old keys only
for ``auth.jwks_max_stale_s``, then every token is refused until the IdP answers again.

The IdP is a small aiohttp server on loopback serving its JWKS (or failing, on demand); the
cache's monotonic clock is injected, so hours pass in microseconds. Tokens carry real ES256
signatures."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from enclave.auth.jwks import JwksCache
from enclave.auth.jwt import verify_token
from enclave.config import AuthConfig
from enclave.devkeys import KeyPaths, generate_keys, mint_token
from enclave.errors import InvalidToken

ISS = "https://idp.test/realms/enclave"
AUD = "enclave-gateway"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Idp:
    """What the stand-in IdP serves: the keys listed in ``kids``, or 503 while ``down``."""

    keys: dict[str, KeyPaths]
    kids: list[str]
    down: bool = False
    served: int = 0
    url: str = ""

    def document(self) -> dict[str, Any]:
        keys = []
        for kid in self.kids:
            keys += json.loads(self.keys[kid].jwks_json.read_text())["keys"]
        return {"keys": keys}

    def token(self, kid: str) -> str:
        return mint_token(
            self.keys[kid].private_pem,
            sub="alice",
            roles=["researcher"],
            issuer=ISS,
            audience=AUD,
            ttl_s=36_000,
            kid=kid,
        )


@pytest.fixture
async def idp(aiohttp_server: Any, tmp_path: Path) -> Idp:
    state = Idp(keys={k: generate_keys(tmp_path / k, kid=k) for k in ("k1", "k2")}, kids=[])
    state.kids = ["k1", "k2"]

    async def jwks(request: web.Request) -> web.Response:
        state.served += 1
        if state.down:
            return web.Response(status=503)
        return web.json_response(state.document())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("/jwks"))
    return state


def auth_for(idp: Idp, **over: Any) -> AuthConfig:
    return AuthConfig(issuer=ISS, audience=AUD, jwks_url=idp.url, algorithms=("ES256",), **over)


async def test_a_key_removed_at_the_idp_is_refused_within_the_refresh_interval(
    idp: Idp,
) -> None:
    clock = Clock()
    auth = auth_for(idp, jwks_refresh_s=300)
    async with JwksCache(auth, clock=clock) as cache:
        token = idp.token("k2")
        assert (await verify_token(token, cache, auth))["sub"] == "alice"
        idp.kids = ["k1"]  # the IdP drops k2 (say, after a compromise)
        clock.now += 299
        await verify_token(token, cache, auth)  # not yet reloaded: still within the interval
        clock.now += 2
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await verify_token(token, cache, auth)
        assert (await verify_token(idp.token("k1"), cache, auth))["sub"] == "alice"
        assert await cache.state() == "ok"


async def test_an_outage_keeps_keys_until_the_maximum_staleness_then_fails_closed(
    idp: Idp,
) -> None:
    clock = Clock()
    auth = auth_for(idp, jwks_refresh_s=300, jwks_max_stale_s=3600, jwks_min_refresh_s=30)
    token = idp.token("k1")
    async with JwksCache(auth, clock=clock) as cache:
        await verify_token(token, cache, auth)
        idp.down = True
        for _ in range(11):  # 3300 s of failed reloads: the old keys still serve
            clock.now += 300
            assert (await verify_token(token, cache, auth))["sub"] == "alice"
        assert await cache.state() == "ok"
        served = idp.served
        clock.now += 301  # 3601 s since the last successful load
        with pytest.raises(InvalidToken, match="signing keys are stale"):
            await verify_token(token, cache, auth)
        assert await cache.state() == "stale"
        assert idp.served > served  # it kept trying
        idp.down = False
        clock.now += 31  # the next attempt (jwks_min_refresh_s later) succeeds
        assert (await verify_token(token, cache, auth))["sub"] == "alice"
        assert await cache.state() == "ok"


async def test_an_idp_down_from_the_start_is_stale_after_the_maximum(idp: Idp) -> None:
    clock = Clock()
    idp.down = True
    auth = auth_for(idp, jwks_refresh_s=60, jwks_max_stale_s=120)
    async with JwksCache(auth, clock=clock) as cache:
        assert await cache.state() == "unavailable"
        clock.now += 121
        assert await cache.state() == "unavailable"  # never loaded: still just unavailable
        with pytest.raises(InvalidToken, match="signing keys unavailable"):
            await verify_token(idp.token("k1"), cache, auth)


async def test_readyz_reports_stale_keys(make_gateway: Any) -> None:
    gw = await make_gateway(
        auth={"jwks_refresh_s": 0.2, "jwks_max_stale_s": 0.2, "jwks_min_refresh_s": 0}
    )
    resp = await gw.client.get("/readyz")
    assert (await resp.json())["checks"]["jwks"] == "ok"
    assert gw.config.auth.jwks_file is not None
    gw.config.auth.jwks_file.write_text("{broken", "utf-8")  # the key source stops answering
    await asyncio.sleep(0.3)
    resp = await gw.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["jwks"] == "stale"
    resp = await gw.client.get("/v1/budget", headers=gw.auth())
    assert resp.status == 401
    assert (await resp.json(content_type=None))["detail"] == "signing keys are stale"

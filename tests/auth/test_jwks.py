"""JwksCache: lazy load, one rate-limited refresh per unknown kid, rotation, failures.

Fetches are counted for real: by rewriting the JWKS file between calls (a change is only
seen if the file was read again) and by a loopback aiohttp server that counts its hits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from enclave.auth.jwks import JwksCache, key_fits, open_jwks, usable_jwks
from enclave.config import AuthConfig
from enclave.devkeys import jwks_document, public_jwk
from enclave.errors import InvalidToken

ISS = "https://idp.test/realms/enclave"
AUD = "enclave-gateway"
ServerFactory = Callable[..., Awaitable[TestServer]]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ec_jwks(kid: str) -> dict[str, Any]:
    return jwks_document(ec.generate_private_key(ec.SECP256R1()).public_key(), kid)


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document), "utf-8")


def file_auth(path: Path, **over: Any) -> AuthConfig:
    return AuthConfig(issuer=ISS, audience=AUD, jwks_file=path, **over)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_loads_lazily_and_returns_the_key(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    cache = JwksCache(file_auth(path), clock=clock)
    write(path, ec_jwks("k1"))  # written after construction: nothing was read yet
    assert cache.fetches == 0
    key = await cache.get_key("k1", "ES256")
    assert key.key_id == "k1"
    assert key.algorithm_name == "ES256"
    await cache.get_key("k1", "ES256")
    assert cache.fetches == 1


async def test_unknown_kid_refreshes_once_then_refuses(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    write(path, ec_jwks("k1"))
    cache = JwksCache(file_auth(path, jwks_min_refresh_s=30.0), clock=clock)
    await cache.get_key("k1", "ES256")
    clock.now += 31
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await cache.get_key("nope", "ES256")
    assert cache.fetches == 2  # the initial load + exactly one refresh


async def test_many_unknown_kids_are_rate_limited(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    write(path, ec_jwks("k1"))
    cache = JwksCache(file_auth(path, jwks_min_refresh_s=30.0), clock=clock)
    await cache.get_key("k1", "ES256")
    clock.now += 31
    for i in range(50):
        with pytest.raises(InvalidToken):
            await cache.get_key(f"forged-{i}", "ES256")
    assert cache.fetches == 2
    # a key that appears now is not seen until the interval has passed ...
    write(path, ec_jwks("k2"))
    clock.now += 29
    with pytest.raises(InvalidToken):
        await cache.get_key("k2", "ES256")
    assert cache.fetches == 2
    # ... and then one refresh picks it up
    clock.now += 2
    assert (await cache.get_key("k2", "ES256")).key_id == "k2"
    assert cache.fetches == 3


async def test_concurrent_unknown_kids_share_one_fetch(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    write(path, ec_jwks("k1"))
    cache = JwksCache(file_auth(path), clock=clock)
    results = await asyncio.gather(
        *(cache.get_key(f"x{i}", "ES256") for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, InvalidToken) for r in results)
    assert cache.fetches == 1  # first load, and the refresh is rate-limited behind it


async def test_rotation_is_picked_up_and_removed_keys_stop_working(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "jwks.json"
    write(path, ec_jwks("old"))
    cache = JwksCache(file_auth(path), clock=clock, max_age_s=600)
    await cache.get_key("old", "ES256")
    write(path, ec_jwks("new"))  # the IdP rotated: "old" is gone
    clock.now += 31
    assert (await cache.get_key("new", "ES256")).key_id == "new"
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await cache.get_key("old", "ES256")


async def test_max_age_reload_drops_removed_keys(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    write(path, ec_jwks("k1"))
    cache = JwksCache(file_auth(path), clock=clock, max_age_s=600)
    await cache.get_key("k1", "ES256")
    write(path, ec_jwks("k2"))
    clock.now += 100
    await cache.get_key("k1", "ES256")  # still cached
    assert cache.fetches == 1
    clock.now += 600
    with pytest.raises(InvalidToken):
        await cache.get_key("k1", "ES256")
    assert cache.fetches == 2


@pytest.mark.parametrize(
    "content",
    [None, "not json", '{"no_keys": []}', '{"keys": "nope"}', "[1, 2]"],
    ids=["missing", "garbage", "no-keys", "keys-not-list", "array"],
)
async def test_unloadable_jwks_gives_invalid_token(
    tmp_path: Path, clock: FakeClock, content: str | None
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content, "utf-8")
    cache = JwksCache(file_auth(path), clock=clock)
    with pytest.raises(InvalidToken) as info:
        await cache.get_key("k1", "ES256")
    assert info.value.detail == "signing keys unavailable"
    assert "Traceback" not in info.value.detail
    # failed loads are rate limited too: no hammering of a broken source
    with pytest.raises(InvalidToken):
        await cache.get_key("k1", "ES256")
    assert cache.fetches == 1
    write(path, ec_jwks("k1"))
    clock.now += 31
    assert (await cache.get_key("k1", "ES256")).key_id == "k1"


async def test_failed_refresh_keeps_previous_keys(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    write(path, ec_jwks("k1"))
    cache = JwksCache(file_auth(path), clock=clock, max_age_s=60)
    await cache.get_key("k1", "ES256")
    path.write_text("{broken", "utf-8")
    clock.now += 61
    assert (await cache.get_key("k1", "ES256")).key_id == "k1"
    assert cache.fetches == 2


async def test_key_must_fit_the_algorithm(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jwks.json"
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    rsa_jwk = {**public_jwk(rsa.generate_private_key(65537, 2048).public_key()), "kid": "r"}
    write(path, {"keys": [{**public_jwk(ec_key), "kid": "e", "alg": "ES256"}, rsa_jwk]})
    auth = file_auth(path, algorithms=("ES256", "RS256", "PS256", "EdDSA"))
    cache = JwksCache(auth, clock=clock)
    with pytest.raises(InvalidToken, match="does not fit"):
        await cache.get_key("e", "RS256")
    with pytest.raises(InvalidToken, match="does not fit"):
        await cache.get_key("r", "ES256")
    # an RSA key without `alg` may serve any configured RSA algorithm
    assert (await cache.get_key("r", "PS256")).algorithm_name == "PS256"
    with pytest.raises(InvalidToken, match="algorithm not allowed"):
        await cache.get_key("r", "RS512")  # not configured


def test_usable_jwks_skips_keys_that_cannot_verify() -> None:
    pub = public_jwk(ed25519.Ed25519PrivateKey.generate().public_key())
    doc = {
        "keys": [
            {**pub, "kid": "ok"},
            {**pub},  # no kid
            {**pub, "kid": "enc", "use": "enc"},
            {**pub, "kid": "ops", "key_ops": ["encrypt"]},
            {**pub, "kid": "priv", "d": "AAAA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            "not a dict",
        ]
    }
    assert set(usable_jwks(doc)) == {"ok"}


@pytest.mark.parametrize(
    ("jwk", "alg", "fits"),
    [
        ({"kty": "EC", "crv": "P-256"}, "ES256", True),
        ({"kty": "EC", "crv": "P-384"}, "ES256", False),
        ({"kty": "EC", "crv": "P-256", "alg": "ES384"}, "ES256", False),
        ({"kty": "RSA"}, "RS256", True),
        ({"kty": "EC", "crv": "P-256"}, "RS256", False),
        ({"kty": "OKP", "crv": "Ed25519"}, "PS256", False),
        ({"kty": "RSA", "alg": "RS256"}, "PS256", False),
        ({"kty": "OKP", "crv": "Ed25519"}, "EdDSA", True),
        ({"kty": "OKP", "crv": "X25519"}, "EdDSA", False),
        ({"kty": "RSA"}, "HS256", False),
        ({"kty": "oct"}, "HS256", False),
    ],
)
def test_key_fits_table(jwk: dict[str, Any], alg: str, fits: bool) -> None:
    assert key_fits(jwk, alg) is fits


def _jwks_app(state: dict[str, Any]) -> web.Application:
    async def handler(_request: web.Request) -> web.Response:
        state["hits"] += 1
        if state.get("status", 200) != 200:
            return web.Response(status=state["status"], text="down")
        return web.json_response(state["doc"])

    app = web.Application()
    app.router.add_get("/certs", handler)
    return app


async def test_url_source_counts_real_fetches(aiohttp_server: ServerFactory) -> None:
    state: dict[str, Any] = {"hits": 0, "doc": ec_jwks("k1")}
    server = await aiohttp_server(_jwks_app(state))
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_url=str(server.make_url("/certs")))
    async with open_jwks(auth) as cache:
        assert state["hits"] == 0
        await cache.get_key("k1", "ES256")
        await cache.get_key("k1", "ES256")
        assert state["hits"] == 1
        for i in range(10):
            with pytest.raises(InvalidToken):
                await cache.get_key(f"bad{i}", "ES256")
        assert state["hits"] == 1  # the first load was < 30 s ago: no refresh allowed


async def test_url_source_rotation_and_outage(
    aiohttp_server: ServerFactory, clock: FakeClock
) -> None:
    state: dict[str, Any] = {"hits": 0, "doc": ec_jwks("k1")}
    server = await aiohttp_server(_jwks_app(state))
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_url=str(server.make_url("/certs")))
    async with JwksCache(auth, clock=clock) as cache:
        await cache.get_key("k1", "ES256")
        state["doc"] = ec_jwks("k2")
        clock.now += 31
        assert (await cache.get_key("k2", "ES256")).key_id == "k2"
        assert state["hits"] == 2
        state["status"] = 500
        clock.now += 31
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await cache.get_key("k3", "ES256")
        assert state["hits"] == 3
        assert (await cache.get_key("k2", "ES256")).key_id == "k2"  # old keys still serve


async def test_url_source_unavailable(aiohttp_server: ServerFactory, clock: FakeClock) -> None:
    state: dict[str, Any] = {"hits": 0, "doc": {}, "status": 503}
    server = await aiohttp_server(_jwks_app(state))
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_url=str(server.make_url("/certs")))
    async with JwksCache(auth, clock=clock) as cache:
        with pytest.raises(InvalidToken, match="signing keys unavailable"):
            await cache.get_key("k1", "ES256")


async def test_session_ownership(aiohttp_server: ServerFactory) -> None:
    state: dict[str, Any] = {"hits": 0, "doc": ec_jwks("k1")}
    server = await aiohttp_server(_jwks_app(state))
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_url=str(server.make_url("/certs")))
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession())
        return made[-1]

    cache = JwksCache(auth, session_factory=factory)
    await cache.get_key("k1", "ES256")
    await cache.close()
    assert len(made) == 1 and made[0].closed  # owned: closed by the cache

    async with aiohttp.ClientSession() as borrowed:
        cache = JwksCache(auth, session=borrowed)
        await cache.get_key("k1", "ES256")
        await cache.close()
        assert not borrowed.closed  # borrowed: left to its owner
    assert state["hits"] == 2


def test_exactly_one_source_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JwksCache(AuthConfig(issuer=ISS, audience=AUD))
    with pytest.raises(ValueError, match="exactly one"):
        JwksCache(
            AuthConfig(issuer=ISS, audience=AUD, jwks_file=tmp_path, jwks_url="https://x.test")
        )

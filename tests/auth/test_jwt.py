"""verify_token, principal_from_claims and authenticate on real keys and real signatures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from enclave.audit.record import AuditDraft
from enclave.auth.jwks import JwksCache
from enclave.auth.jwt import verify_token
from enclave.auth.principal import (
    authenticate,
    bearer_token,
    principal_from_claims,
    roles_from_claims,
)
from enclave.auth.token_cache import TokenCache
from enclave.config import AuthConfig
from enclave.devkeys import generate_keys, jwks_document, mint_token
from enclave.errors import InvalidToken, MissingToken, RevokedToken
from enclave.store.sqlite import SqliteStore

ISS = "https://idp.test/realms/enclave"
AUD = "enclave-gateway"


def pem(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    """One key of each supported family, all in one JWKS file."""
    ec_path = generate_keys(tmp_path / "keys", kid="ec1")
    rsa_key = rsa.generate_private_key(65537, 2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    doc = json.loads(ec_path.jwks_json.read_text("utf-8"))
    doc["keys"] += jwks_document(rsa_key.public_key(), "rsa1")["keys"]
    doc["keys"] += jwks_document(ed_key.public_key(), "ed1")["keys"]
    ec_path.jwks_json.write_text(json.dumps(doc), "utf-8")
    return {
        "jwks": ec_path.jwks_json,
        "ec": ec_path.private_pem.read_bytes(),
        "rsa": pem(rsa_key),
        "ed": pem(ed_key),
    }


def auth_for(keys: dict[str, Any], **over: Any) -> AuthConfig:
    return AuthConfig(issuer=ISS, audience=AUD, jwks_file=keys["jwks"], **over)


def token(keys: dict[str, Any], family: str = "ec", **kw: Any) -> str:
    kid = {"ec": "ec1", "rsa": "rsa1", "ed": "ed1"}[family]
    args: dict[str, Any] = {
        "sub": "alice",
        "roles": ["researcher"],
        "issuer": ISS,
        "audience": AUD,
        "ttl_s": 600,
        "kid": kid,
    }
    args.update(kw)
    return mint_token(keys[family], **args)


async def test_valid_es256_token(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    async with JwksCache(auth) as cache:
        claims = await verify_token(token(keys, jti="j-1"), cache, auth)
    assert claims["sub"] == "alice"
    assert claims["iss"] == ISS
    assert claims["jti"] == "j-1"
    assert claims["roles"] == ["researcher"]


@pytest.mark.parametrize("family", ["rsa", "ed"])
async def test_rs256_and_eddsa_accepted_when_configured(keys: dict[str, Any], family: str) -> None:
    auth = auth_for(keys, algorithms=("ES256", "RS256", "EdDSA"))
    async with JwksCache(auth) as cache:
        claims = await verify_token(token(keys, family), cache, auth)
    assert claims["sub"] == "alice"


@pytest.mark.parametrize(("family", "algorithms"), [("rsa", ("ES256",)), ("ed", ("ES256",))])
async def test_other_families_refused_when_not_configured(
    keys: dict[str, Any], family: str, algorithms: tuple[str, ...]
) -> None:
    auth = auth_for(keys, algorithms=algorithms)
    async with JwksCache(auth) as cache:
        with pytest.raises(InvalidToken, match="algorithm not allowed"):
            await verify_token(token(keys, family), cache, auth)


async def test_audience_list_containing_ours_is_accepted(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    tok = token(keys, extra_claims={"aud": ["other-service", AUD]})
    async with JwksCache(auth) as cache:
        assert (await verify_token(tok, cache, auth))["aud"] == ["other-service", AUD]


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+JWT"])
async def test_accepted_typ_headers(keys: dict[str, Any], typ: str) -> None:
    auth = auth_for(keys)
    async with JwksCache(auth) as cache:
        await verify_token(token(keys, headers={"typ": typ}), cache, auth)


async def test_unexpected_typ_refused(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    async with JwksCache(auth) as cache:
        with pytest.raises(InvalidToken, match="unexpected token type"):
            await verify_token(token(keys, headers={"typ": "logout+jwt"}), cache, auth)


async def test_iat_in_future_beyond_leeway_refused(keys: dict[str, Any]) -> None:
    auth = auth_for(keys, leeway_s=30)
    tok = token(keys, extra_claims={"iat": int(time.time()) + 600})
    async with JwksCache(auth) as cache:
        with pytest.raises(InvalidToken, match="not yet valid"):
            await verify_token(tok, cache, auth)


# -- roles and principal ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (["researcher"], {"researcher"}),
        (["researcher", "admin", "auditor"], {"researcher", "admin", "auditor"}),
        (["researcher", "superuser", "root"], {"researcher"}),  # unknown names dropped
        ([], set()),
        ("researcher", set()),  # a string is not a list
        ("admin researcher", set()),
        ({"admin": True}, set()),
        (["admin", 1], set()),  # any non-string poisons the whole claim
        (["admin", None], set()),
        ([["admin"]], set()),
        (None, set()),
        (7, set()),
    ],
)
def test_roles_claim_shapes(claim: Any, expected: set[str]) -> None:
    assert roles_from_claims({"roles": claim}, "roles") == frozenset(expected)


def test_roles_claim_absent_and_custom_name() -> None:
    assert roles_from_claims({"sub": "a"}, "roles") == frozenset()
    assert roles_from_claims({"groups": ["admin"], "roles": ["auditor"]}, "groups") == {"admin"}


def test_roles_claim_dotted_path() -> None:
    claims = {"realm_access": {"roles": ["auditor", "offline_access"]}}
    assert roles_from_claims(claims, "realm_access.roles") == {"auditor"}
    assert roles_from_claims({"realm_access": ["x"]}, "realm_access.roles") == frozenset()
    # an exact top-level name wins over the path reading
    claims2 = {"a.b": ["admin"], "a": {"b": ["auditor"]}}
    assert roles_from_claims(claims2, "a.b") == {"admin"}


def test_principal_from_claims() -> None:
    auth = AuthConfig(issuer=ISS, audience=AUD, roles_claim="groups")
    claims = {"sub": "bob", "iss": ISS, "exp": 2_000_000_000, "jti": "t1", "groups": ["admin"]}
    p = principal_from_claims(claims, auth)
    assert p.subject == "bob"
    assert p.roles == frozenset({"admin"})
    assert p.jti == "t1"
    assert p.expires_at == 2_000_000_000
    assert p.issuer == ISS
    assert principal_from_claims({**claims, "jti": ""}, auth).jti is None


# -- authenticate -------------------------------------------------------------------------


async def never_revoked(_jti: str) -> bool:
    return False


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Token abc", "Bearer a b", "abc"],
)
async def test_missing_or_garbled_header(keys: dict[str, Any], header: str | None) -> None:
    auth = auth_for(keys)
    async with JwksCache(auth) as cache:
        with pytest.raises(MissingToken):
            await authenticate(header, cache, auth, never_revoked)
    assert cache.fetches == 0  # no key lookup for a request without a token


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_bearer_scheme_case_insensitive(keys: dict[str, Any], scheme: str) -> None:
    auth = auth_for(keys)
    async with JwksCache(auth) as cache:
        p = await authenticate(f"{scheme} {token(keys)}", cache, auth, never_revoked)
    assert p.subject == "alice" and p.roles == {"researcher"}


def test_bearer_token_extracts_the_token() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("  Bearer   abc.def.ghi  ") == "abc.def.ghi"


async def test_garbage_bearer_token_is_invalid(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    async with JwksCache(auth) as cache:
        for bad in ["abc", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"]:
            with pytest.raises(InvalidToken):
                await authenticate(f"Bearer {bad}", cache, auth, never_revoked)


async def test_revoked_jti_refused(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    revoked = {"stolen"}
    asked: list[str] = []

    async def is_revoked(jti: str) -> bool:
        asked.append(jti)
        return jti in revoked

    async with JwksCache(auth) as cache:
        with pytest.raises(RevokedToken):
            await authenticate(f"Bearer {token(keys, jti='stolen')}", cache, auth, is_revoked)
        p = await authenticate(f"Bearer {token(keys, jti='fine')}", cache, auth, is_revoked)
    assert p.jti == "fine"
    assert asked == ["stolen", "fine"]


async def test_revocation_not_consulted_for_invalid_tokens(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    asked: list[str] = []

    async def is_revoked(jti: str) -> bool:
        asked.append(jti)
        return False

    tok = token(keys, issuer="https://evil.test", jti="x")
    async with JwksCache(auth) as cache:
        with pytest.raises(InvalidToken):
            await authenticate(f"Bearer {tok}", cache, auth, is_revoked)
    assert asked == []


# -- the verified-token cache (auth/token_cache.py) -----------------------------------------


async def test_a_repeated_token_is_served_from_the_cache(keys: dict[str, Any]) -> None:
    auth = auth_for(keys)
    tok = token(keys, jti="j-1")
    async with JwksCache(auth) as cache:
        first = await verify_token(tok, cache, auth)
        second = await verify_token(tok, cache, auth)
        assert (cache.tokens.hits, len(cache.tokens)) == (1, 1)
        second["sub"] = "mallory"  # callers get a copy: the cached claims cannot be edited
        assert (await verify_token(tok, cache, auth))["sub"] == "alice"
        # One character of the signature changed: not the cached token, fully checked.
        head, _, sig = tok.rpartition(".")
        forged = f"{head}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
        with pytest.raises(InvalidToken):
            await verify_token(forged, cache, auth)
        # Another configuration (here: another audience) does not reuse the entry.
        other = AuthConfig(issuer=ISS, audience="someone-else", jwks_file=keys["jwks"])
        with pytest.raises(InvalidToken, match="audience"):
            await verify_token(tok, cache, other)
    assert first == second | {"sub": "alice"}


async def test_a_cached_token_is_refused_after_exp(keys: dict[str, Any]) -> None:
    auth = auth_for(keys, leeway_s=0)
    tok = token(keys, ttl_s=1, jti="short")
    async with JwksCache(auth) as cache:
        claims = await verify_token(tok, cache, auth)
        await verify_token(tok, cache, auth)
        assert cache.tokens.hits == 1
        while time.time() <= claims["exp"]:
            await asyncio.sleep(0.05)
        with pytest.raises(InvalidToken, match="token expired"):
            await verify_token(tok, cache, auth)
        assert len(cache.tokens) == 0


def test_cache_entries_live_at_most_ttl_and_never_past_exp() -> None:
    now = [1_000_000.0]
    tokens = TokenCache(ttl_s=60, clock=lambda: now[0])
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_file=Path("unused"), leeway_s=30)
    tokens.store(b"long", {"exp": now[0] + 3600}, kid="k", alg="ES256", key=None, auth=auth)
    tokens.store(b"short", {"exp": now[0] + 10}, kid="k", alg="ES256", key=None, auth=auth)
    tokens.store(b"late", {"exp": now[0] - 5}, kid="k", alg="ES256", key=None, auth=auth)
    assert len(tokens) == 2  # accepted within the leeway only: never cached
    now[0] += 11  # past "short"'s exp, though within its leeway: full check again
    assert tokens.lookup(b"short", auth) is None
    assert tokens.lookup(b"long", auth) is not None
    now[0] += 50  # 61 s after verification
    assert tokens.lookup(b"long", auth) is None
    small = TokenCache(max_entries=2, clock=lambda: now[0])
    for name in (b"a", b"b", b"c"):
        small.store(name, {"exp": now[0] + 600}, kid="k", alg="ES256", key=None, auth=auth)
    assert small.lookup(b"a", auth) is None and len(small) == 2  # least recently used went


async def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks(
    keys: dict[str, Any],
) -> None:
    auth = auth_for(keys)
    tok = token(keys, jti="j-2")
    clock = [1000.0]
    async with JwksCache(auth, clock=lambda: clock[0], max_age_s=600) as cache:
        await verify_token(tok, cache, auth)
        await verify_token(tok, cache, auth)
        assert cache.tokens.hits == 1
        doc = json.loads(keys["jwks"].read_text("utf-8"))
        doc["keys"] = [k for k in doc["keys"] if k["kid"] != "ec1"]
        keys["jwks"].write_text(json.dumps(doc), "utf-8")
        clock[0] += 601  # the set is stale: the next use reloads it
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await verify_token(tok, cache, auth)
        assert cache.fetches == 2


async def test_a_cached_token_is_refused_when_its_kid_gets_another_key(
    keys: dict[str, Any], tmp_path: Path
) -> None:
    auth = auth_for(keys)
    tok = token(keys, jti="j-3")
    clock = [1000.0]
    async with JwksCache(auth, clock=lambda: clock[0], max_age_s=600) as cache:
        await verify_token(tok, cache, auth)
        # The IdP replaced the key behind "ec1" (compromise): the same kid, other material.
        replacement = generate_keys(tmp_path / "rotated", kid="ec1")
        keys["jwks"].write_text(replacement.jwks_json.read_text("utf-8"), "utf-8")
        clock[0] += 601
        with pytest.raises(InvalidToken, match="bad signature"):
            await verify_token(tok, cache, auth)


async def test_a_revoked_cached_token_is_refused(keys: dict[str, Any], tmp_path: Path) -> None:
    auth = auth_for(keys)
    header = f"Bearer {token(keys, jti='leaked')}"
    store = SqliteStore(str(tmp_path / "state.db"))
    await store.open()
    try:
        async with JwksCache(auth) as cache:
            assert (await authenticate(header, cache, auth, store.is_revoked)).jti == "leaked"
            await authenticate(header, cache, auth, store.is_revoked)
            assert cache.tokens.hits == 1
            draft = AuditDraft(action="revocation.create", outcome="ok", actor="admin")
            await store.add_revocation("leaked", "test", draft)
            with pytest.raises(RevokedToken):
                await authenticate(header, cache, auth, store.is_revoked)
            assert cache.tokens.hits == 2  # the signature check was cached; revocation is not
    finally:
        await store.close()

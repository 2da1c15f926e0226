"""Token attacks, each on real keys and real signatures; every one must end in InvalidToken.

Forged tokens are assembled by hand (``forge``) where pyjwt's own encoder would refuse to
build them (``alg: none``, HS256 keyed with a public key), so the check under test is ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from enclave.auth.jwks import JwksCache
from enclave.auth.jwt import verify_token
from enclave.auth.principal import authenticate
from enclave.config import AuthConfig
from enclave.devkeys import KeyPaths, generate_keys, jwks_document, mint_token, public_jwk
from enclave.errors import InvalidToken, RevokedToken

ISS = "https://idp.test/realms/enclave"
AUD = "enclave-gateway"
KID = "ec1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def good_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "mallory",
        "roles": ["admin"],
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def kp(tmp_path: Path) -> KeyPaths:
    return generate_keys(tmp_path / "keys", kid=KID)


@pytest.fixture
def auth(kp: KeyPaths) -> AuthConfig:
    return AuthConfig(issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256",))


def es256(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: Any) -> str:
    """A real ES256 signature over any header and claims (pyjwt's encoder would vet them)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def private(kp: KeyPaths) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(kp.private_pem.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def sign(kp: KeyPaths, claims: dict[str, Any], **headers: Any) -> str:
    return es256(private(kp), {"alg": "ES256", "typ": "JWT", "kid": KID, **headers}, claims)


async def refused(tok: str, auth: AuthConfig, match: str | None = None) -> InvalidToken:
    async with JwksCache(auth) as cache:
        with pytest.raises(InvalidToken, match=match) as info:
            await verify_token(tok, cache, auth)
    err = info.value
    # never echo token text, and never a traceback
    for part in tok.split("."):
        if len(part) >= 8:
            assert part not in err.detail
    assert "Traceback" not in err.detail
    return err


async def accepted(tok: str, auth: AuthConfig) -> dict[str, Any]:
    async with JwksCache(auth) as cache:
        return await verify_token(tok, cache, auth)


async def test_control_a_good_token_passes(kp: KeyPaths, auth: AuthConfig) -> None:
    assert (await accepted(sign(kp, good_claims()), auth))["sub"] == "mallory"


# -- algorithm attacks ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
async def test_alg_none(auth: AuthConfig, alg: str) -> None:
    tok = forge({"alg": alg, "typ": "JWT", "kid": KID}, good_claims())
    await refused(tok, auth, "algorithm not allowed")


async def test_alg_missing(auth: AuthConfig) -> None:
    await refused(forge({"kid": KID}, good_claims(), b"x" * 64), auth, "algorithm not allowed")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("secret_kind", ["public-pem", "jwk-json", "empty"])
async def test_hmac_key_confusion(kp: KeyPaths, tmp_path: Path, alg: str, secret_kind: str) -> None:
    """HS* signed with the gateway's own public key as the secret (the classic confusion)."""
    secret = {
        "public-pem": kp.public_pem.read_bytes(),
        "jwk-json": kp.jwks_json.read_bytes(),
        "empty": b"",
    }[secret_kind]
    header = {"alg": alg, "typ": "JWT", "kid": KID}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(good_claims()).encode())}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret, signing_input.encode(), digest).digest()
    tok = f"{signing_input}.{b64(sig)}"
    # even a hand-built AuthConfig that lists HS* (load_config would refuse it) does not help
    permissive = AuthConfig(
        issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256", alg)
    )
    await refused(tok, permissive, "algorithm not allowed")


async def test_rs256_token_when_only_es256_allowed(tmp_path: Path, kp: KeyPaths) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    doc = json.loads(kp.jwks_json.read_text("utf-8"))
    doc["keys"] += jwks_document(rsa_key.public_key(), "rsa1")["keys"]
    kp.jwks_json.write_text(json.dumps(doc), "utf-8")
    tok = jwt.encode(good_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa1"})
    only_es = AuthConfig(issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256",))
    await refused(tok, only_es, "algorithm not allowed")
    both = AuthConfig(
        issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256", "RS256")
    )
    assert (await accepted(tok, both))["sub"] == "mallory"  # control: the key itself is fine


async def test_alg_swap_against_a_key_of_another_type(tmp_path: Path, kp: KeyPaths) -> None:
    """Header claims RS256 but names the EC key's kid: the key cannot serve that alg."""
    rsa_key = rsa.generate_private_key(65537, 2048)
    tok = jwt.encode(good_claims(), rsa_key, algorithm="RS256", headers={"kid": KID})
    both = AuthConfig(
        issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256", "RS256")
    )
    await refused(tok, both, "does not fit")


# -- header attacks ------------------------------------------------------------------------


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["x-custom"], [], "exp"])
async def test_crit_header_refused(kp: KeyPaths, auth: AuthConfig, crit: Any) -> None:
    await refused(sign(kp, good_claims(), crit=crit), auth, "critical")


async def test_embedded_jwk_is_not_trusted(auth: AuthConfig) -> None:
    """The attacker signs with their own key and ships its public half in the header."""
    evil = ec.generate_private_key(ec.SECP256R1())
    jwk = {**public_jwk(evil.public_key()), "kid": KID}
    tok = jwt.encode(good_claims(), evil, algorithm="ES256", headers={"kid": KID, "jwk": jwk})
    await refused(tok, auth, "embedded or remote keys")
    # and without the jwk header the signature simply does not verify against our key
    tok2 = jwt.encode(good_claims(), evil, algorithm="ES256", headers={"kid": KID})
    await refused(tok2, auth, "bad signature")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://evil.test/jwks.json"),
        ("x5u", "https://evil.test/cert.pem"),
        ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
    ],
)
async def test_remote_key_headers_refused(
    kp: KeyPaths, auth: AuthConfig, name: str, value: Any
) -> None:
    await refused(sign(kp, good_claims(), **{name: value}), auth, "embedded or remote keys")


@pytest.mark.parametrize("kid", [None, "", 7, "k" * 300])
async def test_missing_or_bad_kid(kp: KeyPaths, auth: AuthConfig, kid: Any) -> None:
    header: dict[str, Any] = {"alg": "ES256"} if kid is None else {"alg": "ES256", "kid": kid}
    await refused(es256(private(kp), header, good_claims()), auth, "key id")


# -- claim attacks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"iss": None}, "missing required claim: iss"),
        ({"aud": None}, "missing required claim: aud"),
        ({"sub": None}, "missing required claim: sub"),
        ({"exp": None}, "missing required claim: exp"),
        ({"iss": "https://evil.test/realms/enclave"}, "issuer mismatch"),
        ({"iss": ISS + "/"}, "issuer mismatch"),
        ({"iss": ISS[:-1]}, "issuer mismatch"),
        ({"iss": "https://idp.test"}, "issuer mismatch"),  # substring of the real issuer
        ({"iss": [ISS]}, "issuer mismatch"),
        ({"aud": "other-service"}, "audience mismatch"),
        ({"aud": ["other-service"]}, "audience mismatch"),
        ({"aud": "enclave-gateway-staging"}, "audience mismatch"),
        ({"aud": "enclave"}, "audience mismatch"),
        ({"aud": []}, "missing required claim: aud"),
        ({"sub": ""}, "invalid subject"),
        ({"sub": 42}, "invalid subject"),
        ({"exp": "never"}, "malformed token"),
        ({"jti": 5}, "invalid token id"),
        # text no store can keep: the subject and token id reach the audit record
        ({"sub": "alice\x00"}, "invalid subject"),
        ({"sub": "\ud800"}, "invalid subject"),
        ({"jti": "j\x00"}, "invalid token id"),
        ({"jti": "\udfff"}, "invalid token id"),
    ],
)
async def test_bad_claims(
    kp: KeyPaths, auth: AuthConfig, over: dict[str, Any], reason: str
) -> None:
    claims = good_claims()
    for k, v in over.items():
        if v is None:
            claims.pop(k)
        else:
            claims[k] = v
    err = await refused(sign(kp, claims), auth)
    assert err.detail == reason


async def test_expired(kp: KeyPaths, auth: AuthConfig) -> None:
    now = int(time.time())
    await refused(sign(kp, good_claims(iat=now - 900, exp=now - 300)), auth, "token expired")


async def test_expired_within_leeway_accepted(kp: KeyPaths, auth: AuthConfig) -> None:
    now = int(time.time())
    assert auth.leeway_s == 30
    await accepted(sign(kp, good_claims(iat=now - 900, exp=now - 10)), auth)


async def test_nbf_in_future_beyond_leeway(kp: KeyPaths, auth: AuthConfig) -> None:
    nbf = int(time.time()) + 120
    await refused(sign(kp, good_claims(nbf=nbf)), auth, "not yet valid")


async def test_nbf_within_leeway_accepted(kp: KeyPaths, auth: AuthConfig) -> None:
    nbf = int(time.time()) + 10
    await accepted(sign(kp, good_claims(nbf=nbf)), auth)


async def test_leeway_is_taken_from_config(kp: KeyPaths) -> None:
    strict = AuthConfig(
        issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256",), leeway_s=0
    )
    nbf = int(time.time()) + 10
    await refused(sign(kp, good_claims(nbf=nbf)), strict, "not yet valid")


# -- tampering -----------------------------------------------------------------------------


async def test_tampered_payload(kp: KeyPaths, auth: AuthConfig) -> None:
    header, _payload, sig = sign(kp, good_claims(roles=["researcher"])).split(".")
    evil_payload = b64(json.dumps(good_claims(roles=["admin"])).encode())
    await refused(f"{header}.{evil_payload}.{sig}", auth, "bad signature")


async def test_tampered_header(kp: KeyPaths, auth: AuthConfig) -> None:
    _header, payload, sig = sign(kp, good_claims()).split(".")
    other = b64(json.dumps({"alg": "ES256", "kid": KID, "typ": "JWT", "x": 1}).encode())
    await refused(f"{other}.{payload}.{sig}", auth, "bad signature")


@pytest.mark.parametrize("where", [0, 10, -2])
async def test_tampered_signature(kp: KeyPaths, auth: AuthConfig, where: int) -> None:
    header, payload, sig = sign(kp, good_claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[where] ^= 0x01
    await refused(f"{header}.{payload}.{b64(bytes(raw))}", auth, "bad signature")


async def test_stripped_signature(kp: KeyPaths, auth: AuthConfig) -> None:
    header, payload, _sig = sign(kp, good_claims()).split(".")
    await refused(f"{header}.{payload}.", auth)
    await refused(f"{header}.{payload}", auth, "malformed token")


async def test_signed_by_another_key_with_our_kid(auth: AuthConfig) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    tok = jwt.encode(good_claims(), other, algorithm="ES256", headers={"kid": KID})
    await refused(tok, auth, "bad signature")


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "a.b", "a.b.c.d", "!!!.e30.AA", "W10.e30.AA", "bnVsbA.e30.AA", "[[[[.e30.AA"],
)
async def test_garbage_tokens(auth: AuthConfig, bad: str) -> None:
    await refused(bad, auth, "malformed token")


async def test_deeply_nested_header(auth: AuthConfig) -> None:
    tok = f"{b64(b'[' * 5000 + b']' * 5000)}.e30.AA"
    await refused(tok[:16000], auth, "malformed token")


async def test_oversized_token(kp: KeyPaths, auth: AuthConfig) -> None:
    tok = sign(kp, good_claims(pad="x" * 20_000))
    await refused(tok, auth, "malformed token")


# -- key lookup attacks --------------------------------------------------------------------


async def test_unknown_kid_one_refresh_then_rate_limited(kp: KeyPaths, auth: AuthConfig) -> None:
    """Forged kids cannot make the gateway re-read its JWKS more than once per interval."""
    async with JwksCache(auth) as cache:
        await verify_token(sign(kp, good_claims()), cache, auth)
        assert cache.fetches == 1
        for i in range(25):
            tok = sign(kp, good_claims(), kid=f"f{i}")
            with pytest.raises(InvalidToken, match="unknown signing key"):
                await verify_token(tok, cache, auth)
        assert cache.fetches == 1  # loaded < jwks_min_refresh_s ago: no refresh at all


async def test_unknown_kid_triggers_exactly_one_refresh(kp: KeyPaths) -> None:
    """With a clock past the interval, one unknown kid causes exactly one re-read."""
    now = [0.0]
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_file=kp.jwks_json, algorithms=("ES256",))
    async with JwksCache(auth, clock=lambda: now[0]) as cache:
        await verify_token(sign(kp, good_claims()), cache, auth)
        now[0] += auth.jwks_min_refresh_s
        tok = sign(kp, good_claims(), kid="ghost")
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await verify_token(tok, cache, auth)
        assert cache.fetches == 2
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await verify_token(tok, cache, auth)
        assert cache.fetches == 2


async def test_revoked_jti(kp: KeyPaths, auth: AuthConfig) -> None:
    async def is_revoked(jti: str) -> bool:
        return jti == "j1"

    async with JwksCache(auth) as cache:
        with pytest.raises(RevokedToken):
            await authenticate(f"Bearer {sign(kp, good_claims())}", cache, auth, is_revoked)


async def test_roles_cannot_be_smuggled_in_other_shapes(kp: KeyPaths, auth: AuthConfig) -> None:
    async def never(_jti: str) -> bool:
        return False

    async with JwksCache(auth) as cache:
        for roles in ["admin", {"admin": True}, ["admin", 1], [["admin"]]]:
            tok = sign(kp, good_claims(roles=roles))
            p = await authenticate(f"Bearer {tok}", cache, auth, never)
            assert p.roles == frozenset()


async def test_dev_minted_token_round_trip(kp: KeyPaths, auth: AuthConfig) -> None:
    tok = mint_token(
        kp.private_pem, sub="a", roles=["auditor"], issuer=ISS, audience=AUD, ttl_s=60, kid=KID
    )
    assert (await accepted(tok, auth))["roles"] == ["auditor"]


# -- identifiers and repeated members -------------------------------------------------------


def es256_text(kp: KeyPaths, header: str, claims: str) -> str:
    """A real ES256 signature over header and claims given as JSON *text* (so a member can be
    repeated, which no dict can express)."""
    signing_input = f"{b64(header.encode())}.{b64(claims.encode())}"
    sig = private(kp).sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(sig)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def test_a_jti_too_long_to_revoke_is_refused(kp: KeyPaths, auth: AuthConfig) -> None:
    assert (await accepted(sign(kp, good_claims(jti="j" * 256)), auth))["jti"] == "j" * 256
    await refused(sign(kp, good_claims(jti="j" * 257)), auth, "invalid token id")


async def test_a_subject_over_256_characters_is_refused(kp: KeyPaths, auth: AuthConfig) -> None:
    await refused(sign(kp, good_claims(sub="s" * 257)), auth, "invalid subject")


async def test_repeated_claim_is_refused(kp: KeyPaths, auth: AuthConfig) -> None:
    header = json.dumps({"alg": "ES256", "typ": "JWT", "kid": KID})
    claims = json.dumps(good_claims(sub="alice"))
    # control: the same text without the repeat verifies
    assert (await accepted(es256_text(kp, header, claims), auth))["sub"] == "alice"
    repeated = claims[:-1] + ', "sub": "admin-user"}'
    await refused(es256_text(kp, header, repeated), auth, "a claim member is repeated")


@pytest.mark.parametrize("member", ['"alg": "ES256"', f'"kid": "{KID}"', '"typ": "JWT"'])
async def test_repeated_header_member_is_refused(
    kp: KeyPaths, auth: AuthConfig, member: str
) -> None:
    header = f'{{"alg": "ES256", "typ": "JWT", "kid": "{KID}", {member}}}'
    tok = es256_text(kp, header, json.dumps(good_claims()))
    await refused(tok, auth, "a header member is repeated")

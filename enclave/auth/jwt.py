"""Token verification: a token cannot steer its own check.

``verify_token`` reads the unverified header only to pick the key (``kid``) and to refuse
early what can never pass (``alg`` outside ``auth.algorithms``). The algorithms handed to
pyjwt come from configuration, and the key from the JWKS is bound to one algorithm that fits
its type (``JwksCache.get_key``), so ``none``, HS* "key confusion" and algorithm swaps fail.

Header rules, decided here:

- ``alg`` must be listed in ``auth.algorithms``; ``none`` and HS* are refused even if a
  hand-built ``AuthConfig`` lists them (config validation refuses them too).
- ``kid`` is required: the contract chooses keys by ``kid``; there is no "try every key".
- ``crit`` is refused whatever it lists: we implement no JWS extension (not even ``b64``),
  and RFC 7515 §4.1.11 says a recipient must reject critical extensions it does not apply.
- ``jwk``, ``jku``, ``x5u`` and ``x5c`` are **refused**, not ignored: a token that brings its
  own key (or a URL to one) is either misconfigured or an attack, and refusing makes either
  visible in the audit log. Thumbprints (``x5t``) are harmless and ignored.
- ``typ``, when present, must be ``JWT`` or ``at+jwt`` (RFC 9068 access tokens).

Claims: ``iss``, ``aud``, ``sub`` and ``exp`` are required; ``iss`` must equal
``auth.issuer`` exactly (checked again here, not only by pyjwt); ``aud`` must contain
``auth.audience``; ``exp``/``nbf``/``iat`` are checked with ``auth.leeway_s``; ``sub`` must be
a non-empty string of at most 256 characters; ``jti``, when present, a non-empty string of at
most 256 (a longer one could never be revoked: a revocation names at most 256); neither may
hold a NUL or a lone surrogate (``inputs.text_problem``: no store could keep it). The header
and the claims are JSON objects with no repeated member (``strict_json.py``): pyjwt would keep
the last of two ``alg``s or ``sub``s silently, another reader the first. Every failure is an
``InvalidToken`` whose detail is a short fixed reason, never token text.

A token that passed all of this is remembered for at most 60 seconds (never past ``exp``, and
only while the key that verified it is still the JWKS's key for its ``kid``) in
``jwks.tokens``, so a client's repeated requests skip the signature check; ``exp``/``nbf`` are
still checked on every use, and revocation is checked by the caller on every request. See
``auth/token_cache.py`` for why that is safe.
"""

from __future__ import annotations

import base64
from typing import Any, TypeGuard

import jwt
from jwt import exceptions as jwt_errors
from jwt.types import Options

from enclave.auth.jwks import JwksCache
from enclave.auth.token_cache import token_digest
from enclave.config import AuthConfig
from enclave.errors import InvalidToken
from enclave.inputs import text_problem
from enclave.strict_json import DuplicateKey, loads_strict

MAX_TOKEN_BYTES = 16 * 1024
MAX_ID_CHARS = 256  # longest accepted `sub` and `jti` (a revocation names at most 256)
FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c")
ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp"]

# pyjwt exception → short reason. Order matters: subclasses before their bases.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid"),
    (jwt_errors.MissingRequiredClaimError, "missing required claim"),
    (jwt_errors.InvalidAudienceError, "audience mismatch"),
    (jwt_errors.InvalidIssuerError, "issuer mismatch"),
    (jwt_errors.InvalidSubjectError, "invalid subject"),
    (jwt_errors.InvalidJTIError, "invalid token id"),
    (jwt_errors.InvalidIssuedAtError, "invalid issued-at"),
    (jwt_errors.InvalidSignatureError, "bad signature"),
    (jwt_errors.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt_errors.InvalidKeyError, "signing key unusable"),
    (jwt_errors.DecodeError, "malformed token"),
)


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return f"missing required claim: {exc.claim}"  # a claim name from our fixed list
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return "invalid token"


def _segment(token: str, index: int, what: str) -> dict[str, Any]:
    """Segment ``index`` of a compact JWS as a JSON object, read strictly: a repeated member
    is refused, since pyjwt (and the IdP's library) would keep one of the two silently."""
    if token.count(".") != 2:
        raise InvalidToken("malformed token")
    segment = token.split(".")[index]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = loads_strict(raw)
    except DuplicateKey:
        raise InvalidToken(f"malformed token: a {what} member is repeated") from None
    except (ValueError, RecursionError):  # binascii and JSON errors are ValueErrors
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, parsed by us (our header rules apply, not pyjwt's)."""
    return _segment(token, 0, "header")


def check_header(header: dict[str, Any], auth: AuthConfig) -> tuple[str, str]:
    """Refuse what the header alone condemns; return ``(kid, alg)`` for the key lookup."""
    alg = header.get("alg")
    if (
        not isinstance(alg, str)
        or alg.lower() == "none"
        or alg.upper().startswith("HS")
        or alg not in auth.algorithms
    ):
        raise InvalidToken("algorithm not allowed")
    if "crit" in header:
        raise InvalidToken("unsupported critical header")
    if any(name in header for name in FORBIDDEN_HEADERS):
        raise InvalidToken("embedded or remote keys are not accepted")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYP):
        raise InvalidToken("unexpected token type")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise InvalidToken("missing or invalid key id")
    return kid, alg


async def verify_token(token: str, jwks: JwksCache, auth: AuthConfig) -> dict[str, Any]:
    """Verify ``token`` against the JWKS and ``auth``; return its claims or raise.

    A token verified within the last 60 s (``jwks.tokens``) is answered from the cache after
    its key and its ``exp``/``nbf`` are re-checked; the caller still checks revocation.
    """
    if not token or len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("malformed token")
    digest = token_digest(token)
    cached = jwks.tokens.lookup(digest, auth)
    if cached is not None:
        if await jwks.get_key(cached.kid, cached.alg) is cached.key:
            return dict(cached.claims)
        jwks.tokens.discard(digest)  # the key set changed since: verify in full
    kid, alg = check_header(unverified_header(token), auth)
    _segment(token, 1, "claim")  # refuse repeated claims before pyjwt reads them its way
    key = await jwks.get_key(kid, alg)
    options: Options = {
        "require": list(REQUIRED_CLAIMS),
        "verify_signature": True,
        "verify_exp": True,
        "verify_nbf": True,
        "verify_iat": True,
        "verify_aud": True,
        "verify_iss": True,
        "verify_sub": True,
        "verify_jti": True,
        "enforce_minimum_key_length": True,
    }
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=list(auth.algorithms),
            options=options,
            audience=auth.audience,
            issuer=auth.issuer,
            leeway=auth.leeway_s,
        )
    except jwt_errors.PyJWTError as exc:
        raise InvalidToken(_reason(exc)) from None
    _check_claims(claims, auth)
    jwks.tokens.store(digest, claims, kid=kid, alg=alg, key=key, auth=auth)
    return claims


def _id_text(value: Any) -> TypeGuard[str]:
    """A ``sub`` or ``jti``: a non-empty string of at most ``MAX_ID_CHARS`` that a store can
    keep (no NUL, no lone surrogate: both reach audit records and revocations)."""
    fits = isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS
    return fits and text_problem(value) is None


def _check_claims(claims: dict[str, Any], auth: AuthConfig) -> None:
    """Belt and braces over pyjwt: shapes we rely on downstream."""
    if claims.get("iss") != auth.issuer:
        raise InvalidToken("issuer mismatch")
    sub = claims.get("sub")
    if not _id_text(sub) or not sub.strip():
        raise InvalidToken("invalid subject")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or auth.audience not in audiences:
        raise InvalidToken("audience mismatch")
    jti = claims.get("jti")
    # a jti longer than a revocation may name could never be revoked
    if "jti" in claims and not _id_text(jti):
        raise InvalidToken("invalid token id")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken("invalid expiry")

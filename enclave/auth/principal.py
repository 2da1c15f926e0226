"""From an ``Authorization`` header to a frozen ``Principal``.

Roles come only from the claim named by ``auth.roles_claim``, and only when it is a list of
strings: a string, a dict, or a list holding anything else grants **no** role (a malformed
claim is not half-trusted). Unknown role names are dropped. If no top-level claim has that
exact name and the name contains dots, it is read as a path into nested objects
(``realm_access.roles`` for Keycloak); the same shape rule applies at the end of the path.

Licences, tiers and revocations are never read from the token: ``authenticate`` asks
``is_revoked`` (the store) on every request, so a revocation takes effect at once. A token
without ``jti`` cannot be revoked individually; it lives until ``exp``. ``refuse_revoked``
is that check, asked again as the last step before data is read (``charged.reserve_unrevoked``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from enclave.auth.jwks import JwksCache
from enclave.auth.jwt import verify_token
from enclave.config import AuthConfig
from enclave.errors import MissingToken, RevokedToken
from enclave.models import ROLES, Principal

IsRevoked = Callable[[str], Awaitable[bool]]
REVOKED = "token has been revoked"
_MISSING = object()


def roles_from_claims(claims: Mapping[str, Any], roles_claim: str) -> frozenset[str]:
    """Known roles from ``claims[roles_claim]`` when it is a list of strings, else none."""
    value = _lookup(claims, roles_claim)
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        return frozenset()
    return frozenset(r for r in value if r in ROLES)


def _lookup(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    if "." not in name:
        return _MISSING
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def principal_from_claims(claims: Mapping[str, Any], auth: AuthConfig) -> Principal:
    """A ``Principal`` from verified claims (``verify_token`` has checked their shapes)."""
    exp = claims.get("exp")
    jti = claims.get("jti")
    return Principal(
        subject=str(claims["sub"]),
        roles=roles_from_claims(claims, auth.roles_claim),
        jti=jti if isinstance(jti, str) and jti else None,
        expires_at=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
        issuer=str(claims.get("iss", "")),
    )


def bearer_token(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ``MissingToken``.

    The scheme is case-insensitive (RFC 7235 §2.1); exactly one token must follow it.
    """
    if not authorization_header:
        raise MissingToken("Authorization: Bearer token required")
    parts = authorization_header.strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise MissingToken("Authorization: Bearer token required")
    return parts[1]


async def authenticate(
    authorization_header: str | None,
    jwks: JwksCache,
    auth: AuthConfig,
    is_revoked: IsRevoked,
) -> Principal:
    """Header → verified ``Principal``: ``MissingToken``, ``InvalidToken``, ``RevokedToken``."""
    token = bearer_token(authorization_header)
    claims = await verify_token(token, jwks, auth)
    principal = principal_from_claims(claims, auth)
    await refuse_revoked(is_revoked, principal.jti)
    return principal


async def refuse_revoked(is_revoked: IsRevoked, jti: str | None, detail: str = REVOKED) -> None:
    """``RevokedToken`` (with ``detail``) if ``jti`` has been revoked; a token without one
    (None) cannot be. Never cached: the store is asked each time."""
    if jti is not None and await is_revoked(jti):
        raise RevokedToken(detail)

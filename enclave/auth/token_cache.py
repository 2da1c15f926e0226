"""Verified-token cache: skip the signature check for a token seen moments ago.

An ES256 verification costs ~0.9 ms of event-loop time, and a client sends the same bearer
token on every request, so ``verify_token`` remembers the claims of a token it has fully
verified. What a cached entry may and may not skip (decisions, and why they are safe):

- **Keyed by SHA-256 of the whole token string**, signature included: a token that differs in
  one character (a forged signature, an edited payload) is a different key and goes through
  the full check. The token text itself is not kept.
- **Lives at most ``ttl_s`` (60 s) and never past ``exp``**: an entry expires at
  ``min(exp, verified_at + 60 s)``. After ``exp`` the token is verified again in full (pyjwt
  then applies ``auth.leeway_s``, exactly as without the cache) and is not cached again. The
  60 s bound caps how long anything the cache skips (the signature check against the current
  key) can lag behind a change to the key set.
- **Only while the key that verified it is still the key in the JWKS**: a hit re-asks
  ``JwksCache.get_key(kid, alg)`` (cheap: dictionaries) and requires the *same* parsed key
  object that verified the token. Any successful JWKS reload makes new key objects and also
  clears this cache, so a key removed or replaced at the IdP stops vouching for cached tokens
  at the next reload (which ``get_key`` also triggers when the set is older than
  ``max_age_s``).
- **``exp``/``nbf`` are re-checked on every hit** with ``auth.leeway_s`` (so a clock stepping
  back cannot revive a not-yet-valid token), and the entry only serves the ``AuthConfig`` it
  was verified under (issuer, audience and algorithms are part of that check).
- **Revocation is not cached**: ``auth.principal.authenticate`` (called by the web
  middleware) asks the store ``is_revoked`` on every request after ``verify_token``, cached or
  not, so a revocation takes effect at once.
- **Bounded LRU** (``max_entries``, default 4096): a flood of distinct valid tokens evicts the
  oldest entries; it can cost CPU but not memory. Failures are never cached.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enclave.config import AuthConfig

DEFAULT_TTL_S = 60.0
DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True)
class CachedToken:
    """What a full verification established about one token."""

    claims: dict[str, Any]
    kid: str
    alg: str
    key: object  # the PyJWK that verified it (identity is compared, never the value)
    auth: AuthConfig
    until: float  # wall-clock seconds: min(exp, verified_at + ttl)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache:
    """Bounded LRU of verified claims; see the module docstring for what a hit may skip.

    ``clock`` is a wall clock (seconds since the epoch, as ``exp`` and ``nbf`` are),
    injectable for tests. ``max_entries=0`` disables caching.
    """

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, digest: bytes, auth: AuthConfig) -> CachedToken | None:
        """The live entry for ``digest`` under ``auth``, or None (an expired entry is dropped).

        The caller must still confirm the key (``CachedToken.key``) is current."""
        entry = self._entries.get(digest)
        if entry is None:
            self.misses += 1
            return None
        now = self._clock()
        if now >= entry.until or not _times_ok(entry.claims, now, auth.leeway_s):
            del self._entries[digest]
            self.misses += 1
            return None
        if entry.auth is not auth and entry.auth != auth:
            self.misses += 1
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        return entry

    def store(
        self,
        digest: bytes,
        claims: dict[str, Any],
        *,
        kid: str,
        alg: str,
        key: object,
        auth: AuthConfig,
    ) -> None:
        """Remember a token that just passed the full check (``exp`` already validated)."""
        if self.max_entries <= 0:
            return
        now = self._clock()
        until = min(float(claims["exp"]), now + self.ttl_s)
        if until <= now:  # accepted only within the leeway: verify in full every time
            return
        self._entries[digest] = CachedToken(dict(claims), kid, alg, key, auth, until)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        """Forget every entry (called on every successful JWKS reload)."""
        self._entries.clear()


def _times_ok(claims: dict[str, Any], now: float, leeway: float) -> bool:
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now - leeway:
        return False
    nbf = claims.get("nbf")
    if nbf is None:
        return True
    return isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf <= now + leeway

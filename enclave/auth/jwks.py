"""JWKS cache: ``kid`` → verification key, loaded lazily, refreshed sparingly.

Decisions (and why):

- **Lazy load.** Nothing is read at start-up; the first token triggers the load. A gateway
  whose IdP is briefly down still starts and answers health checks; requests get 401
  "signing keys unavailable" until the keys arrive.
- **Never block the loop.** A ``jwks_file`` is read with ``asyncio.to_thread``; a ``jwks_url``
  is fetched with aiohttp (the app's session when one is lent, else our own), with a timeout,
  no redirects and a size cap.
- **Unknown kid → at most one refresh, rate limited.** An unknown ``kid`` refreshes the set
  only if no load was *attempted* in the last ``jwks_min_refresh_s`` seconds, whatever the
  number of distinct unknown kids (a flood of forged kids cannot turn the gateway into a
  fetch amplifier against the IdP). Concurrent callers share one lock, so they cannot race
  into several fetches. Failed loads count as attempts too.
- **Periodic refresh.** Keys older than ``auth.jwks_refresh_s`` (default 300 s) are
  reloaded on next use, so a key *removed* from the JWKS (e.g. after a compromise) stops
  being trusted within that interval, without a restart: a well-formed set replaces the old
  one entirely. While one request reloads, the others go on with the current set.
- **Bounded staleness, then fail closed.** If a reload fails, the old keys stay in use (a
  short IdP outage must not lock everyone out) and the next attempt waits
  ``jwks_min_refresh_s``. But once no load has succeeded for ``auth.jwks_max_stale_s``
  (default 3600 s), every token is refused ("signing keys are stale") until a load succeeds:
  a key the IdP removed during a long outage cannot stay trusted without limit. ``state()``
  says so for ``/readyz``.
- **A key must fit the token.** A key is only used for an algorithm its ``kty``/``crv``
  supports and, when the JWK names an ``alg``, exactly that one. Keys marked for another
  ``use`` or ``key_ops``, symmetric (``oct``) keys and JWKs carrying private members are
  ignored at load time: an HS* token can never be checked against a public key.
- **Verified tokens are cached here too** (``tokens``, an ``auth.token_cache.TokenCache``):
  the cache belongs to the key set it trusts, so every successful reload clears it.
- **Failures are InvalidToken.** A JWKS that cannot be read or parsed is logged (without
  traceback noise for the caller) and the request gets ``InvalidToken`` saying the keys are
  unavailable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from enclave.auth.token_cache import TokenCache
from enclave.config import AuthConfig
from enclave.errors import InvalidToken

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1 << 20  # 1 MiB: a JWKS is a few kB; anything bigger is not a key set
FETCH_TIMEOUT_S = 10.0

# Which key types can verify which algorithm (RFC 7518 §3.1, RFC 8037 §3.1).
_ALG_FITS: dict[str, tuple[str, frozenset[str] | None]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class JwksUnavailable(Exception):
    """Internal: the key set could not be loaded (never shown to callers)."""


def key_fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """True when ``jwk`` may verify a signature made with ``alg``."""
    fit = _ALG_FITS.get(alg)
    if fit is None:
        return False
    kty, curves = fit
    if jwk.get("kty") != kty:
        return False
    if curves is not None and jwk.get("crv") not in curves:
        return False
    named = jwk.get("alg")
    return named is None or named == alg


def usable_jwks(document: Any) -> dict[str, list[dict[str, Any]]]:
    """Index a parsed JWKS document by ``kid``, keeping only public signature keys.

    Raises ``JwksUnavailable`` if the document is not a JWKS at all; silently skips
    individual keys that cannot serve (no kid, wrong use, private or symmetric material).
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("not a JWK set (no 'keys' list)")
    out: dict[str, list[dict[str, Any]]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if jwk.get("kty") not in {"EC", "RSA", "OKP"} or _PRIVATE_MEMBERS & jwk.keys():
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        out.setdefault(kid, []).append(jwk)
    return out


class JwksCache:
    """Verification keys by ``kid``; see the module docstring for the refresh rules.

    ``session`` is borrowed (the app's session; never closed here); ``session_factory``
    makes a session this cache owns and closes. With neither, a default session is made on
    first fetch. ``clock`` is a monotonic clock, injectable for tests. ``tokens`` is the
    verified-token cache ``verify_token`` consults (a default ``TokenCache`` when omitted).
    ``max_age_s`` overrides ``auth.jwks_refresh_s``.
    """

    def __init__(
        self,
        auth: AuthConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_age_s: float | None = None,
        tokens: TokenCache | None = None,
    ) -> None:
        if (auth.jwks_file is None) == (auth.jwks_url is None):
            raise ValueError("exactly one of jwks_file / jwks_url is required")
        self._auth = auth
        self._borrowed = session
        self._factory = session_factory
        self._owned: aiohttp.ClientSession | None = None
        self._clock = clock
        self._max_age_s = auth.jwks_refresh_s if max_age_s is None else max_age_s
        self._created_at = clock()  # staleness counts from here until a first load succeeds
        self._keys: dict[str, list[dict[str, Any]]] | None = None
        self._loaded_at: float | None = None  # last successful load
        self._attempted_at: float | None = None  # last load attempt, successful or not
        self._lock = asyncio.Lock()
        self._parsed: dict[tuple[str, int, str], PyJWK] = {}
        self.fetches = 0  # load attempts so far (for metrics and tests)
        self.tokens = tokens if tokens is not None else TokenCache()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> JwksCache:
        """Ready the cache (no I/O: keys load on first use). Returns ``self``."""
        return self

    async def close(self) -> None:
        """Close the session this cache owns, if any; a borrowed session is left open."""
        if self._owned is not None:
            await self._owned.close()
            self._owned = None

    async def __aenter__(self) -> JwksCache:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- lookup ----------------------------------------------------------------------------

    async def get_key(self, kid: str, alg: str) -> PyJWK:
        """The key for ``kid`` fit for ``alg``, or ``InvalidToken``."""
        if alg not in self._auth.algorithms:
            raise InvalidToken("algorithm not allowed")
        keys = await self._current_keys()
        if kid not in keys:
            keys = await self._refresh_for_unknown(kid)
        candidates = keys.get(kid)
        if not candidates:
            raise InvalidToken("unknown signing key")
        for jwk in candidates:
            if key_fits(jwk, alg):
                return self._to_pyjwk(kid, jwk, alg)
        raise InvalidToken("signing key does not fit the token's algorithm")

    def _to_pyjwk(self, kid: str, jwk: dict[str, Any], alg: str) -> PyJWK:
        cache_key = (kid, id(jwk), alg)
        found = self._parsed.get(cache_key)
        if found is None:
            try:
                found = PyJWK(jwk, algorithm=alg)
            except PyJWTError:
                log.warning("JWKS key %r cannot be used for %s", kid, alg)
                raise InvalidToken("signing key unusable") from None
            self._parsed[cache_key] = found
        return found

    async def _current_keys(self) -> dict[str, list[dict[str, Any]]]:
        now = self._clock()
        if self._keys is not None and self._loaded_at is not None:
            fresh = now - self._loaded_at < self._max_age_s
            if (fresh or not self._may_attempt(now)) and not self._too_stale(now):
                return self._keys
        async with self._lock:
            now = self._clock()
            stale = self._keys is None or (
                self._loaded_at is not None and now - self._loaded_at >= self._max_age_s
            )
            if stale and self._may_attempt(now):
                await self._load()
            if self._keys is None:
                raise InvalidToken("signing keys unavailable")
            if self._too_stale(self._clock()):
                raise InvalidToken("signing keys are stale")
            return self._keys

    def _too_stale(self, now: float) -> bool:
        since = self._loaded_at if self._loaded_at is not None else self._created_at
        return now - since > self._auth.jwks_max_stale_s

    async def state(self) -> str:
        """For ``/readyz``: ``ok`` (a current key set, loading it now if none was tried yet),
        ``stale`` (no load has succeeded for ``jwks_max_stale_s``: tokens are refused) or
        ``unavailable`` (no key set could be loaded yet)."""
        try:
            await self._current_keys()
        except InvalidToken as exc:
            return "stale" if exc.detail == "signing keys are stale" else "unavailable"
        return "ok"

    async def _refresh_for_unknown(self, kid: str) -> dict[str, list[dict[str, Any]]]:
        async with self._lock:
            keys = self._keys or {}
            if kid in keys or not self._may_attempt(self._clock()):
                return keys
            await self._load()
            return self._keys or {}

    def _may_attempt(self, now: float) -> bool:
        return (
            self._attempted_at is None or now - self._attempted_at >= self._auth.jwks_min_refresh_s
        )

    async def _load(self) -> None:
        """One load attempt (caller holds the lock). Keeps the old keys on failure."""
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            raw = await self._read()
            document = json.loads(raw)
            keys = usable_jwks(document)
        except (JwksUnavailable, OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("JWKS load failed: %s", _describe(exc))
            return
        if not keys:
            log.warning("JWKS holds no usable signature keys; every token will be refused")
        self._keys = keys  # a well-formed set is authoritative, so removed keys stop working
        self._parsed.clear()
        self.tokens.clear()  # cached verifications vouch only for the keys they were made with
        self._loaded_at = self._clock()

    async def _read(self) -> bytes:
        if self._auth.jwks_file is not None:
            return await asyncio.to_thread(_read_capped, self._auth.jwks_file)
        url = self._auth.jwks_url or ""
        async with self._session().get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S),
            headers={"Accept": "application/json"},
        ) as resp:
            if resp.status != 200:
                raise JwksUnavailable(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise JwksUnavailable("JWKS too large")
            return body

    def _session(self) -> aiohttp.ClientSession:
        if self._borrowed is not None:
            return self._borrowed
        if self._owned is None or self._owned.closed:
            self._owned = self._factory() if self._factory is not None else aiohttp.ClientSession()
        return self._owned


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise JwksUnavailable("JWKS too large")
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return "not valid JSON"
    return f"{type(exc).__name__}: {exc}"


@asynccontextmanager
async def open_jwks(
    auth: AuthConfig,
    *,
    session: aiohttp.ClientSession | None = None,
    session_factory: Callable[[], aiohttp.ClientSession] | None = None,
) -> AsyncIterator[JwksCache]:
    """The JWKS cache as one resource lifecycle (wrap it in ``app.cleanup_ctx``)."""
    cache = JwksCache(auth, session=session, session_factory=session_factory)
    await cache.open()
    try:
        yield cache
    finally:
        await cache.close()

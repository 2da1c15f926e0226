"""Rate limits that hold for every request, refusals included, on every replica.

Counting: fixed one-minute windows (``win = floor(unix_seconds / 60)``) of hits per key,
kept in the store (``Store.count_hits``, ``store/ops.py``), so replicas on one store
share one count: a limit of N per minute is N per minute for the deployment, not per process.
One store round trip per request counts all of its keys at once.

Keys (the web middleware and the pipeline choose them; limits are in ``[limits]`` and tiers):

- ``addr:<ip>``: every request on a non-public route, from one source address;
- ``fail:<ip>``: failed authentications from one source address;
- ``sub:<subject>``: every authenticated request of one subject, refused ones included;
- ``lic:<licence id>``: query and estimate requests of one licence (the tier's
  ``rate_limit_per_minute``), counted before the SQL is parsed.

A key found over its limit is remembered in this process until its window ends
(``refuse_blocked``): further requests are refused without a store write or a signature
check, so a flood costs neither disk nor CPU. Fixed windows allow up to twice the limit
across a window boundary; that is the price of one small row per key and minute.

Only the refusal that crosses a limit (the count that first exceeds it, which exactly one
request sees) is audited (``RateLimited.audit``); the rest are counted in metrics, so a flood
cannot fill the audit log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from enclave.errors import RateLimited

WINDOW_S = 60
MAX_BLOCKED = 100_000  # keys remembered as over their limit (a bound on memory)


class Counter(Protocol):
    async def count_hits(
        self, keys: Sequence[str], win: int, sweep: bool = False
    ) -> dict[str, int]: ...


class RateLimiter:
    """Fixed-window limits counted in ``counter`` (the store). ``clock`` is a wall clock
    (seconds since the epoch, so every replica agrees on the window), injectable for tests."""

    def __init__(self, counter: Counter, clock: Callable[[], float] = time.time) -> None:
        self._counter = counter
        self._clock = clock
        self._blocked: dict[str, int] = {}  # key → the window it is over its limit in
        self._swept = -1  # the last window this process swept older counters for

    def _window(self) -> tuple[int, float]:
        now = self._clock()
        return math.floor(now / WINDOW_S), now

    def _refusal(self, key: str, limit: int | None, now: float, win: int) -> RateLimited:
        retry = math.ceil((win + 1) * WINDOW_S - now)
        what = f"more than {limit} requests per minute" if limit else "too many requests"
        kind = key.split(":", 1)[0]
        return RateLimited(f"{what} ({_SCOPES.get(kind, kind)})", retry_after=retry)

    def refuse_blocked(self, *keys: str) -> None:
        """Raise ``RateLimited`` (not audited) if a key is known to be over its limit in the
        current window; no I/O."""
        win, now = self._window()
        for key in keys:
            if self._blocked.get(key) == win:
                err = self._refusal(key, None, now, win)
                err.audit = False
                raise err

    async def hit(self, limits: Mapping[str, int]) -> None:
        """Count one request against each ``key: per-minute limit``; raise ``RateLimited``
        if any key is now over its limit (``audit`` True only for the crossing request)."""
        self.refuse_blocked(*limits)
        win, now = self._window()
        sweep = win > self._swept
        counts = await self._counter.count_hits(list(limits), win, sweep)
        if sweep:
            self._swept = win
            self._blocked = {k: w for k, w in self._blocked.items() if w >= win}
        over = [key for key, limit in limits.items() if counts.get(key, 0) > limit]
        if not over:
            return
        for key in over:
            if len(self._blocked) < MAX_BLOCKED:
                self._blocked[key] = win
        key = over[0]
        err = self._refusal(key, limits[key], now, win)
        err.audit = any(counts.get(k, 0) == limits[k] + 1 for k in over)
        raise err


_SCOPES = {
    "addr": "from this address",
    "fail": "failed authentications from this address",
    "sub": "for this subject",
    "lic": "for this licence",
}

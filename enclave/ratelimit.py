"""Per-licence rate limit: a sliding one-minute window, in memory, per process.

With several replicas each enforces the limit on its own (documented in the README): the rate
limit protects the service, while the privacy budget, which protects people, is shared in the
store.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from enclave.errors import RateLimited

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str, per_minute: int) -> None:
        """Record one request for ``key`` or raise ``RateLimited`` with ``retry_after``."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - WINDOW_S:
            hits.popleft()
        if len(hits) >= per_minute:
            retry = math.ceil(hits[0] + WINDOW_S - now)
            raise RateLimited(f"more than {per_minute} requests per minute", retry_after=retry)
        hits.append(now)

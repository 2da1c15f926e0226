"""Rate-limit counters in the store (``count_hits``) and the limiter over them, on both
adapters: counts are exact across replicas, windows are separate, old windows are swept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.errors import RateLimited
from enclave.ratelimit import WINDOW_S, RateLimiter
from tests.store.conftest import Backend


async def test_hits_count_per_key_and_window(store: Any) -> None:
    assert await store.count_hits(["a", "b"], 100) == {"a": 1, "b": 1}
    assert await store.count_hits(["b", "a"], 100) == {"a": 2, "b": 2}
    assert await store.count_hits(["a"], 101) == {"a": 1}  # a new window starts at 1
    assert await store.count_hits(["a"], 100) == {"a": 3}


async def test_sweep_drops_older_windows(store: Any, backend: Backend) -> None:
    await store.count_hits(["a"], 100)
    await store.count_hits(["a"], 101)
    assert await store.count_hits(["b"], 102, sweep=True) == {"b": 1}
    rows = await backend.raw("SELECT key, win FROM rate_counters ORDER BY win")
    assert [tuple(r) for r in rows] == [("b", 102)]


async def test_replicas_share_one_exact_count(backend: Backend) -> None:
    stores = [backend.make() for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        hits = [s.count_hits(["sub:x", "addr:y"], 7) for s in stores for _ in range(20)]
        results = await asyncio.gather(*hits)
        assert sorted(r["sub:x"] for r in results) == list(range(1, 61))
        assert sorted(r["addr:y"] for r in results) == list(range(1, 61))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_limiter_refuses_over_the_limit_and_audits_only_the_crossing(store: Any) -> None:
    clock = WallClock(1_000 * WINDOW_S + 10)
    limiter = RateLimiter(store, clock=clock)
    for _ in range(3):
        await limiter.hit({"sub:x": 3})
    with pytest.raises(RateLimited) as first:
        await limiter.hit({"sub:x": 3})
    assert first.value.audit and first.value.retry_after == 50
    with pytest.raises(RateLimited) as second:  # from memory: no store hit, not audited
        await limiter.hit({"sub:x": 3})
    assert not second.value.audit
    assert await store.count_hits(["sub:x"], 1_000) == {"sub:x": 5}  # 4 counted + this one
    clock.now += WINDOW_S  # a new window: allowed again
    await limiter.hit({"sub:x": 3})


async def test_two_limiters_on_one_store_share_the_limit(backend: Backend) -> None:
    stores = [backend.make() for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        clock = WallClock(2_000 * WINDOW_S + 1)
        limiters = [RateLimiter(s, clock=clock) for s in stores]
        outcomes = []
        for i in range(6):
            try:
                await limiters[i % 2].hit({"lic:1": 4})
                outcomes.append("ok")
            except RateLimited as err:
                outcomes.append("audited" if err.audit else "quiet")
        assert outcomes == ["ok", "ok", "ok", "ok", "audited", "quiet"]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_batch_counts_each_hit_once_in_order(store: Any) -> None:
    """Concurrent hits of one process share a transaction (group commit): the counts each
    caller gets are 1..n, in arrival order, across keys and windows, as if one by one."""
    calls = [store.count_hits(["k", f"own{i}"], 5) for i in range(30)]
    calls += [store.count_hits(["k"], 6), store.count_hits([], 5)]
    results = await asyncio.gather(*calls)
    assert store.counters.batches < len(calls)
    assert [r["k"] for r in results[:30]] == list(range(1, 31))
    assert all(r[f"own{i}"] == 1 for i, r in enumerate(results[:30]))
    assert results[30:] == [{"k": 1}, {}]

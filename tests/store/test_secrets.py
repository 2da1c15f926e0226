"""``shared_secret``: one value per name for every process on a store (first writer wins), so
replicas bound their datasets with the same truncation seed."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from tests.store.conftest import Backend


async def test_first_writer_wins_and_is_never_replaced(store: Any) -> None:
    first = secrets.token_bytes(32)
    assert await store.shared_secret("truncation", first) == first
    assert await store.shared_secret("truncation", secrets.token_bytes(32)) == first
    other = secrets.token_bytes(16)
    assert await store.shared_secret("another", other) == other
    assert [r async for r in store.audit_iter()] == []


async def test_replicas_agree_on_one_value(backend: Backend) -> None:
    stores = [backend.make() for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        proposals = [secrets.token_bytes(32) for _ in stores]
        got = await asyncio.gather(
            *(s.shared_secret("truncation", p) for s, p in zip(stores, proposals, strict=True))
        )
        assert len(set(got)) == 1 and got[0] in proposals
    finally:
        await asyncio.gather(*(s.close() for s in stores))

"""Seeding policy from files, atomically: several replicas starting at once on an empty store
must leave exactly version 1 of every policy (never a version 2 made by a second seeder)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.store.conftest import Backend, draft

ITEMS: list[tuple[Any, str, dict[str, Any]]] = [
    ("tier", "open", {"name": "open", "budget": {"epsilon": 2.0}}),
    ("tier", "standard", {"name": "standard", "budget": {"epsilon": 5.0}}),
    ("dataset", "visits", {"name": "visits", "privacy_unit": "person_id"}),
]


async def test_seeds_only_an_empty_store(store: Any) -> None:
    assert await store.seed_policies(ITEMS, "policy-files") is True
    assert await store.seed_policies(ITEMS, "policy-files") is False
    tiers = await store.list_policies("tier")
    assert [(t.name, t.version, t.actor) for t in tiers] == [
        ("open", 1, "policy-files"),
        ("standard", 1, "policy-files"),
    ]
    assert tiers[1].body == {"name": "standard", "budget": {"epsilon": 5.0}, "version": 1}
    assert (await store.get_policy("dataset", "visits")).version == 1
    assert [r async for r in store.audit_iter()] == []  # seeding is not an audited change


async def test_a_store_with_any_policy_is_not_seeded(store: Any) -> None:
    await store.put_policy("tier", "custom", {"name": "custom"}, "admin", draft("tier.update"))
    assert await store.seed_policies(ITEMS, "policy-files") is False
    assert [t.name for t in await store.list_policies("tier")] == ["custom"]
    assert await store.list_policies("dataset") == []


async def test_replicas_seeding_at_once_seed_once(backend: Backend) -> None:
    stores = [backend.make() for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        seeded = await asyncio.gather(*(s.seed_policies(ITEMS, "policy-files") for s in stores))
        assert sorted(seeded) == [False] * 5 + [True]
        for kind, name, _ in ITEMS:
            history = await stores[0].policy_history(kind, name)
            assert [v.version for v in history] == [1]
    finally:
        await asyncio.gather(*(s.close() for s in stores))

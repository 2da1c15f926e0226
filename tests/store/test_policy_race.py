"""The lost-update guard holds under a race: the version check runs inside the write
transaction, so of ten concurrent writes naming the same version exactly one lands, on both
adapters (and across two store instances, as two replicas would be)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.errors import Conflict
from tests.store.conftest import Backend, draft


async def test_ten_concurrent_puts_with_one_version_one_wins(store: Any, backend: Backend) -> None:
    await store.put_policy("tier", "standard", {"name": "standard"}, "seed", None)
    other = backend.make()  # a second process on the same database
    await other.open()
    try:
        writers = [store if i % 2 else other for i in range(10)]
        results = await asyncio.gather(
            *(
                w.put_policy(
                    "tier", "standard", {"name": "standard", "n": i}, f"admin{i}",
                    draft("tier.update", actor=f"admin{i}"), expected_version=1,
                )
                for i, w in enumerate(writers)
            ),
            return_exceptions=True,
        )  # fmt: skip
    finally:
        await other.close()
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(e, Conflict) for e in lost), results
    history = await store.policy_history("tier", "standard")
    assert [p.version for p in history] == [1, 2]
    assert history[1].body["n"] == won[0][0].body["n"]
    # only the winner's change was audited: a refused write leaves no record behind
    records = [r async for r in store.audit_iter()]
    assert [r.actor for r in records] == [won[0][1].actor]


async def test_expected_version_zero_means_the_name_must_not_exist(store: Any) -> None:
    results = await asyncio.gather(
        *(
            store.put_policy(
                "dataset", "fresh", {"name": "fresh"}, "root", draft(), expected_version=0
            )
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    with pytest.raises(Conflict):
        await store.put_policy("dataset", "fresh", {"name": "fresh"}, "root", draft(), 0)
    # no expected version: written regardless
    stored, _ = await store.put_policy("dataset", "fresh", {"name": "fresh"}, "root", draft())
    assert stored.version == 2

"""The budget ledger and the release cache: exact arithmetic, no overspend under concurrency,
periods, and a cache that survives a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.errors import BudgetExhausted
from enclave.ledger.budget import period_window
from enclave.ledger.charge import CacheEntry
from enclave.ledger.grid import Amount
from tests.store.conftest import charge, draft, licence


async def test_ten_tenths_fit_one_and_the_eleventh_does_not(store: Any) -> None:
    for _ in range(10):
        await store.debit(draft(epsilon=0.1), charge("0.1", "1.0"))
    assert await store.spent("lic_1", "visits", None) == Amount.charge("1.0", 0)
    head = await store.audit_head()
    with pytest.raises(BudgetExhausted):
        await store.debit(
            draft(epsilon=0.1),
            charge("0.1", "1.0"),
            CacheEntry("lic_1", "k-refused", {"rows": [[1]]}),
        )
    # Nothing written on refusal: no record, no debit, no cache entry.
    assert await store.audit_head() == head
    assert await store.spent("lic_1", "visits", None) == Amount.charge("1.0", 0)
    assert await store.get_cached("lic_1", "k-refused") is None
    # Exactly: even the smallest further amount does not fit (no 28-digit rounding).
    with pytest.raises(BudgetExhausted):
        await store.debit(draft(), charge("1E-40", "1.0"))
    # Spending is per licence and dataset.
    await store.debit(draft(), charge("0.1", "1.0", dataset="labs"))
    await store.debit(draft(), charge("0.1", "1.0", licence_id="lic_2"))


async def test_delta_is_checked_exactly_too(store: Any) -> None:
    await store.debit(draft(), charge("0", "1", delta="0.0000005", limit_delta="0.000001"))
    await store.debit(draft(), charge("0", "1", delta="0.0000005", limit_delta="0.000001"))
    with pytest.raises(BudgetExhausted):
        await store.debit(draft(), charge("0", "1", delta="1E-12", limit_delta="0.000001"))
    assert await store.spent("lic_1", "visits", None) == Amount.charge(0, "0.000001")


async def test_concurrent_appends_never_overspend(store: Any) -> None:
    results = await asyncio.gather(
        *(store.debit(draft(epsilon=0.1), charge("0.1", "1.0")) for _ in range(50)),
        *(store.append(draft(action="query.estimate")) for _ in range(10)),
        return_exceptions=True,
    )
    ok = [r for r in results[:50] if not isinstance(r, BaseException)]
    refused = [r for r in results[:50] if isinstance(r, BudgetExhausted)]
    assert len(ok) == 10 and len(refused) == 40
    assert all(not isinstance(r, BaseException) for r in results[50:])
    assert await store.spent("lic_1", "visits", None) == Amount.charge("1.0")
    records = [r async for r in store.audit_iter()]
    assert [r.seq for r in records] == list(range(1, 21))
    assert verify(records).valid


async def test_two_store_instances_on_one_database_share_the_chain(backend: Any) -> None:
    """Two gateways (processes/replicas) on the same database: one chain, no overspend."""
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    try:
        results = await asyncio.gather(
            *(s.debit(draft(), charge("0.25", "1.0")) for s in [first, second] * 6),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 4
        assert all(isinstance(r, BudgetExhausted) for r in results if isinstance(r, Exception))
        records = [r async for r in first.audit_iter()]
        assert len(records) == 4 and verify(records).valid
    finally:
        await first.close()
        await second.close()


async def test_period_window_limits_what_counts(store: Any, backend: Any) -> None:
    valid_from = backend.clock.now - dt.timedelta(days=45)
    since, renews = period_window(valid_from, 30, backend.clock.now)
    assert since is not None and renews is not None
    assert since == valid_from + dt.timedelta(days=30)
    for _ in range(4):
        await store.debit(draft(), charge("0.25", "1.0", since=since))
    with pytest.raises(BudgetExhausted):
        await store.debit(draft(), charge("0.25", "1.0", since=since))
    assert await store.spent("lic_1", "visits", since) == Amount.charge("1.00", 0)
    # The next period starts empty; the lifetime total keeps counting.
    backend.clock.now = renews + dt.timedelta(seconds=1)
    since2, _ = period_window(valid_from, 30, backend.clock.now)
    assert since2 == renews
    assert await store.spent("lic_1", "visits", since2) == Amount.charge(0, 0)
    await store.debit(draft(), charge("0.25", "1.0", since=since2))
    assert await store.spent("lic_1", "visits", since2) == Amount.charge("0.25", 0)
    assert await store.spent("lic_1", "visits", None) == Amount.charge("1.25", 0)


async def test_cache_survives_a_restart(backend: Any) -> None:
    body = {"columns": ["region", "n"], "rows": [["north", 12.5], ["south", None]], "x": "é"}
    first = backend.make()
    await first.open()
    done = await first.debit(
        draft(epsilon=0.5), charge("0.5", "1.0"), CacheEntry("lic_1", "plan-1", body)
    )
    record = done.record
    assert done.spent == Amount.charge("0.5")  # the total after the charge, from the store
    # The first release under a key stays (a repeat must return the same answer).
    await first.debit(draft(), charge("0", "1.0"), CacheEntry("lic_1", "plan-1", {"rows": "x"}))
    await first.close()
    second = backend.make()
    await second.open()
    try:
        assert await second.get_cached("lic_1", "plan-1") == body
        assert await second.get_cached("lic_2", "plan-1") is None  # per licence
        assert await second.get_cached("lic_1", "plan-2") is None
        assert await second.audit_head() == (2, (await second.audit_events(_all(), 1, 1))[0].hash)
        assert (await second.audit_events(_all(), 0, 1))[0] == record
        assert await second.spent("lic_1", "visits", None) == Amount.charge("0.5", 0)
    finally:
        await second.close()


async def test_audit_summary(store: Any, backend: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create", actor="root", dataset=None))
    await store.debit(draft(epsilon=0.5), charge("0.5", "5"))
    await store.debit(draft(epsilon=0.25), charge("0.25", "5"))
    await store.append(draft(cached=True))
    await store.append(draft(outcome="denied", reason="tier"))
    await store.append(draft(actor="bob", dataset="labs", outcome="error"))
    rows = {(r.actor, r.dataset): r for r in await store.audit_summary()}
    alice = rows[("alice", "visits")]
    assert (alice.spent, alice.releases, alice.cache_hits, alice.refusals, alice.errors) == (
        Amount.charge("0.75"),
        2,
        1,
        1,
        0,
    )
    assert rows[("bob", "labs")].errors == 1 and rows[("bob", "labs")].spent == Amount()
    assert rows[("root", None)].releases == 0
    later = await store.audit_summary(since=backend.clock.now + dt.timedelta(seconds=1))
    assert later == []
    assert alice.to_json()["epsilon_spent"] == "0.75"


def _all() -> Any:
    from enclave.audit.log import AuditFilter

    return AuditFilter()


async def test_cached_totals_see_another_connections_charges(backend: Any) -> None:
    """SQLite keeps running totals per connection; another connection's commit (another
    process on the same file) must invalidate them, for reads and for the re-check."""
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    try:
        await first.debit(draft(), charge("0.4", "1.0"))
        assert await first.spent("lic_1", "visits", None) == Amount.charge("0.4", 0)
        await second.debit(draft(), charge("0.4", "1.0"))  # first's cached total is stale now
        assert await first.spent("lic_1", "visits", None) == Amount.charge("0.8", 0)
        with pytest.raises(BudgetExhausted):  # the re-check inside the write lock sees 0.8
            await first.debit(draft(), charge("0.3", "1.0"))
        await first.debit(draft(), charge("0.2", "1.0"))
        assert await second.spent("lic_1", "visits", None) == Amount.charge("1.0", 0)
        with pytest.raises(BudgetExhausted):
            await second.debit(draft(), charge("1E-30", "1.0"))
    finally:
        await first.close()
        await second.close()

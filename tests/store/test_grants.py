"""Budget grants on both stores: stored with their audit record in one transaction, re-checked
there, only ever raising a limit (so a stale read cannot overspend), copied with the store."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.audit.log import AuditFilter
from enclave.errors import AuditUnavailable, BadRequest, BudgetExhausted, Conflict, NotFound
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.licence_grants import LEDGER_BOUND, Grant, granted, licence_limit
from enclave.models import Tier
from tests.store.conftest import Backend, charge, draft, licence

TIER = Tier(
    name="standard",
    description="",
    aggregates=frozenset({"count"}),
    max_epsilon_per_query=Decimal("1"),
    budget_epsilon=Decimal("1.0"),
    budget_delta=Decimal("0.000001"),
)


def grant(eps: str = "0.5", dataset: str = "visits", licence_id: str = "lic_1") -> Grant:
    return Grant(licence_id, dataset, Amount.limit(eps), "extension for chapter 3", "stella")


def admin_draft() -> Any:
    return draft("licence.grant", actor="stella", roles=("admin",), reason="extension")


async def test_a_grant_is_stored_with_its_record_and_raises_the_limit(store: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    before = await licence_limit(store, licence(), TIER, "visits", None)
    assert before == Amount.limit("1.0", "0.000001")
    record = await store.add_grant(grant("0.5"), LEDGER_BOUND, admin_draft())
    assert record.action == "licence.grant" and record.licence_id == "lic_1"
    (stored,) = await store.grants("lic_1")
    assert stored.audit_seq == record.seq and stored.created_at == record.ts
    assert stored.amount == Amount.limit("0.5") and stored.actor == "stella"
    after = await licence_limit(store, licence(), TIER, "visits", None)
    assert after == Amount.limit("1.5", "0.000001")
    # another dataset of the licence keeps the tier's budget
    assert await licence_limit(store, licence(), TIER, "labs", None) == before
    events = [r async for r in store.audit_iter()]
    assert verify(events).valid


async def test_the_transaction_re_checks_licence_dataset_and_ceiling(store: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    head = await store.audit_head()
    with pytest.raises(NotFound):
        await store.add_grant(grant(licence_id="lic_none"), LEDGER_BOUND, admin_draft())
    with pytest.raises(BadRequest, match="does not cover"):
        await store.add_grant(grant(dataset="labs"), LEDGER_BOUND, admin_draft())
    with pytest.raises(BadRequest, match="bounds"):
        await store.add_grant(grant("2"), Amount.limit("1.5"), admin_draft())
    await store.update_licence("lic_1", {"status": "revoked"}, draft("licence.update"))
    head = await store.audit_head()
    with pytest.raises(Conflict):
        await store.add_grant(grant(), LEDGER_BOUND, admin_draft())
    assert await store.audit_head() == head
    assert await store.grants("lic_1") == []


async def test_no_grant_without_its_audit_record(backend: Backend, store: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    await backend.break_audit()
    with pytest.raises(AuditUnavailable):
        await store.add_grant(grant(), LEDGER_BOUND, admin_draft())
    await backend.repair_audit()
    assert await store.grants("lic_1") == []


async def test_stale_grant_reads_never_overspend(store: Any) -> None:
    """Queries read the limit (tier + grants) before their debit, grants land in between: the
    spend never passes the true limit, and once the grants are read they can all be spent."""
    await store.insert_licence(licence(), draft("licence.create"))

    async def query() -> None:
        limit = await licence_limit(store, licence(), TIER, "visits", None)
        await asyncio.sleep(0)  # let a grant commit between the read and the debit
        await store.debit(draft(), Charge("lic_1", "visits", Amount.charge("0.1"), limit, None))

    grants = [store.add_grant(grant("0.5"), LEDGER_BOUND, admin_draft()) for _ in range(2)]
    results = await asyncio.gather(
        *(query() for _ in range(5)), *grants, *(query() for _ in range(35)),
        return_exceptions=True,
    )  # fmt: skip
    queries = results[:5] + results[7:]
    assert all(r is None or isinstance(r, BudgetExhausted) for r in queries), results
    assert any(isinstance(r, BudgetExhausted) for r in queries)
    spent = await store.spent("lic_1", "visits", None)
    final = await licence_limit(store, licence(), TIER, "visits", None)
    assert final == Amount.limit("2.0", "0.000001")
    assert spent.within(final)
    while True:  # the rest of the raised limit is usable
        try:
            await query()
        except BudgetExhausted:
            break
    assert await store.spent("lic_1", "visits", None) == Amount.limit("2.0")


async def test_grants_count_within_the_budget_period(store: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    await store.add_grant(grant("0.5"), LEDGER_BOUND, admin_draft())
    (g,) = await store.grants("lic_1")
    given = dt.datetime.fromisoformat(g.created_at.replace("Z", "+00:00"))
    assert granted([g], "visits", given) == Amount.limit("0.5")
    assert granted([g], "visits", given + dt.timedelta(seconds=1)) == Amount()


async def test_grants_travel_with_store_copy(backend: Backend, store: Any, tmp_path: Any) -> None:
    from enclave.store_copy import copy_store

    await store.insert_licence(licence(), draft("licence.create"))
    await store.add_grant(grant("0.25"), LEDGER_BOUND, admin_draft())
    await store.debit(draft(), charge("0.1", "1.25"))
    await store.close()
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    report = await copy_store(backend.url, target)
    assert report.ok and report.counts["licence_grants"] == 1
    from enclave.store import open_store

    copied = open_store(target)
    await copied.open()
    try:
        assert await copied.grants("lic_1") == await _reopened(backend)
        events = await copied.audit_events(AuditFilter(action="licence.grant"))
        assert len(events) == 1
    finally:
        await copied.close()
    await store.open()


async def _reopened(backend: Backend) -> list[Grant]:
    s = backend.make()
    await s.open()
    try:
        return list(await s.grants("lic_1"))
    finally:
        await s.close()

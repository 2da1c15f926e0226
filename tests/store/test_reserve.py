"""Budget reservations (``store/reserve.py``), on every store: a reservation holds its cost
on every layer until the debit turns it into the ledger charge, others' reservations count
in both checks, a stale one expires by the store's clock, and concurrent reservations from
several connections never overspend a shared layer."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Charge, Layer
from enclave.ledger.grid import Amount
from enclave.store import reserve
from tests.spend import layer_spent
from tests.store.conftest import Backend, draft

DATASET = Layer("dataset", Amount.charge("1.0"), None)


def shared(licence_id: str, eps: str = "0.4", dataset: str = "visits") -> Charge:
    """A charge of ``licence_id`` (its own licence budget 5) on a dataset layer of 1.0."""
    return Charge(
        licence_id=licence_id,
        dataset=dataset,
        cost=Amount.charge(eps),
        limit=Amount.charge("5"),
        since=None,
        layers=(DATASET,),
        subject=f"s-{licence_id}",
        organization=f"o-{licence_id}",
    )


async def held_rows(backend: Backend) -> list[tuple[Any, ...]]:
    return await backend.raw("SELECT id, licence_id, epsilon_units FROM reservations ORDER BY id")


async def test_a_reservation_holds_its_cost_against_other_reservations(store: Any) -> None:
    first = await store.reserve(shared("a"), 30)
    second = await store.reserve(shared("b"), 30)
    assert first.reservation and second.reservation and first.reservation != second.reservation
    with pytest.raises(BudgetExhausted) as refused:  # 0.4 + 0.4 held: 0.4 more passes 1.0
        await store.reserve(shared("c"), 30)
    assert refused.value.layer == "dataset"
    await store.reserve(shared("c", "0.2"), 30)  # exactly what is left
    # another dataset's layer is not touched by these
    await store.reserve(shared("d", dataset="other"), 30)


async def test_the_debit_turns_the_reservation_into_the_charge(
    store: Any, backend: Backend
) -> None:
    mine = await store.reserve(shared("a", "0.6"), 30)
    await store.reserve(shared("b", "0.4"), 30)  # the layer is now fully held
    debited = await store.debit(draft(licence_id="a"), mine)
    assert debited.layers[1] == Amount.charge("0.6")  # the dataset's ledger spend after it
    assert [row[1] for row in await held_rows(backend)] == ["b"]  # its reservation is gone
    assert await layer_spent(store, "dataset", "visits", "visits", None) == Amount.charge("0.6")
    with pytest.raises(BudgetExhausted):  # b's 0.4 is still held: nothing more fits
        await store.reserve(shared("c", "0.1"), 30)


async def test_a_debit_without_a_reservation_counts_the_others(
    store: Any, backend: Backend
) -> None:
    await store.reserve(shared("a", "0.7"), 30)
    with pytest.raises(BudgetExhausted):  # 0.7 held, 0.4 more would pass 1.0: nothing written
        await store.debit(draft(licence_id="b"), shared("b"))
    assert await layer_spent(store, "dataset", "visits", "visits", None) == Amount()
    await store.debit(draft(licence_id="b"), shared("b", "0.3"))  # what is left fits


async def test_a_synthetic_charge_below_its_reservation_releases_the_rest(store: Any) -> None:
    held = await store.reserve(shared("a", "0.8"), 30)
    await store.debit(draft(licence_id="a"), replace(held, cost=Amount.charge("0.5")))
    await store.reserve(shared("b", "0.5"), 30)  # the 0.3 not charged is free again


async def test_a_stale_reservation_expires_by_the_store_clock(store: Any, backend: Backend) -> None:
    stale = await store.reserve(shared("a", "0.9"), 30)  # a process that died mid-query
    with pytest.raises(BudgetExhausted):
        await store.reserve(shared("b"), 30)
    backend.clock.advance(seconds=30 + reserve.MARGIN_S - 1)
    with pytest.raises(BudgetExhausted):  # still live one second before its expiry
        await store.reserve(shared("b"), 30)
    backend.clock.advance(seconds=2)
    fresh = await store.reserve(shared("b"), 30)  # expired: no longer counted, and swept
    assert [row[1] for row in await held_rows(backend)] == ["b"]
    # the stale query's debit, should it come after all, is re-checked like an unreserved one
    with pytest.raises(BudgetExhausted):
        await store.debit(draft(licence_id="a"), stale)
    await store.debit(draft(licence_id="b"), fresh)
    assert await layer_spent(store, "dataset", "visits", "visits", None) == Amount.charge("0.4")


async def test_a_reservation_id_given_again_replaces_the_earlier_one(
    store: Any, backend: Backend
) -> None:
    """A job's next attempt (same id) replaces what an interrupted attempt held."""
    await store.reserve(shared("a", "0.9"), 30, "res_job_1")
    again = await store.reserve(shared("a", "0.9"), 30, "res_job_1")  # not 1.8 held
    assert again.reservation == "res_job_1"
    assert len(await held_rows(backend)) == 1


async def test_concurrent_reservations_from_many_connections_never_overspend(
    backend: Backend,
) -> None:
    """Four store instances (four connections; replicas on PostgreSQL) race 40 charges of
    0.1 on a dataset layer of 1.0, reservations and unreserved debits mixed: exactly ten
    succeed, and what is held plus what is spent is the limit, never more."""
    stores = [backend.make() for _ in range(4)]
    for s in stores:
        await s.open()
    try:

        async def one(i: int) -> bool:
            store, charge = stores[i % 4], shared(f"lic{i}", "0.1")
            try:
                if i % 3:
                    await store.reserve(charge, 30)
                else:
                    await store.debit(draft(licence_id=charge.licence_id), charge)
            except BudgetExhausted:
                return False
            return True

        done = await asyncio.gather(*(one(i) for i in range(40)))
        assert sum(done) == 10
        spent = await layer_spent(stores[0], "dataset", "visits", "visits", None)
        held = sum(int(row[2]) for row in await held_rows(backend))
        assert spent.epsilon + held == Amount.charge("1.0").epsilon
    finally:
        for s in stores:
            await s.close()

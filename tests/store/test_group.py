"""Group commit (``store/group.py``), on both stores: concurrent appends and debits share
transactions, and each still gets exactly what it would have got alone.

- many concurrent appends are committed in fewer transactions than records, in arrival
  order, with one linear chain that verifies;
- concurrent debits on one shared layer: exactly as many fit as the budget allows, whether
  they land in one batch or several (each entry is checked against the earlier entries of its
  own batch), and the ledger never passes the limit;
- a refused entry is refused alone; a failed transaction fails every entry of its batch, and
  commits none of them;
- a store closed with entries queued commits them first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.errors import AuditUnavailable, BudgetExhausted
from enclave.ledger.charge import Charge, Layer
from enclave.ledger.grid import Amount
from enclave.store.group import GroupCommit
from tests.spend import layer_spent
from tests.store.conftest import Backend, draft

N = 64


async def test_concurrent_appends_share_transactions_in_arrival_order(store: Any) -> None:
    records = await asyncio.gather(*(store.append(draft(sql=f"SELECT {i}")) for i in range(N)))
    assert [r.seq for r in records] == list(range(1, N + 1))
    assert [r.sql for r in records] == [f"SELECT {i}" for i in range(N)]
    assert store.appends.batches < N  # some shared a transaction
    assert store.appends.entries == N
    stored = [r async for r in store.audit_iter()]
    assert stored == records
    assert verify(stored).valid


def shared(licence_id: str) -> Charge:
    """0.1 on a dataset layer of 1.0 shared by every licence (room for exactly 10)."""
    return Charge(
        licence_id=licence_id,
        dataset="visits",
        cost=Amount.charge("0.1"),
        limit=Amount.limit("5", "0.000001"),
        since=None,
        layers=(Layer("dataset", Amount.limit("1.0", "0.000001"), None),),
        subject=f"s_{licence_id}",
        organization="Uni",
    )


async def _settle(calls: list[Any]) -> tuple[list[Any], list[BaseException]]:
    done = await asyncio.gather(*calls, return_exceptions=True)
    return [d for d in done if not isinstance(d, BaseException)], [
        d for d in done if isinstance(d, BaseException)
    ]


async def test_a_shared_layer_is_never_overspent_within_a_batch(store: Any) -> None:
    ok, refused = await _settle([store.debit(draft(), shared(f"lic_{i}")) for i in range(N)])
    assert store.appends.batches < N
    assert len(ok) == 10
    assert len(refused) == N - 10
    assert all(isinstance(e, BudgetExhausted) and e.layer == "dataset" for e in refused)
    assert (await layer_spent(store, "dataset", "visits", "visits", None)).epsilon == (
        Amount.charge("0.1").epsilon * 10
    )
    # The spent totals the winners saw are the running ones, in chain order.
    by_seq = sorted(ok, key=lambda d: d.record.seq)
    assert [d.layers[1].epsilon for d in by_seq] == [
        Amount.charge("0.1").epsilon * k for k in range(1, 11)
    ]
    stored = [r async for r in store.audit_iter()]
    assert len(stored) == 10 and verify(stored).valid


async def test_a_refused_entry_does_not_stop_its_batch(store: Any) -> None:
    poor = Charge("lic_poor", "visits", Amount.charge("2"), Amount.limit("1", "0.000001"), None)
    calls = [store.append(draft(sql="SELECT 1")), store.debit(draft(), poor)]
    calls += [store.debit(draft(), shared(f"lic_{i}")) for i in range(3)]
    ok, refused = await _settle(calls)
    assert len(ok) == 4
    assert [type(e) for e in refused] == [BudgetExhausted]
    assert (await store.audit_head())[0] == 4


async def test_a_failed_transaction_fails_its_whole_batch(backend: Backend, store: Any) -> None:
    await store.append(draft(sql="SELECT 0"))
    await backend.break_audit()
    ok, failed = await _settle([store.debit(draft(), shared(f"lic_{i}")) for i in range(N // 2)])
    assert ok == []
    assert len(failed) == N // 2
    assert all(isinstance(e, AuditUnavailable) for e in failed)
    await backend.repair_audit()
    assert (await store.audit_head())[0] == 1  # nothing of the failed batches was committed
    assert (await layer_spent(store, "dataset", "visits", "visits", None)) == Amount()
    record = await store.append(draft(sql="SELECT 1"))
    assert record.seq == 2


async def test_close_commits_what_is_queued(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    pending = [asyncio.create_task(store.append(draft(sql=f"SELECT {i}"))) for i in range(8)]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    assert all(t.done() and not t.cancelled() for t in pending)
    reopened = backend.make()
    await reopened.open()
    try:
        assert (await reopened.audit_head())[0] == 8
    finally:
        await reopened.close()


async def test_batches_are_bounded_and_in_order() -> None:
    seen: list[list[int]] = []

    async def commit(entries: Any) -> list[int]:
        seen.append(list(entries))
        await asyncio.sleep(0)
        return [e * 10 for e in entries]

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=4)
    results = await asyncio.gather(*(group.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert [e for batch in seen for e in batch] == list(range(10))
    assert max(len(b) for b in seen) <= 4


async def test_a_lone_entry_is_committed_at_once() -> None:
    async def commit(entries: Any) -> list[int]:
        return list(entries)

    group: GroupCommit[int, int] = GroupCommit(commit)
    assert await asyncio.wait_for(group.submit(7), timeout=1) == 7
    assert group.batches == 1


@pytest.mark.parametrize("failure", [RuntimeError("boom"), AuditUnavailable("down")])
async def test_every_waiter_gets_the_batch_failure(failure: Exception) -> None:
    async def commit(entries: Any) -> list[int]:
        raise failure

    group: GroupCommit[int, int] = GroupCommit(commit)
    done = await asyncio.gather(*(group.submit(i) for i in range(5)), return_exceptions=True)
    assert all(d is failure for d in done)


async def test_a_reserved_charge_fits_wherever_it_stands_in_its_batch(store: Any) -> None:
    """Ten reservations fill the dataset layer; an unreserved charge queued *first* in the
    same batch must not take what the others hold: it is refused, and every reserved charge
    (whose data, in the gateway, has been read) is debited."""
    reserved = [await store.reserve(shared(f"lic_{i}"), timeout_s=60) for i in range(10)]
    calls = [store.debit(draft(), shared("lic_late"))]
    calls += [store.debit(draft(), charge) for charge in reserved]
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert store.appends.batches < len(calls)  # they shared a transaction
    assert isinstance(done[0], BudgetExhausted) and done[0].layer == "dataset"
    assert not any(isinstance(d, BaseException) for d in done[1:])
    spent = await layer_spent(store, "dataset", "visits", "visits", None)
    assert spent.epsilon == Amount.charge("0.1").epsilon * 10


async def test_concurrent_reservations_share_transactions_and_never_overcommit(
    store: Any,
) -> None:
    """Reservations are group-committed too: twenty at once, room for ten on the dataset
    layer; each is checked against the batch's earlier ones, so exactly ten hold."""
    done = await asyncio.gather(
        *(store.reserve(shared(f"lic_{i}"), timeout_s=60) for i in range(20)),
        return_exceptions=True,
    )
    assert store.reservations.batches < 20
    held = [d for d in done if isinstance(d, Charge)]
    assert len(held) == 10 and len({c.reservation for c in held}) == 10
    assert all(isinstance(d, BudgetExhausted) and d.layer == "dataset" for d in done[10:])
    debited = await asyncio.gather(*(store.debit(draft(), c) for c in held))
    assert len(debited) == 10
    assert (await layer_spent(store, "dataset", "visits", "visits", None)).epsilon == (
        Amount.charge("0.1").epsilon * 10
    )


async def test_sqlite_reads_share_hops_and_keep_their_own_errors(tmp_path: Any) -> None:
    """SQLite reads that arrive together run in one hop to the store's thread, each alone:
    every caller gets its own rows, and a failing read fails only its own caller."""
    import sqlite3

    from enclave.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "enclave.db"))
    await store.open()
    try:
        await store.append(draft(sql="SELECT 1"))

        async def bad(tx: Any) -> Any:
            return await tx.fetch("SELECT no_such_column FROM audit")

        driver = store.driver
        calls = [driver.read(lambda tx, i=i: tx.fetchrow("SELECT ?", i)) for i in range(20)]
        calls.insert(7, driver.read(bad))
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert driver._reads.batches < len(calls)
        assert isinstance(done[7], sqlite3.OperationalError)
        rest = done[:7] + done[8:]
        assert [tuple(r)[0] for r in rest] == list(range(20))  # type: ignore[arg-type]
        assert (await store.audit_head())[0] == 1  # and the store reads on
    finally:
        await store.close()

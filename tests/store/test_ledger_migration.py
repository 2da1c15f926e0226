"""Migration 3 on a store created with the old schema (ledger amounts as Decimal text in
SQLite, NUMERIC in PostgreSQL): rows become integer grid units, rounded up; a licence that
the old ledger had bricked (a charge of 1e-250) works again; nothing is lost."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.errors import BudgetExhausted
from enclave.ledger.grid import MAX_EPSILON_UNITS, Amount
from enclave.store import schema
from tests.store.conftest import charge, draft

OLD_COLUMNS = "(licence_id, dataset, epsilon, delta, ts, audit_seq)"
OLD_ROWS = [  # (licence, epsilon, delta) as the old code stored them
    ("lic_ok", "0.1", "0"),
    ("lic_ok", "0.25", "5E-7"),
    ("lic_bricked", "0.1", "0"),
    ("lic_bricked", "1E-250", "0"),  # the old ledger could no longer sum this licence
    ("lic_bricked", "0.0000001", "1E-20"),  # below one unit: rounds up to one
    ("lic_huge", "1E+400", "0"),  # beyond any budget: stays beyond it
]


async def _old_store(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create the schema as it was at version 2, with ledger rows in the old form."""
    name = "SQLITE" if backend.name == "sqlite" else "POSTGRES"
    with monkeypatch.context() as m:
        m.setattr(schema, name, getattr(schema, name)[:2])
        old = backend.make()
        await old.open()
        try:
            assert await old.schema_version() == 2
            for licence_id, eps, delta in OLD_ROWS:
                record = await old.append(draft(licence_id=licence_id))
                values = (
                    f"'{licence_id}', 'visits', '{eps}', '{delta}', '{record.ts}', {record.seq}"
                )
                await backend.raw(f"INSERT INTO ledger {OLD_COLUMNS} VALUES ({values})")  # noqa: S608
        finally:
            await old.close()


async def test_old_ledger_rows_migrate_to_units_rounded_up(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _old_store(backend, monkeypatch)
    store = backend.make()
    await store.open()
    try:
        assert await store.schema_version() >= 3
        assert await store.spent("lic_ok", "visits", None) == Amount(350_000, 500_000_000)
        # 0.1 + one unit for 1e-250 + one unit for 1e-7; delta 1e-20 rounds up to one unit
        assert await store.spent("lic_bricked", "visits", None) == Amount(100_002, 1)
        assert await store.spent("lic_huge", "visits", None) == Amount(MAX_EPSILON_UNITS, 0)
        # The bricked licence answers and can spend again; the huge one is simply exhausted.
        done = await store.debit(draft(), charge("0.5", "1.0", licence_id="lic_bricked"))
        assert done.spent == Amount(600_002, 1)
        with pytest.raises(BudgetExhausted):
            await store.debit(draft(), charge("0.1", "1000000", licence_id="lic_huge"))
        summary = {(r.actor, r.dataset): r for r in await store.audit_summary()}
        assert summary[("alice", "visits")].spent == Amount(
            350_000 + 600_002 + MAX_EPSILON_UNITS, 500_000_001
        )
        assert verify([r async for r in store.audit_iter()]).valid
    finally:
        await store.close()
    columns = (
        "SELECT name FROM pragma_table_info('ledger')"
        if backend.name == "sqlite"
        else "SELECT column_name FROM information_schema.columns WHERE table_name = 'ledger'"
    )
    names = {r[0] for r in await backend.raw(columns)}
    assert {"epsilon_units", "delta_units"} <= names and not {"epsilon", "delta"} & names
    if backend.name == "sqlite":  # stored as integers, not text
        kinds = await backend.raw("SELECT DISTINCT typeof(epsilon_units) FROM ledger")
        assert kinds == [("integer",)]

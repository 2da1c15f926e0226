"""Property: whatever epsilons and deltas are charged (tiny, huge, off the grid), the store's
ledger agrees with a plain integer model, refuses exactly what would not fit, returns the new
total from the transaction, and every later read answers. A licence cannot be bricked."""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import BudgetExhausted
from enclave.ledger.grid import Amount
from enclave.store.sqlite import SqliteStore
from tests.store.conftest import charge, draft

AMOUNTS = st.one_of(
    st.decimals(min_value=0, max_value=3, places=8, allow_nan=False),
    st.sampled_from(["1e-199", "1e-250", "1e-320", "5e-324", "1e-1000", "0.1", "1e400"]).map(
        Decimal
    ),
)
STEPS = st.lists(st.tuples(AMOUNTS, AMOUNTS.map(lambda d: d / 10**6)), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, budget=st.sampled_from(["1", "5", "0.000001", "1000000"]))
def test_the_ledger_matches_an_integer_model(
    steps: list[tuple[Decimal, Decimal]], budget: str
) -> None:
    asyncio.run(_run(steps, budget))


async def _run(steps: list[tuple[Decimal, Decimal]], budget: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(str(Path(folder) / "enclave.db"))
        await store.open()
        try:
            model, limit = Amount(), Amount.limit(budget, "0.000001")
            for eps, delta in steps:
                cost = Amount.charge(eps, delta)
                assert cost.epsilon >= 0 and cost.delta >= 0
                assert cost.epsilon_decimal >= min(eps, Decimal(10**6))  # never rounded down
                fits = model.plus(cost).within(limit)
                try:
                    done = await store.debit(draft(), charge(str(eps), budget, str(delta), "1e-6"))
                except BudgetExhausted:
                    assert not fits
                else:
                    assert fits
                    model = model.plus(cost)
                    assert done.spent == model
                assert await store.spent("lic_1", "visits", None) == model
                assert model.within(limit)
            (row,) = await store.audit_summary() or [None]
            assert row is None or row.spent == model
        finally:
            await store.close()

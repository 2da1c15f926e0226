"""Property: however concurrent reservations and debits on shared layers fall into batches
(group commit), no layer's ledger passes its limit, every charge that holds its reservation
is debited, and the ledger is exactly the sum of the debits that succeeded.

Each example runs real transactions on a SQLite file: some charges reserve first (as queries
do before reading), then every charge, reserved or not, is debited at once, in a shuffled
order, so reserved and unreserved entries share batches in every arrangement.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.audit.chain import verify
from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Charge, Debited, Layer
from enclave.ledger.grid import Amount
from enclave.store.sqlite import SqliteStore
from tests.spend import layer_spent
from tests.store.conftest import draft

ORGS = ("Uni", "Lab")
#: one charge: (licence 0-3, organisation 0-1, cost in tenths, reserve first?)
CHARGES = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(1, 5), st.booleans()),
    min_size=1,
    max_size=24,
)


def make_charge(lic: int, org: int, tenths: int, dataset_limit: int, org_limit: int) -> Charge:
    return Charge(
        licence_id=f"lic_{lic}",
        dataset="visits",
        cost=Amount.charge(f"0.{tenths}"),
        limit=Amount.limit("1.5", "0.000001"),
        since=None,
        layers=(
            Layer("organisation", Amount.limit(f"0.{org_limit}", "0.000001"), None),
            Layer("dataset", Amount.limit(str(dataset_limit / 10), "0.000001"), None),
        ),
        subject=f"s_{lic}",
        organization=ORGS[org],
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    charges=CHARGES,
    dataset_limit=st.integers(3, 30),
    org_limit=st.integers(2, 9),
    order=st.randoms(use_true_random=False),
)
def test_batches_never_overspend_and_keep_every_reservation(
    charges: list[tuple[int, int, int, bool]], dataset_limit: int, org_limit: int, order: object
) -> None:
    asyncio.run(_run(charges, dataset_limit, org_limit, order))


async def _run(
    charges: list[tuple[int, int, int, bool]], dataset_limit: int, org_limit: int, order: object
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(str(Path(folder) / "enclave.db"))
        await store.open()
        try:
            made = [
                make_charge(lic, org, t, dataset_limit, org_limit) for lic, org, t, _ in charges
            ]
            wanted = [c for c, spec in zip(made, charges, strict=True) if spec[3]]
            held = await asyncio.gather(
                *(store.reserve(c, timeout_s=60) for c in wanted), return_exceptions=True
            )
            reserved = [h for h in held if isinstance(h, Charge)]
            assert all(isinstance(h, Charge | BudgetExhausted) for h in held)
            unreserved = [c for c, spec in zip(made, charges, strict=True) if not spec[3]]
            debits = [*reserved, *unreserved]
            order.shuffle(debits)  # type: ignore[attr-defined]
            done = await asyncio.gather(
                *(store.debit(draft(), c) for c in debits), return_exceptions=True
            )
            assert all(isinstance(d, Debited | BudgetExhausted) for d in done)
            ok = [c for c, d in zip(debits, done, strict=True) if isinstance(d, Debited)]
            # every charge that held its reservation was debited
            assert all(c in ok for c in reserved)
            # the ledger is exactly the successful debits, and no layer passes its limit
            for layer, key in [("dataset", "visits"), *(("organisation", o) for o in ORGS)]:
                spent = await layer_spent(store, layer, key, "visits", None)
                expected = sum(
                    c.cost.epsilon for c in ok if layer == "dataset" or c.organization == key
                )
                assert spent.epsilon == expected
                limit = dataset_limit if layer == "dataset" else org_limit
                assert spent.within(Amount.limit(str(limit / 10), "0.000001"))
            records = [r async for r in store.audit_iter()]
            assert len(records) == len(ok) and verify(records).valid
        finally:
            await store.close()

"""Migrations 3 and 8 of both stores: the ledger's Python steps.

Migration 3: ledger amounts from Decimal text/NUMERIC to integer grid units.

Before, the ledger kept each debit as an exact Decimal (TEXT in SQLite, NUMERIC in
PostgreSQL) and summed them in a bounded context, so one tiny charge (1e-250, say) made every
later sum of that licence raise. Now amounts are whole units of ``ledger/grid.py``, stored as
64-bit integers. Each old row is converted by ``grid.stored_units``: rounded *up* to the grid
(1e-250 becomes one unit), and a row too large for any budget, or unreadable, becomes the
largest amount, which exhausts any budget rather than freeing one. The conversion runs in
Python for both stores, so both apply the same rule; it pages by ``id`` and runs inside the
migration's one transaction (a crash leaves the schema at version 2, and it runs again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from enclave.ledger.grid import stored_units
from enclave.ledger.rule import Sums, add_row
from enclave.store.driver import Tx

PAGE = 5000


def converted(rows: Iterable[Any]) -> list[tuple[int, int, int]]:
    """``(epsilon_units, delta_units, id)`` for each old ``(id, epsilon, delta)`` row."""
    return [(*stored_units(eps, delta), int(row_id)) for row_id, eps, delta in rows]


async def convert_ledger(tx: Tx) -> None:
    after = 0
    while rows := await tx.fetch(
        "SELECT id, epsilon, delta FROM ledger WHERE id > ? ORDER BY id LIMIT ?", after, PAGE
    ):
        await tx.executemany(
            "UPDATE ledger SET epsilon_units = ?, delta_units = ? WHERE id = ?", converted(rows)
        )
        after = rows[-1][0]


async def fill_totals(tx: Tx) -> None:
    """Migration 8: ``ledger_totals`` from the ledger's rows, one total per budget layer key
    and dataset (``ledger/rule.add_row``), summed in Python (SQLite's ``SUM`` raises on
    overflow)."""
    from enclave.store.ledger import add_totals

    totals: Sums = {}
    after = 0
    while rows := await tx.fetch(
        "SELECT id, licence_id, subject, organization, dataset, epsilon_units, delta_units"
        " FROM ledger WHERE id > ? ORDER BY id LIMIT ?",
        after,
        PAGE,
    ):
        for row in rows:
            values = dict(
                zip(("licence_id", "subject", "organization", "dataset"), row[1:5], strict=True)
            )
            add_row(totals, values.get, int(row[5]), int(row[6]))
        after = rows[-1][0]
    for (layer, key, dataset), (eps, delta) in totals.items():
        await add_totals(tx, [(layer, key)], dataset, eps, delta)

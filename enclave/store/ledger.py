"""The budget ledger's totals, read the same on every database: a layer's spend on a dataset
since a period's start, exactly, in grid units.

Every debit (``chain.debit_batch``) adds its charge to the running lifetime total of each
layer key it names (``ledger_totals``, in the same transaction as its ledger row), so a
lifetime layer is one row to read however long the ledger; a period's spend is summed from its
rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from enclave.ledger.charge import LAYER_COLUMNS, LayerName
from enclave.ledger.grid import TOTAL_CAP, Amount
from enclave.ledger.rule import SpentKey
from enclave.models import iso
from enclave.store import codec
from enclave.store.driver import Tx

ADD_TOTAL_SQL = (
    "INSERT INTO ledger_totals (layer, key, dataset, epsilon_units, delta_units)"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (layer, key, dataset) DO UPDATE SET"
    f" epsilon_units = CASE WHEN ledger_totals.epsilon_units >= {TOTAL_CAP}"
    " THEN ledger_totals.epsilon_units"
    " ELSE ledger_totals.epsilon_units + excluded.epsilon_units END,"
    f" delta_units = CASE WHEN ledger_totals.delta_units >= {TOTAL_CAP}"
    " THEN ledger_totals.delta_units ELSE ledger_totals.delta_units + excluded.delta_units END"
)


def total_rows(
    keys: Sequence[tuple[str, str]], dataset: str, epsilon: int, delta: int
) -> list[tuple[str, str, str, int, int]]:
    """``ADD_TOTAL_SQL`` rows adding a charge to each ``(layer, key)`` total on ``dataset``."""
    return [(layer, key, dataset, min(epsilon, TOTAL_CAP), delta) for layer, key in keys]


async def add_totals(
    tx: Tx, keys: Sequence[tuple[str, str]], dataset: str, epsilon: int, delta: int
) -> None:
    """Add a charge to the lifetime total of each ``(layer, key)`` on ``dataset`` (in the
    debit's transaction, so the totals move with the ledger rows)."""
    await tx.executemany(ADD_TOTAL_SQL, total_rows(keys, dataset, epsilon, delta))


async def _period(tx: Tx, layer: LayerName, key: str, dataset: str, since: dt.datetime) -> Amount:
    """The spend on ``dataset`` since ``since`` of the ledger rows whose ``layer`` column is
    ``key``, summed exactly from the rows."""
    sql = f"{tx.dialect.ledger_sum} WHERE {LAYER_COLUMNS[layer]} = ? AND dataset = ?"
    return codec.sum_units(await tx.fetch(sql + " AND ts >= ?", key, dataset, iso(since)))


async def spent_many(tx: Tx, wanted: Collection[SpentKey]) -> dict[SpentKey, Amount]:
    """The spend of each ``(layer, key, dataset, since)`` of ``wanted``, exactly: a lifetime
    spend (``since`` None) is the running total in ``ledger_totals`` (all of them in one
    statement); a period's is summed from the ledger rows since its start."""
    found: dict[SpentKey, Amount] = {}
    lifetime = sorted({w[:3] for w in wanted if w[3] is None})
    for start in range(0, len(lifetime), 200):
        part = lifetime[start : start + 200]
        where = " OR ".join(["(layer = ? AND key = ? AND dataset = ?)"] * len(part))
        sql = f"SELECT layer, key, dataset, epsilon_units, delta_units FROM ledger_totals WHERE {where}"  # noqa: S608, E501
        rows = {tuple(r[:3]): r for r in await tx.fetch(sql, *(v for k in part for v in k))}
        for layer, key, dataset in part:
            row = rows.get((layer, key, dataset))
            found[(layer, key, dataset, None)] = (
                Amount() if row is None else Amount(int(row[3]), int(row[4]))
            )
    for layer, key, dataset, since in wanted:
        if since is not None:
            found[(layer, key, dataset, since)] = await _period(tx, layer, key, dataset, since)
    return found

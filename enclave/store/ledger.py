"""The budget ledger's totals, read the same on every database: a layer's spend on a dataset
since a period's start, exactly, in grid units.

Every debit (``chain.debit_batch``) adds its charge to the running lifetime total of each
layer key it names (``ledger_totals``, in the same transaction as its ledger row), so a
lifetime layer is one row to read however long the ledger; a period's spend is summed from its
rows. ``LedgerTotals`` saves even that read on SQLite, whose one connection can tell when
another process has committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import EXHAUSTED, LAYER_NAMES, Charge, LayerName
from enclave.ledger.grid import Amount
from enclave.models import iso
from enclave.store import codec
from enclave.store.driver import Tx

#: the ledger column each layer sums over (fixed names: safe in SQL text)
LAYER_COLUMNS: dict[LayerName, str] = {
    "licence": "licence_id",
    "subject": "subject",
    "organisation": "organization",
    "dataset": "dataset",
}


#: a running total stops growing here (far beyond any budget: 2**62 units), so adding one
#: more charge (at most 10**12 units) never overflows a 64-bit column
TOTAL_CAP = 2**62
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


async def spent(
    tx: Tx, layer: LayerName, key: str, dataset: str, since: dt.datetime | None
) -> Amount:
    """The spend on ``dataset`` since ``since`` of the ledger rows whose ``layer`` column is
    ``key``, exactly: a lifetime spend (``since`` None) is the running total in
    ``ledger_totals``, one row; a period's is summed from the rows since its start."""
    if since is None:
        row = await tx.fetchrow(
            "SELECT epsilon_units, delta_units FROM ledger_totals"
            " WHERE layer = ? AND key = ? AND dataset = ?",
            layer,
            key,
            dataset,
        )
        return Amount() if row is None else Amount(int(row[0]), int(row[1]))
    sql = f"{tx.dialect.ledger_sum} WHERE {LAYER_COLUMNS[layer]} = ? AND dataset = ?"
    return codec.sum_units(await tx.fetch(sql + " AND ts >= ?", key, dataset, iso(since)))


#: a spent total asked for: (layer, key, dataset, since)
SpentKey = tuple[LayerName, str, str, dt.datetime | None]


async def spent_many(tx: Tx, wanted: Iterable[SpentKey]) -> dict[SpentKey, Amount]:
    """``spent`` of each of ``wanted``: every lifetime total in one statement, each period's
    sum in its own."""
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
    for w in wanted:
        if w[3] is not None:
            found[w] = await spent(tx, *w)
    return found


class LedgerTotals:
    """Exact running lifetime totals per (layer, key, dataset), for a store with one
    connection and a ``Dialect.data_version`` (SQLite).

    A lifetime total is one row of ``ledger_totals`` (kept by every debit, on every
    database); this cache saves even that read. A total is first read from the table, then
    updated by each charge this connection commits (``committed``, run by the driver right
    after the commit), for every layer the charge names. ``data_version`` changes whenever
    *another* connection commits (another process, a restore), and then every cached total
    is dropped; inside a chained write the check is exact, so the budget re-check never
    reads a stale total. Budgets with a renewal period (``since`` given) are summed from the
    rows."""

    def __init__(self) -> None:
        self._version: Any = None
        self._totals: dict[tuple[LayerName, str, str], Amount] = {}

    async def spent(
        self, tx: Tx, layer: LayerName, key: str, dataset: str, since: dt.datetime | None
    ) -> Amount:
        return (await self.spent_many(tx, [(layer, key, dataset, since)]))[
            (layer, key, dataset, since)
        ]

    async def spent_many(self, tx: Tx, wanted: Iterable[SpentKey]) -> dict[SpentKey, Amount]:
        """``spent`` of each of ``wanted`` (one request's, or one batch's, layers)."""
        wanted = set(wanted)
        if not await self._usable(tx):
            return await spent_many(tx, wanted)
        cached = {w: self._totals.get(w[:3]) for w in wanted if w[3] is None}
        found = {w: amount for w, amount in cached.items() if amount is not None}
        missing = await spent_many(tx, wanted - found.keys())
        for w, amount in missing.items():
            if w[3] is None:
                self._totals[w[:3]] = amount
        return found | missing

    async def _usable(self, tx: Tx) -> bool:
        """Whether the cached totals may be used: the database has a ``data_version``, and
        no other connection has committed since they were read (else they are dropped)."""
        if tx.dialect.data_version is None:
            return False
        row = await tx.fetchrow(tx.dialect.data_version)
        version = row[0] if row is not None else None
        if version != self._version:
            self._totals.clear()
            self._version = version
        return True

    def committed(self, charge: Charge) -> None:
        """This connection committed ``charge``: add it to every cached total it counts in."""
        for layer in LAYER_NAMES:
            key = charge.key(layer)
            if key is None:
                continue
            cache_key = (layer, key, charge.dataset)
            found = self._totals.get(cache_key)
            if found is not None:
                self._totals[cache_key] = found.plus(charge.cost)

    def clear(self) -> None:
        self._totals.clear()
        self._version = None


def layer_keys(charges: Iterable[Charge]) -> set[SpentKey]:
    """Every spent total the budget rule (``fit``) reads for ``charges``."""
    return {
        (layer.name, key, charge.dataset, layer.since)
        for charge in charges
        for layer in charge.all_layers()
        if (key := charge.key(layer.name)) is not None
    }


#: what others hold (live budget reservations) on each layer of a charge (``reserve.py``)
Held = dict[LayerName, Amount]
#: a layer's ledger key: (layer, key, dataset)
Slot = tuple[LayerName, str, str]


def fit(
    charge: Charge,
    spent: dict[SpentKey, Amount],
    held: Held,
    added: dict[Slot, Amount] | None = None,
) -> list[Amount] | BudgetExhausted:
    """The budget rule, once, for the debit and the reservation: on every layer of
    ``charge``, spent + ``added`` (the earlier charges of the same batch) + what others hold +
    its cost must fit the limit. Returns each layer's spent total after the charge, or the
    refusal naming the first layer it would pass; ``added`` grows only if it fits."""
    after: list[Amount] = []
    slots: list[Slot] = []
    extra = {} if added is None else added
    for layer in charge.all_layers():
        key = charge.key(layer.name)
        if key is None:
            after.append(charge.cost)
            continue
        slot = (layer.name, key, charge.dataset)
        before = spent[(*slot, layer.since)].plus(extra.get(slot, Amount()))
        after.append(before.plus(charge.cost))
        if not after[-1].plus(held[layer.name]).within(layer.limit):
            return BudgetExhausted(EXHAUSTED[layer.name], layer.name)
        slots.append(slot)
    for slot in slots:
        extra[slot] = extra.get(slot, Amount()).plus(charge.cost)
    return after

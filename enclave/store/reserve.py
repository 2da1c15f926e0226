"""Budget reservations: what a query will spend is held before its data is read.

Why: once data is read, the outcome is charged (``charged.py``). A pre-check that holds
nothing lets concurrent queries sharing a budget layer (a licence, subject, organisation or
dataset: ``budget_layers.py``) all pass it; the debit after the engine run would then refuse
some of them, uncharged, after their data was read. So the last step before the engine is
``reserve``: one transaction that checks, for every layer of the charge,

    spent (the ledger) + live reservations of others + cost <= limit

and inserts the reservation (``reservations`` table, migration 9 of both stores: ``SCHEMA``).
A refusal there is the ordinary pre-read ``BudgetExhausted`` (403): nothing was read.

The debit (``ops.debit``, a release or a charged failure) starts with ``consume``: it deletes
the reservation in its own transaction, so the ledger row replaces it, and its layer re-check
counts every *other* live reservation (``consume`` returns them) but not its own.

The invariant, per layer: ledger spend + live reservations <= limit at every commit.

- ``reserve`` keeps it: it reads the layer's reservations, then its spend, and inserts only
  if the sum with its cost fits. Reservations of one layer key are serialized: SQLite has one
  write lock; PostgreSQL takes a transaction-scoped advisory lock per layer key
  (``Dialect.budget_lock``, keys in sorted order, so two reservations never deadlock) and
  does not need the chain lock. A debit converting a reservation moves an amount from the
  reservations to the ledger in one commit; reading the reservations *before* the spend
  (PostgreSQL's read committed sees each statement's own snapshot) counts it at least once,
  never zero times. No overspend of any layer, on any number of replicas.
- a debit with its live reservation leaves the sum unchanged (or lowers it: a synthetic
  release may cost less than it reserved), so its re-check cannot fail: it reads the exact
  spend under the chain lock and a subset of the others' reservations, and its own was
  counted when the others were admitted. It takes no budget lock.
- a debit without one (none was made, it expired, or it is smaller than the charge) adds to
  the sum: it takes the same budget locks before reading, under the chain lock (which a
  reservation never takes, so the lock order is always chain, then budget keys) and is
  refused if the charge no longer fits, as every debit was before reservations.

A reservation expires (``expires_at``: the query's time limit plus ``MARGIN_S``) and then stops
counting; expired rows are swept by the next reservation. Only a process that crashed, or a
request cancelled mid-query (the server stopping), leaves one behind, and neither released
anything under it; a query still running is interrupted at its time limit and charged. A job
reserves under an id of its own (``res_<job id>``), so its next attempt replaces what an
interrupted one left (that attempt's debit can no longer commit: it lost the job's claim).

Writes: a reservation is not audited and needs no chain lock, so it commits as
``Dialect.reserve_mode``: ``"volatile"`` on SQLite (lost only by an OS crash or power loss,
which ends every process on that host, and with it the query the reservation held budget
for), ``"rows"`` on PostgreSQL (the server can crash while a replica's query runs on, so the
reservation is durable). Either way a reservation is lost only together with its unreleased
query. The debit that consumes one is durable, and commits everything before it too.

Reservations are not shown in budget reads (``GET /v1/budget``, estimates, admin views):
they last seconds, and others' in-flight queries on a shared layer are not the caller's to see.
Cached repeats spend nothing and reserve nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import EXHAUSTED, Charge, LayerName
from enclave.ledger.grid import Amount
from enclave.models import iso
from enclave.store.driver import Tx

if TYPE_CHECKING:
    from enclave.store.ops import LedgerTotals

#: added to the query's time limit: the release, its padding and the debit's own waits
MARGIN_S = 120.0

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        licence_id TEXT NOT NULL,
        subject TEXT,
        organization TEXT,
        dataset TEXT NOT NULL,
        epsilon_units BIGINT NOT NULL,
        delta_units BIGINT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX reservations_dataset ON reservations (dataset, expires_at)",
    "CREATE INDEX reservations_expiry ON reservations (expires_at)",
)

#: the reservation column each layer matches (the dataset layer: every row of the dataset)
_COLUMN: dict[LayerName, int] = {"licence": 0, "subject": 1, "organisation": 2}

Held = dict[LayerName, Amount]


async def reserve(
    tx: Tx,
    charge: Charge,
    reservation_id: str,
    now: dt.datetime,
    expires: dt.datetime,
    totals: LedgerTotals,
) -> Charge:
    """Hold ``charge.cost`` on every layer of ``charge`` until ``expires``, or raise
    ``BudgetExhausted`` naming the first layer it would pass (nothing written). Returns the
    charge carrying the reservation, for the debit to consume. An earlier reservation with
    the same id is replaced (a job's new attempt: the last one's debit can no longer commit)."""
    # swept before any budget lock is held: a sweep waiting on a row a debit is deleting
    # then holds nothing that debit could be waiting for
    await tx.execute(
        "DELETE FROM reservations WHERE expires_at <= ? OR id = ?", iso(now), reservation_id
    )
    await lock(tx, [charge])
    held = await others(tx, charge, now)
    for layer in charge.all_layers():
        key = charge.key(layer.name)
        if key is None:
            continue
        spent = await totals.spent(tx, layer.name, key, charge.dataset, layer.since)
        if not spent.plus(held[layer.name]).plus(charge.cost).within(layer.limit):
            raise BudgetExhausted(EXHAUSTED[layer.name], layer.name)
    await tx.execute(
        "INSERT INTO reservations (id, licence_id, subject, organization, dataset,"
        " epsilon_units, delta_units, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        reservation_id,
        charge.licence_id,
        charge.subject,
        charge.organization,
        charge.dataset,
        charge.cost.epsilon,
        charge.cost.delta,
        iso(expires),
    )
    return replace(charge, reservation=reservation_id)


@dataclass(frozen=True)
class Taken:
    """What a batch of debits found of its reservations (``take``), and everyone else's."""

    #: per reservation id: the amount it held, if it was still live when taken
    live: dict[str, Amount]
    #: the other live reservations on the batch's datasets: (licence, subject, organisation,
    #: dataset, amount)
    others: list[tuple[str, str | None, str | None, str, Amount]]

    def covers(self, charge: Charge) -> bool:
        """Whether ``charge`` had a live reservation of at least its cost."""
        held = self.live.get(charge.reservation or "")
        return held is not None and charge.cost.within(held)


async def take(tx: Tx, charges: Sequence[Charge], now: dt.datetime) -> Taken:
    """The start of a batch of debits (``ops.debit_batch``): delete the charges'
    reservations (the ledger rows replace them), lock the budget keys of every charge that no
    live reservation covers (see the module docstring), and read the other live reservations
    on their datasets, for the re-check to count."""
    live: dict[str, Amount] = {}
    ids = sorted({c.reservation for c in charges if c.reservation is not None})
    for start in range(0, len(ids), 200):
        part = ids[start : start + 200]
        rows = await tx.fetch(
            f"DELETE FROM reservations WHERE id IN ({', '.join('?' * len(part))})"  # noqa: S608
            " RETURNING id, epsilon_units, delta_units, expires_at",
            *part,
        )
        live |= {str(r[0]): Amount(int(r[1]), int(r[2])) for r in rows if str(r[3]) > iso(now)}
    taken = Taken(live, [])
    await lock(tx, [c for c in charges if not taken.covers(c)])
    datasets = sorted({c.dataset for c in charges})
    if datasets:
        marks = ", ".join("?" * len(datasets))
        rows = await tx.fetch(
            "SELECT licence_id, subject, organization, dataset, epsilon_units, delta_units"  # noqa: S608
            f" FROM reservations WHERE dataset IN ({marks}) AND expires_at > ?",
            *datasets,
            iso(now),
        )
        taken.others.extend(
            (str(r[0]), r[1], r[2], str(r[3]), Amount(int(r[4]), int(r[5]))) for r in rows
        )
    return taken


async def lock(tx: Tx, charges: Sequence[Charge]) -> None:
    """Lock every budget key of ``charges`` (sorted: one order for every caller), where the
    database needs it (``Dialect.budget_lock``)."""
    if tx.dialect.budget_lock is None:
        return
    names = sorted(
        {
            f"{layer.name}/{charge.dataset}/{key}"
            for charge in charges
            for layer in charge.all_layers()
            if (key := charge.key(layer.name)) is not None
        }
    )
    for name in names:
        await tx.execute(tx.dialect.budget_lock, name)


async def others(tx: Tx, charge: Charge, now: dt.datetime) -> Held:
    """The live reservations on ``charge``'s dataset summed per layer of ``charge``."""
    rows = await tx.fetch(
        "SELECT licence_id, subject, organization, dataset, epsilon_units, delta_units"
        " FROM reservations WHERE dataset = ? AND expires_at > ?",
        charge.dataset,
        iso(now),
    )
    return held_on(
        charge, [(str(r[0]), r[1], r[2], str(r[3]), Amount(int(r[4]), int(r[5]))) for r in rows]
    )


def held_on(
    charge: Charge, rows: Sequence[tuple[str, str | None, str | None, str, Amount]]
) -> Held:
    """Reservations ``rows`` summed per layer of ``charge``: those on its dataset whose key
    matches the layer's (every one for the dataset layer)."""
    held: Held = {}
    for layer in charge.all_layers():
        key = charge.key(layer.name)
        column = _COLUMN.get(layer.name)
        total = Amount()
        for row in rows:
            if (
                key is not None
                and row[3] == charge.dataset
                and (column is None or row[column] == key)
            ):
                total = total.plus(row[4])
        held[layer.name] = total
    return held

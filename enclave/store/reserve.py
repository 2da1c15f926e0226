"""Budget reservations: what a query will spend is held before its data is read.

Why: once data is read, the outcome is charged (``charged.py``). A pre-check that holds
nothing lets concurrent queries sharing a budget layer (a licence, subject, organisation or
dataset: ``budget_layers.py``) all pass it; the debit after the engine run would then refuse
some of them, uncharged, after their data was read. So the last step before the engine is
``reserve_batch``: one transaction (for all the reservations that arrive together: group
commit, ``group.py``) that checks, for every layer of each charge, in order,

    spent (the ledger) + live reservations of others (the batch's earlier ones too) + cost
        <= limit

and inserts the reservations (``reservations`` table, migration 9 of both stores: ``SCHEMA``).
A refusal there is the ordinary pre-read ``BudgetExhausted`` (403): nothing was read.

The debit (``chain.debit_batch``, a release or a charged failure) starts with ``take``: it
deletes the batch's reservations in its own transaction, so the ledger rows replace them, and
each layer re-check counts every *other* live reservation (``take`` reads them; the batch's
own count until their entry is checked) but not the entry's own.

The invariant, per layer: ledger spend + live reservations <= limit at every commit.

- ``reserve_batch`` keeps it: it reads the layer's reservations, then its spend, and inserts
  only if the sum with its cost (and the batch's earlier reservations) fits. Reservations
  of one layer key are serialized: SQLite has one write lock; PostgreSQL takes a
  transaction-scoped advisory lock per layer key
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
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Charge, LayerName
from enclave.ledger.grid import Amount
from enclave.models import iso
from enclave.store.driver import Tx, marks
from enclave.store.ledger import Held, LedgerTotals, fit, layer_keys

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


@dataclass(frozen=True)
class Hold:
    """A reservation to make: ``charge``'s cost, under ``reservation_id``, until ``expires``."""

    charge: Charge
    reservation_id: str
    expires: dt.datetime


async def reserve_batch(
    tx: Tx, holds: Sequence[Hold], now: dt.datetime, totals: LedgerTotals
) -> list[Charge | BudgetExhausted]:
    """Hold each charge's cost on every layer of it until its ``expires``, in order, each
    checked against the ledger, the other live reservations *and the batch's earlier ones*:
    the charge carrying its reservation (for the debit to take), or the refusal naming the
    first layer it would pass (nothing written for it). One transaction for the batch
    (``SqlStore.reserve`` group-commits them, as appends are: ``group.py``). An earlier
    reservation with the same id is replaced (a job's new attempt: the last one's debit can no
    longer commit)."""
    ids = sorted({h.reservation_id for h in holds})
    # swept before any budget lock is held: a sweep waiting on a row a debit is deleting
    # then holds nothing that debit could be waiting for
    await tx.execute(
        f"DELETE FROM reservations WHERE expires_at <= ? OR id IN ({marks(len(ids))})",  # noqa: S608
        iso(now),
        *ids,
    )
    await lock(tx, [h.charge for h in holds])
    rows = await live(tx, {h.charge.dataset for h in holds}, now)
    spent = await totals.spent_many(tx, layer_keys(h.charge for h in holds))
    kept: dict[str, Hold] = {}
    out: list[Charge | BudgetExhausted] = []
    for hold in holds:
        charge = hold.charge
        held = held_on(charge, [*rows, *(_row(h) for h in kept.values())])
        refusal = fit(charge, spent, held)
        if isinstance(refusal, BudgetExhausted):
            out.append(refusal)
            continue
        kept.pop(hold.reservation_id, None)  # a later attempt under one id replaces it
        kept[hold.reservation_id] = hold
        out.append(replace(charge, reservation=hold.reservation_id))
    if kept:
        await tx.executemany(
            "INSERT INTO reservations (id, licence_id, subject, organization, dataset,"
            " epsilon_units, delta_units, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (rid, *_row(h)[:4], h.charge.cost.epsilon, h.charge.cost.delta, iso(h.expires))
                for rid, h in kept.items()
            ],
        )
    return out


#: a live reservation as ``held_on`` reads it: (licence, subject, organisation, dataset, amount)
Reserved = tuple[str, str | None, str | None, str, Amount]


def _row(hold: Hold) -> Reserved:
    c = hold.charge
    return (c.licence_id, c.subject, c.organization, c.dataset, c.cost)


async def live(tx: Tx, datasets: set[str], now: dt.datetime) -> list[Reserved]:
    """The live reservations on ``datasets``."""
    if not datasets:
        return []
    ordered = sorted(datasets)
    rows = await tx.fetch(
        "SELECT licence_id, subject, organization, dataset, epsilon_units, delta_units"  # noqa: S608
        f" FROM reservations WHERE dataset IN ({marks(len(ordered))}) AND expires_at > ?",
        *ordered,
        iso(now),
    )
    return [(str(r[0]), r[1], r[2], str(r[3]), Amount(int(r[4]), int(r[5]))) for r in rows]


@dataclass(frozen=True)
class Taken:
    """What a batch of debits found of its reservations (``take``), and everyone else's."""

    #: per reservation id: the amount it held, if it was still live when taken
    live: dict[str, Amount]
    #: the other live reservations on the batch's datasets: (licence, subject, organisation,
    #: dataset, amount)
    others: list[Reserved]

    def covers(self, charge: Charge) -> bool:
        """Whether ``charge`` had a live reservation of at least its cost."""
        held = self.live.get(charge.reservation or "")
        return held is not None and charge.cost.within(held)


async def take(tx: Tx, charges: Sequence[Charge], now: dt.datetime) -> Taken:
    """The start of a batch of debits (``chain.debit_batch``): delete the charges'
    reservations (the ledger rows replace them), lock the budget keys of every charge that no
    live reservation covers (see the module docstring), and read the other live reservations
    on their datasets, for the re-check to count."""
    found: dict[str, Amount] = {}
    ids = sorted({c.reservation for c in charges if c.reservation is not None})
    if ids:
        rows = await tx.fetch(
            f"DELETE FROM reservations WHERE id IN ({marks(len(ids))})"  # noqa: S608
            " RETURNING id, epsilon_units, delta_units, expires_at",
            *ids,
        )
        found = {str(r[0]): Amount(int(r[1]), int(r[2])) for r in rows if str(r[3]) > iso(now)}
    taken = Taken(found, [])
    await lock(tx, [c for c in charges if not taken.covers(c)])
    taken.others.extend(await live(tx, {c.dataset for c in charges}, now))
    return taken


async def lock(tx: Tx, charges: Sequence[Charge]) -> None:
    """Lock every budget key of ``charges``, where the database needs it
    (``Dialect.budget_lock``), in one statement. Each key is a 64-bit lock id (BLAKE2b of
    ``layer/dataset/key``), taken in ascending order: one total order of the locks
    themselves for every caller, so two transactions never wait on each other in a cycle."""
    if tx.dialect.budget_lock is None:
        return
    ids = sorted(
        {
            lock_id(f"{layer.name}/{charge.dataset}/{key}")
            for charge in charges
            for layer in charge.all_layers()
            if (key := charge.key(layer.name)) is not None
        }
    )
    if ids:
        await tx.execute(tx.dialect.budget_lock, ids)


def lock_id(name: str) -> int:
    """A budget key's advisory lock id: a signed 64-bit digest of its name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"enclave-budget").digest()
    return int.from_bytes(digest, "big", signed=True)


def held_on(charge: Charge, rows: Sequence[Reserved]) -> Held:
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

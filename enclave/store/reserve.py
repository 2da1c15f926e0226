"""Budget reservations: what a query will spend is held before its data is read
(``docs/store-design.md``, "Budget reservations", says why and measures the cost).

The invariant, per budget layer: ledger spend + live reservations <= limit at every commit.

- ``reserve_batch`` keeps it: for each charge of the batch, in order, it reads the layer's
  live reservations (the batch's earlier ones too), then its spend, and inserts only if the
  sum with the cost fits; otherwise the ordinary pre-read ``BudgetExhausted``. Reservations
  of one layer key are serialized: SQLite's one write lock, PostgreSQL's advisory lock per
  key (``lock``: sorted 64-bit ids, so two never deadlock), no chain lock. Reading the
  reservations *before* the spend counts a debit converting one at least once.
- a debit holding its live reservation (``take`` deletes it in the debit's transaction, and
  the ledger row replaces it) leaves the sum unchanged or lower, so its re-check cannot fail.
- a debit without one (none made, expired, or smaller than the charge) takes the same key
  locks under the chain lock (always chain, then keys) and is refused if it no longer fits.

A reservation expires after the query's time limit plus ``MARGIN_S``; expired rows are swept
by the next reservation. A job reserves under ``res_<job id>``, so its next attempt replaces
what an interrupted one held. A reservation commits as ``Dialect.reserve_mode``: lost only
together with the unreleased query it held budget for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.ledger.rule import Reserved, fit, held_on, layer_keys, reserved
from enclave.models import iso
from enclave.store.driver import Tx, marks
from enclave.store.ledger import spent_many

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


@dataclass(frozen=True)
class Hold:
    """A reservation to make: ``charge``'s cost, under ``reservation_id``, until ``expires``."""

    charge: Charge
    reservation_id: str
    expires: dt.datetime


async def reserve_batch(
    tx: Tx, now: dt.datetime, holds: Sequence[Hold]
) -> list[Charge | BudgetExhausted]:
    """Hold each charge's cost on every layer of it until its ``expires``, in order, each
    checked against the ledger, the other live reservations *and the batch's earlier ones*:
    the charge carrying its reservation (for the debit to take), or the refusal naming the
    first layer it would pass (nothing written for it). One transaction for the batch
    (``Store.reserve`` group-commits them, as appends are: ``group.py``). An earlier
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
    spent = await spent_many(tx, layer_keys(h.charge for h in holds))
    kept: dict[str, Hold] = {}
    out: list[Charge | BudgetExhausted] = []
    for hold in holds:
        charge = hold.charge
        held = held_on(charge, [*rows, *(reserved(h.charge) for h in kept.values())])
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
            [_insert_row(rid, hold) for rid, hold in kept.items()],
        )
    return out


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


def _insert_row(rid: str, hold: Hold) -> tuple[object, ...]:
    cost = hold.charge.cost
    return (rid, *reserved(hold.charge)[:4], cost.epsilon, cost.delta, iso(hold.expires))

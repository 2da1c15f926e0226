"""Appending to the audit chain, with the charges and releases that go with it: one record or a
whole batch, written once for every database.

Call these only inside a chained write (``Driver.write(work, "chain")``: SQLite ``BEGIN
IMMEDIATE``, PostgreSQL the ``chain_head`` row lock), so the head read here is the real head:
one linear chain whatever the number of processes and replicas. ``debit_batch`` is the query
path's transaction, for every record that arrives together (``group.py``): it takes the
batch's budget reservations (``reserve.py``), re-checks every budget layer of every charge,
appends the records in order, and writes the ledger rows, lifetime totals and cached releases,
one multi-row statement per table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enclave.audit.chain import build_record, next_ts
from enclave.audit.record import FIELDS, GENESIS_HASH, AuditDraft, AuditRecord
from enclave.audit.rows import record_values
from enclave.errors import BudgetExhausted
from enclave.jobs.job import JobOp
from enclave.ledger.charge import LAYER_NAMES, CacheEntry, Charge, Debited
from enclave.ledger.grid import Amount
from enclave.ledger.rule import Slot, fit, held_on, layer_keys, reserved
from enclave.store import codec, jobs, reserve
from enclave.store.driver import Tx, marks
from enclave.store.ledger import ADD_TOTAL_SQL, spent_many, total_rows

AUDIT_COLUMNS = ", ".join(FIELDS)


@dataclass(frozen=True)
class Entry:
    """One record for the chain: an audited event, with its charge (re-checked, then written
    to the ledger) and the release to keep for the cache if it is a charged one."""

    draft: AuditDraft
    charge: Charge | None = None
    cache: CacheEntry | None = None


async def head(tx: Tx) -> tuple[int, str, str | None]:
    """(seq, hash, ts) of the last record; (0, genesis, None) when empty."""
    row = await tx.fetchrow("SELECT seq, hash, ts FROM audit ORDER BY seq DESC LIMIT 1")
    if row is None:
        return 0, GENESIS_HASH, None
    return int(row[0]), str(row[1]), str(row[2])


async def append_locked(tx: Tx, draft: AuditDraft, now: dt.datetime) -> AuditRecord:
    """Append ``draft`` as the next record. Call only inside a chained write."""
    return (await append_records(tx, [draft], now))[0]


async def append_records(
    tx: Tx, drafts: Sequence[AuditDraft], now: dt.datetime
) -> list[AuditRecord]:
    """Append ``drafts`` in order as the next records, in one multi-row insert. Call only
    inside a chained write: the head read here is then the real head."""
    seq, prev_hash, head_ts = await head(tx)
    records: list[AuditRecord] = []
    for draft in drafts:
        record = build_record(draft, seq + 1, next_ts(now, head_ts), prev_hash)
        records.append(record)
        seq, prev_hash, head_ts = record.seq, record.hash, record.ts
    if records:
        await tx.executemany(
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({marks(len(FIELDS))})",  # noqa: S608
            [record_values(r) for r in records],
        )
        if tx.dialect.after_append is not None:
            await tx.execute(tx.dialect.after_append, seq)
    return records


async def debit(
    tx: Tx,
    now: dt.datetime,
    draft: AuditDraft,
    charge: Charge,
    cache: CacheEntry | None,
    job: JobOp | None = None,
) -> Debited:
    """``debit_batch`` of one charged record; ``job``: a job's own change, applied first
    (``JobLost``, nothing written, if it matches no row). Raises ``BudgetExhausted``."""
    if job is not None:
        await jobs.apply(tx, job)
    [done] = await debit_batch(tx, now, [Entry(draft, charge, cache)])
    if isinstance(done, BudgetExhausted):
        raise done
    return done


async def debit_batch(
    tx: Tx, now: dt.datetime, entries: Sequence[Entry]
) -> list[Debited | BudgetExhausted]:
    """Re-check every budget layer of every charged entry, append the records in order,
    debit the ledger, store the releases: one transaction for the whole batch.

    The layers are read under the chain's lock, once per batch, and each entry is checked
    against them *plus the charges of the entries before it in the batch*: so two charges on
    a shared layer (two licences of one organisation, two subjects of one dataset), in one
    batch or in two, are serialized, and the later one is refused (``BudgetExhausted`` in its
    place, nothing written for it) if both together would pass the limit. The lifetime totals
    (``ledger_totals``) move in the same transaction as the ledger rows. Every write is one
    multi-row statement for the whole batch, whatever its size. An entry without a charge is
    a plain record (``Debited`` with nothing spent).

    Budget reservations (``reserve.py``): the batch's own are deleted first (``reserve.take``;
    their ledger rows replace them), and each entry's check also counts every other live
    reservation, including those of the batch's entries not checked yet, so a charge that
    holds its live reservation always fits, wherever it stands in the batch."""
    charges = [e.charge for e in entries if e.charge is not None]
    taken = await reserve.take(tx, charges, now)  # reservations out, the others' counted
    spent_before = await spent_many(tx, layer_keys(charges))
    added: dict[Slot, Amount] = {}
    # the batch's own reservations, until their entry is checked (then its charge counts)
    pending = {
        i: (*reserved(c)[:4], taken.live[c.reservation])
        for i, e in enumerate(entries)
        if (c := e.charge) is not None and c.reservation is not None and taken.covers(c)
    }
    outcomes: list[list[Amount] | BudgetExhausted] = []
    for i, entry in enumerate(entries):
        pending.pop(i, None)
        if entry.charge is None:
            outcomes.append([])
            continue
        held = held_on(entry.charge, [*taken.others, *pending.values()])
        outcomes.append(fit(entry.charge, spent_before, held, added))
    fits = [(i, o) for i, o in enumerate(outcomes) if not isinstance(o, BudgetExhausted)]
    records = await append_records(tx, [entries[i].draft for i, _ in fits], now)
    debited = {
        i: Debited(record, after[0] if after else Amount(), tuple(after))
        for (i, after), record in zip(fits, records, strict=True)
    }
    await _write_charges(tx, [(entries[i], debited[i].record) for i, _ in fits])
    return [o if isinstance(o, BudgetExhausted) else debited[i] for i, o in enumerate(outcomes)]


INSERT_LEDGER = (
    "INSERT INTO ledger (licence_id, dataset, epsilon_units, delta_units, ts, audit_seq,"
    " subject, organization) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The first release under a key stays: a repeat must return the same answer.
INSERT_CACHE = (
    "INSERT INTO release_cache (licence_id, cache_key, body, created_at, audit_seq)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (licence_id, cache_key) DO NOTHING"
)


async def _write_charges(tx: Tx, written: Sequence[tuple[Entry, AuditRecord]]) -> None:
    """The ledger rows, lifetime totals and cached releases of the charged entries, each
    kind in one multi-row statement."""
    totals: list[Sequence[Any]] = []
    ledger: list[Sequence[Any]] = []
    cache: list[Sequence[Any]] = []
    for entry, record in written:
        charge = entry.charge
        if charge is None:
            continue
        eps, delta = charge.cost.epsilon, charge.cost.delta
        keys = [(name, key) for name in LAYER_NAMES if (key := charge.key(name)) is not None]
        totals.extend(total_rows(keys, charge.dataset, eps, delta))
        ledger.append(
            (charge.licence_id, charge.dataset, eps, delta, record.ts, record.seq)
            + (charge.subject, charge.organization)
        )
        if entry.cache is not None:
            body = codec.dumps(entry.cache.release)
            cache.append(
                (entry.cache.licence_id, entry.cache.cache_key, body, record.ts, record.seq)
            )
    for sql, rows in ((ADD_TOTAL_SQL, totals), (INSERT_LEDGER, ledger), (INSERT_CACHE, cache)):
        if rows:
            await tx.executemany(sql, rows)

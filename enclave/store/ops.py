"""Every transaction of the store, written once for every database.

Each function takes a ``driver.Tx`` and runs inside the transaction ``sql_store.SqlStore``
opened for it (``Driver.write`` or ``Driver.read``); SQL uses ``?`` placeholders and takes
what differs between databases from ``tx.dialect``. Rows are read by position.

The rules, and why they hold on every database:

- every audited write calls ``append_locked`` inside a chained write (``write(work, "chain")``:
  SQLite ``BEGIN IMMEDIATE``, PostgreSQL the ``chain_head`` row lock), so the chain head
  read there is the real head: one linear chain whatever the number of processes;
- ``reserve.reserve_batch`` holds a query's cost on every budget layer before its data is read
  (budget-key locks, not the chain lock; ``reserve.py`` says why that suffices);
- ``debit`` consumes that reservation and re-checks every budget layer (licence, subject,
  organisation, dataset, counting others' reservations) under the chain lock, then writes
  the record, the ledger row and the release cache together: no overspend of any layer,
  however many licences or replicas share it, and no release without its record;
- the licence overlap check and the policy version bump also run under the lock, so two
  admins cannot both win.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from enclave.audit.chain import build_record, next_ts
from enclave.audit.log import AuditFilter, SummaryKey, SummaryRow, summary_rows
from enclave.audit.record import FIELDS, GENESIS_HASH, AuditDraft, AuditRecord
from enclave.audit.rows import record_from_row, record_values
from enclave.errors import BudgetExhausted, Conflict, NotFound
from enclave.jobs.job import JobOp
from enclave.ledger.charge import EXHAUSTED, LAYER_NAMES, CacheEntry, Charge, Debited, LayerName
from enclave.ledger.grid import Amount
from enclave.licences import apply_changes, check_no_overlap
from enclave.models import Licence, iso
from enclave.policy.version import PolicyKind, PolicyVersion, next_policy_version
from enclave.store import codec, jobs, reserve
from enclave.store.driver import Migrations, Row, Tx

AUDIT_COLUMNS = ", ".join(FIELDS)
LICENCE_COLUMNS = ", ".join(codec.LICENCE_COLUMNS)


@dataclass(frozen=True)
class Entry:
    """One record for the chain: an audited event, with its charge (re-checked, then written
    to the ledger) and the release to keep for the cache if it is a charged one."""

    draft: AuditDraft
    charge: Charge | None = None
    cache: CacheEntry | None = None


def marks(count: int) -> str:
    return ", ".join("?" * count)


async def migrate(tx: Tx, migrations: Migrations) -> int:
    """Apply the migrations after the highest one recorded in ``schema_version``."""
    if tx.dialect.migration_lock is not None:
        await tx.execute(tx.dialect.migration_lock)
    await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = await schema_version(tx)
    for version, steps in migrations:
        if version <= current:
            continue
        for step in steps:
            if isinstance(step, str):
                await tx.execute(step)
            else:
                await step(tx)
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", version)
        current = version
    return current


async def schema_version(tx: Tx) -> int:
    rows = await tx.fetch("SELECT MAX(version) FROM schema_version")
    return int(rows[0][0] or 0)


# --- the audit chain -----------------------------------------------------------------------


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
    draft: AuditDraft,
    charge: Charge,
    cache: CacheEntry | None,
    now: dt.datetime,
    totals: LedgerTotals,
    job: JobOp | None = None,
) -> Debited:
    """``debit_batch`` of one charged record; ``job``: a job's own change, applied first
    (``JobLost``, nothing written, if it matches no row). Raises ``BudgetExhausted``."""
    if job is not None:
        await jobs.apply(tx, job)
    [done] = await debit_batch(tx, [Entry(draft, charge, cache)], now, totals)
    if isinstance(done, BudgetExhausted):
        raise done
    return done


async def debit_batch(
    tx: Tx, entries: Sequence[Entry], now: dt.datetime, totals: LedgerTotals
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
    wanted = {
        (layer.name, key, e.charge.dataset, layer.since)
        for e in entries
        if e.charge is not None
        for layer in e.charge.all_layers()
        if (key := e.charge.key(layer.name)) is not None
    }
    charges = [e.charge for e in entries if e.charge is not None]
    taken = await reserve.take(tx, charges, now)  # reservations out, the others' counted
    spent_before = await totals.spent_many(tx, wanted)
    added: dict[tuple[LayerName, str, str], Amount] = {}
    # the batch's own reservations, until their entry is checked (then its charge counts)
    pending = {
        i: (c.licence_id, c.subject, c.organization, c.dataset, taken.live[c.reservation])
        for i, e in enumerate(entries)
        if (c := e.charge) is not None and c.reservation is not None and taken.covers(c)
    }
    outcomes: list[list[Amount] | BudgetExhausted] = []
    for i, entry in enumerate(entries):
        pending.pop(i, None)
        if entry.charge is None:
            outcomes.append([])
            continue
        held = reserve.held_on(entry.charge, [*taken.others, *pending.values()])
        outcomes.append(_fit(entry.charge, spent_before, added, held))
    fits = [(i, o) for i, o in enumerate(outcomes) if not isinstance(o, BudgetExhausted)]
    records = await append_records(tx, [entries[i].draft for i, _ in fits], now)
    debited = {
        i: Debited(record, after[0] if after else Amount(), tuple(after))
        for (i, after), record in zip(fits, records, strict=True)
    }
    await _write_charges(tx, [(entries[i], debited[i].record) for i, _ in fits])
    return [o if isinstance(o, BudgetExhausted) else debited[i] for i, o in enumerate(outcomes)]


def _fit(
    charge: Charge,
    spent_before: dict[SpentKey, Amount],
    added: dict[tuple[LayerName, str, str], Amount],
    held: reserve.Held,
) -> list[Amount] | BudgetExhausted:
    """Each layer's spent total after ``charge``, or the refusal of the first layer it would
    exceed counting ``held`` (others' live reservations); ``added`` (the batch's earlier
    charges per layer key) grows only if it fits."""
    after: list[Amount] = []
    keys: list[tuple[LayerName, str, str]] = []
    for layer in charge.all_layers():
        key = charge.key(layer.name)
        if key is None:
            after.append(charge.cost)
            continue
        slot = (layer.name, key, charge.dataset)
        before = spent_before[(*slot, layer.since)].plus(added.get(slot, Amount()))
        after.append(before.plus(charge.cost))
        if not after[-1].plus(held[layer.name]).within(layer.limit):
            return BudgetExhausted(EXHAUSTED[layer.name], layer.name)
        keys.append(slot)
    for slot in keys:
        added[slot] = added.get(slot, Amount()).plus(charge.cost)
    return after


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


def _where(flt: AuditFilter, prefix: str = "") -> tuple[str, list[Any]]:
    """The filter as a WHERE condition on the audit table (alias ``prefix``)."""
    where, args = ["1 = 1"], []
    for column in ("actor", "dataset", "action", "outcome", "licence_id"):
        value = getattr(flt, column)
        if value is not None:
            where.append(f"{prefix}{column} = ?")
            args.append(value)
    for op, bound in ((">=", flt.since), ("<", flt.until)):
        if bound is not None:
            where.append(f"{prefix}ts {op} ?")
            args.append(iso(bound))
    return " AND ".join(where), args


async def audit_events(tx: Tx, flt: AuditFilter, after_seq: int, limit: int) -> list[AuditRecord]:
    where, args = _where(flt)
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ? AND {where} ORDER BY seq LIMIT ?"  # noqa: S608
    return [record_from_row(r) for r in await tx.fetch(sql, after_seq, *args, max(0, limit))]


async def audit_rows(tx: Tx, start: int, end: int) -> list[Row]:
    """Raw rows (``FIELDS`` order) with seq in ``[start, end]``, for ``audit/rows.py``."""
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= ? AND seq <= ? ORDER BY seq"  # noqa: S608
    return await tx.fetch(sql, start, end)


async def audit_summary(
    tx: Tx, since: dt.datetime | None, until: dt.datetime | None
) -> list[SummaryRow]:
    """Counts per (actor, dataset) from the audit table, exact spend from the ledger."""
    released = "action = 'query' AND outcome = 'ok' AND"
    where, args = _where(AuditFilter(since=since, until=until))
    fresh, repeat = f"{released} NOT cached", f"{released} cached"
    sql = (
        f"SELECT actor, dataset, SUM(CASE WHEN {fresh} THEN 1 ELSE 0 END),"  # noqa: S608
        f" SUM(CASE WHEN {repeat} THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN outcome = 'denied' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END)"
        f" FROM audit WHERE {where} GROUP BY actor, dataset"
    )
    counts: dict[SummaryKey, list[int]] = {}
    for row in await tx.fetch(sql, *args):
        counts[(row[0], row[1])] = [int(n or 0) for n in row[2:6]]
    where, args = _where(AuditFilter(since=since, until=until), "l.")
    sql = (
        "SELECT a.actor, l.dataset, l.epsilon_units, l.delta_units FROM ledger l"  # noqa: S608
        f" JOIN audit a ON a.seq = l.audit_seq WHERE {where}"
    )
    spend: dict[SummaryKey, Amount] = {}
    for actor, dataset, eps, delta in await tx.fetch(sql, *args):
        key = (actor, dataset)
        spend[key] = spend.get(key, Amount()).plus(Amount(int(eps), int(delta)))
    return summary_rows(counts, spend)


# --- ledger and cache ----------------------------------------------------------------------


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


async def get_cached(tx: Tx, licence_id: str, cache_key: str) -> dict[str, Any] | None:
    row = await tx.fetchrow(
        "SELECT body FROM release_cache WHERE licence_id = ? AND cache_key = ?",
        licence_id,
        cache_key,
    )
    return None if row is None else dict(json.loads(row[0]))


# --- licences and revocations --------------------------------------------------------------


async def licences(tx: Tx, where: str, *args: Any) -> list[Licence]:
    """Licences matching ``where`` (a fixed clause with ``?`` placeholders)."""
    rows = await tx.fetch(f"SELECT {LICENCE_COLUMNS} FROM licences {where}", *args)  # noqa: S608
    return [codec.licence_from_row(r) for r in rows]


async def get_licence(tx: Tx, licence_id: str) -> Licence | None:
    found = await licences(tx, "WHERE id = ?", licence_id)
    return found[0] if found else None


async def list_licences(tx: Tx, subject: str | None) -> list[Licence]:
    if subject is None:
        return await licences(tx, "ORDER BY created_at, id")
    return await licences(tx, "WHERE subject = ? ORDER BY created_at, id", subject)


async def licences_for(tx: Tx, subject: str) -> list[Licence]:
    return await licences(tx, "WHERE subject = ? ORDER BY created_at DESC, id DESC", subject)


async def insert_licence(tx: Tx, lic: Licence, draft: AuditDraft, now: dt.datetime) -> AuditRecord:
    lic = replace(lic, created_at=lic.created_at or now, updated_at=lic.updated_at or now)
    check_no_overlap(lic, await licences_for(tx, lic.subject))
    if await get_licence(tx, lic.id) is not None:
        raise Conflict("a licence with this id exists")
    await tx.execute(
        f"INSERT INTO licences ({LICENCE_COLUMNS})"  # noqa: S608
        f" VALUES ({marks(len(codec.LICENCE_COLUMNS))})",
        *codec.licence_values(lic),
    )
    return await append_locked(tx, codec.with_licence(draft, lic.id), now)


async def insert_licences(
    tx: Tx, items: Sequence[tuple[Licence, AuditDraft]], now: dt.datetime
) -> list[AuditRecord]:
    """A bulk import: every licence in one transaction, checked against the earlier ones."""
    return [await insert_licence(tx, lic, draft, now) for lic, draft in items]


async def update_licence(
    tx: Tx, licence_id: str, changes: dict[str, Any], draft: AuditDraft, now: dt.datetime
) -> tuple[Licence, AuditRecord]:
    current = await get_licence(tx, licence_id)
    if current is None:
        raise NotFound("no such licence")
    updated = apply_changes(current, changes, now)
    check_no_overlap(updated, await licences_for(tx, updated.subject))
    assignments = ", ".join(f"{c} = ?" for c in codec.LICENCE_COLUMNS[1:])
    await tx.execute(
        f"UPDATE licences SET {assignments} WHERE id = ?",  # noqa: S608
        *codec.licence_values(updated)[1:],
        licence_id,
    )
    record = await append_locked(tx, codec.with_licence(draft, licence_id), now)
    return updated, record


async def add_revocation(
    tx: Tx, jti: str, reason: str, draft: AuditDraft, now: dt.datetime
) -> AuditRecord:
    record = await append_locked(tx, draft, now)
    # Revoking twice is not an error: the token stays refused, both requests are audited.
    await tx.execute(
        "INSERT INTO revocations (jti, reason, created_at, audit_seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (jti) DO NOTHING",
        jti,
        reason,
        record.ts,
        record.seq,
    )
    return record


async def is_revoked(tx: Tx, jti: str) -> bool:
    return await tx.fetchrow("SELECT 1 FROM revocations WHERE jti = ?", jti) is not None


# --- policies ------------------------------------------------------------------------------

INSERT_POLICY = (
    "INSERT INTO policies (kind, name, version, body, created_at, actor, audit_seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


async def put_policy(
    tx: Tx,
    kind: PolicyKind,
    name: str,
    body: dict[str, Any],
    actor: str,
    draft: AuditDraft | None,
    now: dt.datetime,
    expected: int | None,
) -> tuple[PolicyVersion, AuditRecord | None]:
    rows = await tx.fetch(
        "SELECT MAX(version) FROM policies WHERE kind = ? AND name = ?", kind, name
    )
    version = next_policy_version(rows[0][0], expected)
    stored = {**body, "version": version}
    record = await append_locked(tx, draft, now) if draft is not None else None
    created = record.ts if record is not None else iso(now)
    seq = record.seq if record is not None else None
    await tx.execute(INSERT_POLICY, kind, name, version, codec.dumps(stored), created, actor, seq)
    return PolicyVersion(kind, name, version, stored, created, actor), record


async def seed_policies(
    tx: Tx,
    items: Sequence[tuple[PolicyKind, str, dict[str, Any]]],
    actor: str,
    now: dt.datetime,
) -> bool:
    """Version 1 of every item, only if the store holds no policy at all; True if written.
    The emptiness check and the inserts share one chained write, so of several processes
    seeding an empty store at once exactly one writes."""
    if await tx.fetchrow("SELECT 1 FROM policies LIMIT 1") is not None:
        return False
    created = iso(now)
    await tx.executemany(
        INSERT_POLICY,
        [(k, n, 1, codec.dumps({**b, "version": 1}), created, actor, None) for k, n, b in items],
    )
    return True


async def policies(tx: Tx, where: str, *args: Any) -> list[PolicyVersion]:
    """Policy versions matching ``where`` (a fixed clause with ``?`` placeholders)."""
    sql = f"SELECT {codec.POLICY_COLUMNS} FROM policies p {where}"  # noqa: S608
    return [codec.policy_from_row(r) for r in await tx.fetch(sql, *args)]


async def get_policy(
    tx: Tx, kind: PolicyKind, name: str, version: int | None
) -> PolicyVersion | None:
    if version is None:
        where = "WHERE kind = ? AND name = ? ORDER BY version DESC LIMIT 1"
        found = await policies(tx, where, kind, name)
    else:
        found = await policies(
            tx, "WHERE kind = ? AND name = ? AND version = ?", kind, name, version
        )
    return found[0] if found else None


async def list_policies(tx: Tx, kind: PolicyKind) -> list[PolicyVersion]:
    """The latest version of each name."""
    latest = "SELECT MAX(version) FROM policies q WHERE q.kind = p.kind AND q.name = p.name"
    return await policies(tx, f"WHERE p.kind = ? AND p.version = ({latest}) ORDER BY p.name", kind)


async def policy_history(tx: Tx, kind: PolicyKind, name: str) -> list[PolicyVersion]:
    return await policies(tx, "WHERE kind = ? AND name = ? ORDER BY version", kind, name)


# --- shared secrets and rate counters ------------------------------------------------------


async def shared_secret(tx: Tx, name: str, proposed: bytes, now: dt.datetime) -> bytes:
    """The stored secret ``name``, storing ``proposed`` first if there is none (a concurrent
    insert of the same name waits for the first and then does nothing)."""
    await tx.execute(
        "INSERT INTO shared_secrets (name, value, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        name,
        proposed.hex(),
        iso(now),
    )
    rows = await tx.fetch("SELECT value FROM shared_secrets WHERE name = ?", name)
    return bytes.fromhex(rows[0][0])


async def count_hits(tx: Tx, keys: Sequence[str], win: int, sweep: bool) -> dict[str, int]:
    """Rate-limit counters: one row per ``(key, win)``, ``win`` a fixed one-minute window
    (``floor(unix_seconds / 60)``). One upsert adds a hit to every key (distinct, sorted by
    the caller: one lock order) and returns the new counts, so every replica sees the same
    counts; ``sweep`` deletes older windows. Run as a non-durable write: losing the last
    second's counts in a crash only lets a client make a few more requests."""
    if sweep:
        await tx.execute("DELETE FROM rate_counters WHERE win < ?", win)
    values = ", ".join("(?, ?, 1)" for _ in keys)
    rows = await tx.fetch(
        f"INSERT INTO rate_counters (key, win, hits) VALUES {values} "  # noqa: S608
        "ON CONFLICT (key, win) DO UPDATE SET hits = rate_counters.hits + 1 "
        "RETURNING key, hits",
        *[arg for key in keys for arg in (key, win)],
    )
    return {str(row[0]): int(row[1]) for row in rows}

"""The PostgreSQL store's statements, as async functions on one asyncpg connection.

Every audited write runs in one transaction that first locks the ``chain_head`` row
(``lock_chain``); the budget re-check, the licence conflict check and the append all happen
under that lock, so replicas behave as one serialized writer. Reads take no lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from enclave.audit.record import GENESIS_HASH, AuditDraft, AuditRecord
from enclave.errors import BudgetExhausted, Conflict, NotFound
from enclave.ledger.grid import Amount
from enclave.models import Licence, iso
from enclave.store import codec, counters, jobs
from enclave.store.base import (
    AuditFilter,
    CacheEntry,
    Charge,
    Debited,
    PolicyKind,
    PolicyVersion,
)
from enclave.store.jobs import JobOp
from enclave.store.postgres_schema import MIGRATION_LOCK, MIGRATIONS

Conn = Any  # asyncpg.Connection (asyncpg ships no type hints)


async def migrate(conn: Conn) -> int:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for step in statements:
                if isinstance(step, str):
                    await conn.execute(step)
                else:
                    await step(conn)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            current = version
    return int(current)


async def lock_chain(conn: Conn) -> None:
    """Take the chain lock for the rest of the transaction."""
    await conn.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")


async def head(conn: Conn) -> tuple[int, str, str | None]:
    row = await conn.fetchrow("SELECT seq, hash, ts FROM audit ORDER BY seq DESC LIMIT 1")
    if row is None:
        return 0, GENESIS_HASH, None
    return int(row["seq"]), str(row["hash"]), str(row["ts"])


async def _append_locked(conn: Conn, draft: AuditDraft, now: dt.datetime) -> AuditRecord:
    """Append ``draft`` as the next record. Call only after ``lock_chain``."""
    seq, prev_hash, head_ts = await head(conn)
    record = codec.build_record(draft, seq + 1, codec.next_ts(now, head_ts), prev_hash)
    await conn.execute(
        f"INSERT INTO audit ({codec.AUDIT_COLUMNS}) VALUES "  # noqa: S608 (fixed column list)
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
        " $19, $20)",
        *codec.audit_values(record),
    )
    await conn.execute("UPDATE chain_head SET seq = $1 WHERE id = 1", record.seq)
    return record


async def append(conn: Conn, draft: AuditDraft, now: dt.datetime) -> AuditRecord:
    async with conn.transaction():
        await lock_chain(conn)
        return await _append_locked(conn, draft, now)


async def debit(
    conn: Conn,
    draft: AuditDraft,
    charge: Charge,
    cache: CacheEntry | None,
    now: dt.datetime,
    job: JobOp | None = None,
) -> Debited:
    """``job``: the job's own change, in the same transaction (``store/jobs.py``)."""
    body = codec.dumps(cache.release) if cache is not None else None
    async with conn.transaction():
        await lock_chain(conn)
        if job is not None:
            await jobs.apply_postgres(conn, job)
        before = await spent(conn, charge.licence_id, charge.dataset, charge.since)
        after = before.plus(charge.cost)
        if not after.within(charge.limit):
            raise BudgetExhausted("the licence's privacy budget for this dataset is spent")
        record = await _append_locked(conn, draft, now)
        await conn.execute(
            "INSERT INTO ledger (licence_id, dataset, epsilon_units, delta_units, ts, audit_seq)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            charge.licence_id,
            charge.dataset,
            charge.cost.epsilon,
            charge.cost.delta,
            record.ts,
            record.seq,
        )
        if cache is not None:
            await conn.execute(
                "INSERT INTO release_cache (licence_id, cache_key, body, created_at, audit_seq)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (licence_id, cache_key) DO NOTHING",
                cache.licence_id,
                cache.cache_key,
                body,
                record.ts,
                record.seq,
            )
    return Debited(record, after)


def _where(flt: AuditFilter, after_seq: int) -> tuple[str, list[Any]]:
    args: list[Any] = [after_seq]
    where = ["seq > $1"]
    for column in ("actor", "dataset", "action", "outcome", "licence_id"):
        value = getattr(flt, column)
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    for op, bound in ((">=", flt.since), ("<", flt.until)):
        if bound is not None:
            args.append(iso(bound))
            where.append(f"ts {op} ${len(args)}")
    return " AND ".join(where), args


async def audit_events(
    conn: Conn, flt: AuditFilter, after_seq: int, limit: int
) -> list[AuditRecord]:
    where, args = _where(flt, after_seq)
    args.append(max(0, limit))
    sql = f"SELECT {codec.AUDIT_COLUMNS} FROM audit WHERE {where} ORDER BY seq LIMIT ${len(args)}"  # noqa: S608
    return [codec.record_from_row(r) for r in await conn.fetch(sql, *args)]


async def audit_range(conn: Conn, start: int, end: int) -> list[Any]:
    """Raw rows (``AUDIT_COLUMNS`` order) with seq in ``[start, end]``, for ``chain_rows``."""
    sql = f"SELECT {codec.AUDIT_COLUMNS} FROM audit WHERE seq >= $1 AND seq <= $2 ORDER BY seq"  # noqa: S608
    rows: list[Any] = await conn.fetch(sql, start, end)
    return rows


async def audit_summary(
    conn: Conn, since: dt.datetime | None, until: dt.datetime | None
) -> list[codec.SummaryRow]:
    where, args = _where(AuditFilter(since=since, until=until), 0)
    sql = (
        "SELECT actor, dataset,"
        " COUNT(*) FILTER (WHERE action = 'query' AND outcome = 'ok' AND NOT cached),"
        " COUNT(*) FILTER (WHERE action = 'query' AND outcome = 'ok' AND cached),"
        " COUNT(*) FILTER (WHERE outcome = 'denied'), COUNT(*) FILTER (WHERE outcome = 'error')"
        " FROM audit WHERE "
    )
    counts: dict[tuple[str, str | None], list[int]] = {}
    for row in await conn.fetch(sql + where + " GROUP BY actor, dataset", *args):
        counts[(row[0], row[1])] = [int(row[i]) for i in range(2, 6)]
    sql = "SELECT a.actor, l.dataset, l.epsilon_units, l.delta_units FROM ledger l JOIN audit a"
    where = where.replace("seq >", "a.seq >").replace("ts ", "l.ts ")
    spend: dict[tuple[str, str | None], Amount] = {}
    for row in await conn.fetch(sql + " ON a.seq = l.audit_seq WHERE " + where, *args):
        codec.add_spend(spend, (row[0], row[1]), row[2], row[3])
    return codec.summary_rows(counts, spend)


async def spent(conn: Conn, licence_id: str, dataset: str, since: dt.datetime | None) -> Amount:
    # SUM(bigint) is an exact numeric in PostgreSQL: sum there, not row by row in Python.
    sql = (
        "SELECT COALESCE(SUM(epsilon_units), 0), COALESCE(SUM(delta_units), 0) FROM ledger"
        " WHERE licence_id = $1 AND dataset = $2"
    )
    if since is None:
        row = await conn.fetchrow(sql, licence_id, dataset)
    else:
        row = await conn.fetchrow(sql + " AND ts >= $3", licence_id, dataset, iso(since))
    return Amount(int(row[0]), int(row[1]))


async def spent_by_dataset(
    conn: Conn, licence_id: str, since: dt.datetime | None
) -> dict[str, Amount]:
    sql = "SELECT dataset, epsilon_units, delta_units FROM ledger WHERE licence_id = $1"
    if since is None:
        rows = await conn.fetch(sql, licence_id)
    else:
        rows = await conn.fetch(sql + " AND ts >= $2", licence_id, iso(since))
    out: dict[str, Amount] = {}
    for row in rows:
        codec.add_spend(out, row[0], row[1], row[2])
    return out


async def get_cached(conn: Conn, licence_id: str, cache_key: str) -> dict[str, Any] | None:
    body = await conn.fetchval(
        "SELECT body FROM release_cache WHERE licence_id = $1 AND cache_key = $2",
        licence_id,
        cache_key,
    )
    return None if body is None else dict(codec.loads(body))


async def licences(conn: Conn, where: str, *args: Any) -> list[Licence]:
    rows = await conn.fetch("SELECT * FROM licences " + where, *args)  # noqa: S608
    return [codec.licence_from_row(r) for r in rows]


async def get_licence(conn: Conn, licence_id: str) -> Licence | None:
    found = await licences(conn, "WHERE id = $1", licence_id)
    return found[0] if found else None


async def insert_licence(
    conn: Conn, lic: Licence, draft: AuditDraft, now: dt.datetime
) -> AuditRecord:
    lic = replace(lic, created_at=lic.created_at or now, updated_at=lic.updated_at or now)
    marks = ", ".join(f"${i}" for i in range(1, len(codec.LICENCE_COLUMNS) + 1))
    async with conn.transaction():
        await lock_chain(conn)
        codec.check_no_overlap(lic, await licences(conn, "WHERE subject = $1", lic.subject))
        if await get_licence(conn, lic.id) is not None:
            raise Conflict("a licence with this id exists")
        await conn.execute(
            f"INSERT INTO licences ({', '.join(codec.LICENCE_COLUMNS)}) VALUES ({marks})",  # noqa: S608
            *codec.licence_values(lic),
        )
        return await _append_locked(conn, codec.with_licence(draft, lic.id), now)


async def update_licence(
    conn: Conn, licence_id: str, changes: dict[str, Any], draft: AuditDraft, now: dt.datetime
) -> tuple[Licence, AuditRecord]:
    async with conn.transaction():
        await lock_chain(conn)
        current = await get_licence(conn, licence_id)
        if current is None:
            raise NotFound("no such licence")
        updated = codec.apply_changes(current, changes, now)
        others = await licences(conn, "WHERE subject = $1", updated.subject)
        codec.check_no_overlap(updated, others)
        columns = codec.LICENCE_COLUMNS[1:]
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
        await conn.execute(
            f"UPDATE licences SET {sets} WHERE id = $1",  # noqa: S608
            licence_id,
            *codec.licence_values(updated)[1:],
        )
        record = await _append_locked(conn, codec.with_licence(draft, licence_id), now)
    return updated, record


async def add_revocation(
    conn: Conn, jti: str, reason: str, draft: AuditDraft, now: dt.datetime
) -> AuditRecord:
    async with conn.transaction():
        await lock_chain(conn)
        record = await _append_locked(conn, draft, now)
        await conn.execute(
            "INSERT INTO revocations (jti, reason, created_at, audit_seq) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (jti) DO NOTHING",
            jti,
            reason,
            record.ts,
            record.seq,
        )
    return record


async def put_policy(
    conn: Conn,
    kind: PolicyKind,
    name: str,
    body: dict[str, Any],
    actor: str,
    draft: AuditDraft | None,
    now: dt.datetime,
    expected: int | None = None,
) -> tuple[PolicyVersion, AuditRecord | None]:
    async with conn.transaction():
        await lock_chain(conn)  # also serializes version numbers across replicas
        current = await conn.fetchval(
            "SELECT MAX(version) FROM policies WHERE kind = $1 AND name = $2", kind, name
        )
        version = codec.next_policy_version(current, expected)
        stored = {**body, "version": version}
        record = await _append_locked(conn, draft, now) if draft is not None else None
        created = record.ts if record is not None else iso(now)
        await conn.execute(
            "INSERT INTO policies (kind, name, version, body, created_at, actor, audit_seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            kind,
            name,
            version,
            codec.dumps(stored),
            created,
            actor,
            record.seq if record else None,
        )
    return PolicyVersion(kind, name, version, stored, created, actor), record


LATEST_POLICIES = (
    "SELECT DISTINCT ON (name) * FROM policies WHERE kind = $1 ORDER BY name, version DESC"
)


async def seed_policies(
    conn: Conn,
    items: Sequence[tuple[PolicyKind, str, dict[str, Any]]],
    actor: str,
    now: dt.datetime,
) -> bool:
    """Version 1 of every item, only if the store holds no policy at all; True if written.

    Under the chain lock, like every policy write: of several replicas seeding an empty
    database at once, exactly one writes and the others find the policies there."""
    created = iso(now)
    async with conn.transaction():
        await lock_chain(conn)
        if await conn.fetchval("SELECT 1 FROM policies LIMIT 1") is not None:
            return False
        await conn.executemany(
            "INSERT INTO policies (kind, name, version, body, created_at, actor, audit_seq)"
            " VALUES ($1, $2, 1, $3, $4, $5, NULL)",
            [(k, n, codec.dumps({**b, "version": 1}), created, actor) for k, n, b in items],
        )
    return True


async def schema_version(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0)


async def shared_secret(conn: Conn, name: str, proposed: bytes, now: dt.datetime) -> bytes:
    """The stored secret ``name``, storing ``proposed`` first if there is none (a concurrent
    insert of the same name waits for the first and then does nothing)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO shared_secrets (name, value, created_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING",
            name,
            proposed.hex(),
            iso(now),
        )
        value = await conn.fetchval("SELECT value FROM shared_secrets WHERE name = $1", name)
    return bytes.fromhex(value)


async def count_hits(conn: Conn, keys: Sequence[str], win: int, sweep: bool) -> dict[str, int]:
    """Add a hit to each key in window ``win`` (``store/counters.py``); the new counts.
    Committed without waiting for the WAL flush (the counters are not worth one)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        if sweep:
            await conn.execute(counters.sweep_sql("numeric"), win)
        sql = counters.hit_sql(len(keys), "numeric")
        rows = await conn.fetch(sql, *counters.hit_args(keys, win))
    return counters.counts(rows)

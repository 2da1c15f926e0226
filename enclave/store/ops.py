"""The store's transactions on licences, revocations, policies, shared secrets, rate counters,
the release cache and audit reads, each an async function of a ``driver.Tx``, written once for
every database (``base.Store`` runs each in a read or a write; a write's function
takes the time as its second argument).

Every audited write calls ``chain.append_locked`` inside a chained write, so the chain head it
reads is the real head, and the licence overlap check and the policy version bump run under
the same lock: two admins cannot both win. Beside this module: ``chain.py`` (appending,
debits), ``ledger.py`` (budget totals), ``reserve.py``, ``grants.py``, ``proposals.py``,
``jobs.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from enclave.audit.log import AuditFilter, SummaryKey, SummaryRow, summary_rows
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.audit.rows import record_from_row
from enclave.errors import Conflict, NotFound
from enclave.ledger.grid import Amount
from enclave.licences import apply_changes, check_no_overlap
from enclave.models import Licence, iso
from enclave.policy.version import PolicyKind, PolicyVersion, next_policy_version
from enclave.store import codec
from enclave.store.chain import AUDIT_COLUMNS, append_locked
from enclave.store.driver import Migrations, Row, Tx, marks

LICENCE_COLUMNS = ", ".join(codec.LICENCE_COLUMNS)


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


# --- the audit chain: reading (appending is ``chain.py``) ----------------------------


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
            args.append(iso(_ms_ceiling(bound)))
    return " AND ".join(where), args


def _ms_ceiling(bound: dt.datetime) -> dt.datetime:
    """``bound`` rounded up to the millisecond: times are kept to the millisecond, and a time
    ``t`` lies at or after ``bound`` exactly when it lies at or after this (``iso`` alone would
    round down, moving a record just before a finer ``until`` out of its window)."""
    extra = bound.microsecond % 1000
    return bound + dt.timedelta(microseconds=1000 - extra) if extra else bound


async def audit_events(
    tx: Tx, flt: AuditFilter, after_seq: int = 0, limit: int = 100
) -> list[AuditRecord]:
    where, args = _where(flt)
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ? AND {where} ORDER BY seq LIMIT ?"  # noqa: S608
    return [record_from_row(r) for r in await tx.fetch(sql, after_seq, *args, max(0, limit))]


async def audit_rows(tx: Tx, start: int, end: int) -> list[Row]:
    """Raw rows (``FIELDS`` order) with seq in ``[start, end]``, for ``audit/rows.py``."""
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= ? AND seq <= ? ORDER BY seq"  # noqa: S608
    return await tx.fetch(sql, start, end)


async def audit_summary(
    tx: Tx, since: dt.datetime | None = None, until: dt.datetime | None = None
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


# --- the release cache (the ledger is ``ledger.py``) ------------------------------------


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


async def list_licences(tx: Tx, subject: str | None = None) -> list[Licence]:
    if subject is None:
        return await licences(tx, "ORDER BY created_at, id")
    return await licences(tx, "WHERE subject = ? ORDER BY created_at, id", subject)


async def licences_for(tx: Tx, subject: str) -> list[Licence]:
    """Every licence of ``subject`` (any status), newest first."""
    return await licences(tx, "WHERE subject = ? ORDER BY created_at DESC, id DESC", subject)


async def insert_licence(
    tx: Tx, now: dt.datetime, licence: Licence, audit: AuditDraft
) -> AuditRecord:
    """``Conflict`` if the id exists or the subject already holds an active licence for one
    of its datasets (``licences.check_no_overlap``)."""
    created, updated = licence.created_at or now, licence.updated_at or now
    lic = replace(licence, created_at=created, updated_at=updated)
    check_no_overlap(lic, await licences_for(tx, lic.subject))
    if await get_licence(tx, lic.id) is not None:
        raise Conflict("a licence with this id exists")
    await tx.execute(
        f"INSERT INTO licences ({LICENCE_COLUMNS})"  # noqa: S608
        f" VALUES ({marks(len(codec.LICENCE_COLUMNS))})",
        *codec.licence_values(lic),
    )
    return await append_locked(tx, codec.with_licence(audit, lic.id), now)


async def insert_licences(
    tx: Tx, now: dt.datetime, items: Sequence[tuple[Licence, AuditDraft]]
) -> list[AuditRecord]:
    """A bulk import: every licence with its record in one transaction, each checked against
    the earlier ones: all of them, or none (the first conflict raises)."""
    return [await insert_licence(tx, now, lic, draft) for lic, draft in items]


async def update_licence(
    tx: Tx, now: dt.datetime, licence_id: str, changes: dict[str, Any], audit: AuditDraft
) -> tuple[Licence, AuditRecord]:
    """Apply ``changes`` (already validated; ``licences.apply_changes``). ``NotFound`` if
    absent; ``Conflict`` if revoked (final) or a second active licence would result."""
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
    record = await append_locked(tx, codec.with_licence(audit, licence_id), now)
    return updated, record


async def add_revocation(
    tx: Tx, now: dt.datetime, jti: str, reason: str, audit: AuditDraft
) -> AuditRecord:
    record = await append_locked(tx, audit, now)
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
    now: dt.datetime,
    kind: PolicyKind,
    name: str,
    body: dict[str, Any],
    actor: str,
    audit: AuditDraft | None,
    expected_version: int | None = None,
) -> tuple[PolicyVersion, AuditRecord | None]:
    """Store version previous + 1 (or 1). ``audit`` None only when seeding from files.
    ``expected_version`` (the lost-update guard) is checked under the chain lock: the
    current version must equal it (0: the name must not exist yet), else ``Conflict`` and
    nothing is written; None writes regardless."""
    rows = await tx.fetch(
        "SELECT MAX(version) FROM policies WHERE kind = ? AND name = ?", kind, name
    )
    version = next_policy_version(rows[0][0], expected_version)
    stored = {**body, "version": version}
    record = await append_locked(tx, audit, now) if audit is not None else None
    created = record.ts if record is not None else iso(now)
    seq = record.seq if record is not None else None
    await tx.execute(INSERT_POLICY, kind, name, version, codec.dumps(stored), created, actor, seq)
    return PolicyVersion(kind, name, version, stored, created, actor), record


async def seed_policies(
    tx: Tx, now: dt.datetime, items: Sequence[tuple[PolicyKind, str, dict[str, Any]]], actor: str
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
    tx: Tx, kind: PolicyKind, name: str, version: int | None = None
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


async def shared_secret(tx: Tx, now: dt.datetime, name: str, proposed: bytes) -> bytes:
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


#: one caller's hits: the keys (distinct), the one-minute window, and whether to sweep
Hits = tuple[Sequence[str], int, bool]


async def count_hits(tx: Tx, batch: Sequence[Hits]) -> list[dict[str, int]]:
    """Rate-limit counters: one row per ``(key, win)``, ``win`` a fixed one-minute window
    (``floor(unix_seconds / 60)``). A batch of callers (group commit: ``group.py``) adds its
    hits to every key in one upsert (rows in sorted order: one lock order for every batch) and
    gives each caller the count its hit made, as if they had come one by one in batch order,
    so every replica sees the same counts; a caller's ``sweep`` deletes older windows. Run as a
    non-durable write: losing the last second's counts in a crash only lets a client make a
    few more requests."""
    sweeps = [win for _keys, win, sweep in batch if sweep]
    if sweeps:
        await tx.execute("DELETE FROM rate_counters WHERE win < ?", min(sweeps))
    added: dict[tuple[str, int], int] = {}
    for keys, win, _sweep in batch:
        for key in keys:
            added[(key, win)] = added.get((key, win), 0) + 1
    slots = sorted(added)
    if not slots:
        return [{} for _ in batch]
    values = ", ".join("(?, ?, ?)" for _ in slots)
    rows = await tx.fetch(
        f"INSERT INTO rate_counters (key, win, hits) VALUES {values} "  # noqa: S608
        "ON CONFLICT (key, win) DO UPDATE SET hits = rate_counters.hits + excluded.hits "
        "RETURNING key, win, hits",
        *[arg for key, win in slots for arg in (key, win, added[(key, win)])],
    )
    total = {(str(r[0]), int(r[1])): int(r[2]) for r in rows}
    seen: dict[tuple[str, int], int] = {}
    out: list[dict[str, int]] = []
    for keys, win, _sweep in batch:
        counts = {}
        for key in keys:
            slot = (key, win)
            seen[slot] = seen.get(slot, 0) + 1
            counts[key] = total[slot] - added[slot] + seen[slot]
        out.append(counts)
    return out

"""The SQLite store's statements, as plain synchronous functions on one connection.

They run only on the store's single worker thread (``sqlite.py``), so they need no locks of
their own; across processes, ``BEGIN IMMEDIATE`` takes SQLite's write lock before the chain
head or the ledger is read, so two gateways on one file cannot fork the chain or overspend.
Every audited write goes through ``_append_locked`` inside such a transaction.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from enclave.store.sqlite_schema import MIGRATIONS


@contextmanager
def write_tx(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls everything back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection) -> int:
    with write_tx(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for step in statements:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            current = version
    return int(current)


# --- the audit chain -----------------------------------------------------------------------


def head(conn: sqlite3.Connection) -> tuple[int, str, str | None]:
    row = conn.execute("SELECT seq, hash, ts FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return 0, GENESIS_HASH, None
    return int(row[0]), str(row[1]), str(row[2])


def _append_locked(conn: sqlite3.Connection, draft: AuditDraft, now: dt.datetime) -> AuditRecord:
    """Append ``draft`` as the next record. Call only inside ``write_tx``."""
    seq, prev_hash, head_ts = head(conn)
    record = codec.build_record(draft, seq + 1, codec.next_ts(now, head_ts), prev_hash)
    conn.execute(
        f"INSERT INTO audit ({codec.AUDIT_COLUMNS}) VALUES "  # noqa: S608 (fixed column list)
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        codec.audit_values(record),
    )
    return record


SpentFn = Callable[[sqlite3.Connection, str, str, "dt.datetime | None"], Amount]


def append(conn: sqlite3.Connection, draft: AuditDraft, now: dt.datetime) -> AuditRecord:
    with write_tx(conn):
        return _append_locked(conn, draft, now)


def debit(
    conn: sqlite3.Connection,
    draft: AuditDraft,
    charge: Charge,
    cache: CacheEntry | None,
    now: dt.datetime,
    spent_fn: SpentFn | None = None,
    job: JobOp | None = None,
) -> Debited:
    """``spent_fn`` reads the licence's spend inside the write lock (default: sum the rows).
    ``job``: the job's own change, in the same transaction (``store/jobs.py``)."""
    body = codec.dumps(cache.release) if cache is not None else None
    read_spent = spent_fn or spent
    with write_tx(conn):
        if job is not None:
            jobs.apply_sqlite(conn, job)
        after = read_spent(conn, charge.licence_id, charge.dataset, charge.since).plus(charge.cost)
        if not after.within(charge.limit):
            raise BudgetExhausted("the licence's privacy budget for this dataset is spent")
        record = _append_locked(conn, draft, now)
        conn.execute(
            "INSERT INTO ledger (licence_id, dataset, epsilon_units, delta_units, ts, audit_seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                charge.licence_id,
                charge.dataset,
                charge.cost.epsilon,
                charge.cost.delta,
                record.ts,
                record.seq,
            ),
        )
        if cache is not None:
            # The first release under a key stays: a repeat must return the same answer.
            conn.execute(
                "INSERT INTO release_cache (licence_id, cache_key, body, created_at, audit_seq)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (licence_id, cache_key) DO NOTHING",
                (cache.licence_id, cache.cache_key, body, record.ts, record.seq),
            )
    return Debited(record, after)


def audit_events(
    conn: sqlite3.Connection, flt: AuditFilter, after_seq: int, limit: int
) -> list[AuditRecord]:
    where = ["seq > ?"]
    args: list[Any] = [after_seq]
    for column in ("actor", "dataset", "action", "outcome", "licence_id"):
        value = getattr(flt, column)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if flt.since is not None:
        where.append("ts >= ?")
        args.append(iso(flt.since))
    if flt.until is not None:
        where.append("ts < ?")
        args.append(iso(flt.until))
    args.append(max(0, limit))
    sql = (
        f"SELECT {codec.AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"  # noqa: S608
    )
    return [codec.record_from_row(r) for r in conn.execute(sql, args)]


def audit_batch(conn: sqlite3.Connection, after_seq: int, batch: int) -> list[AuditRecord]:
    rows = conn.execute(
        f"SELECT {codec.AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
        (after_seq, batch),
    )
    return [codec.record_from_row(r) for r in rows]


def audit_summary(
    conn: sqlite3.Connection, since: dt.datetime | None, until: dt.datetime | None
) -> list[codec.SummaryRow]:
    window, args = _window("ts", since, until)
    counts: dict[tuple[str, str | None], list[int]] = {}
    sql = (
        "SELECT actor, dataset,"
        " SUM(action = 'query' AND outcome = 'ok' AND cached = 0),"
        " SUM(action = 'query' AND outcome = 'ok' AND cached = 1),"
        " SUM(outcome = 'denied'), SUM(outcome = 'error') FROM audit WHERE "
    )
    rows = conn.execute(sql + window + " GROUP BY actor, dataset", args)
    for actor, dataset, *numbers in rows:
        counts[(actor, dataset)] = [int(n or 0) for n in numbers]
    window, args = _window("l.ts", since, until)
    spend: dict[tuple[str, str | None], Amount] = {}
    sql = "SELECT a.actor, l.dataset, l.epsilon_units, l.delta_units FROM ledger l JOIN audit a"
    rows = conn.execute(sql + " ON a.seq = l.audit_seq WHERE " + window, args)
    for actor, dataset, eps, delta in rows:
        codec.add_spend(spend, (actor, dataset), eps, delta)
    return codec.summary_rows(counts, spend)


def _window(
    column: str, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[str, list[str]]:
    where, args = ["1 = 1"], []
    if since is not None:
        where.append(f"{column} >= ?")
        args.append(iso(since))
    if until is not None:
        where.append(f"{column} < ?")
        args.append(iso(until))
    return " AND ".join(where), args


# --- ledger and cache ----------------------------------------------------------------------


def spent(
    conn: sqlite3.Connection, licence_id: str, dataset: str, since: dt.datetime | None
) -> Amount:
    # Summed in Python (exact ints): SQLite's SUM raises on 64-bit overflow.
    sql = "SELECT epsilon_units, delta_units FROM ledger WHERE licence_id = ? AND dataset = ?"
    args: list[Any] = [licence_id, dataset]
    if since is not None:
        sql += " AND ts >= ?"
        args.append(iso(since))
    return codec.sum_units(conn.execute(sql, args))


def spent_by_dataset(
    conn: sqlite3.Connection, licence_id: str, since: dt.datetime | None
) -> dict[str, Amount]:
    sql = "SELECT dataset, epsilon_units, delta_units FROM ledger WHERE licence_id = ?"
    args: list[Any] = [licence_id]
    if since is not None:
        sql += " AND ts >= ?"
        args.append(iso(since))
    out: dict[str, Amount] = {}
    for dataset, eps, delta in conn.execute(sql, args):
        codec.add_spend(out, dataset, eps, delta)
    return out


def get_cached(conn: sqlite3.Connection, licence_id: str, cache_key: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT body FROM release_cache WHERE licence_id = ? AND cache_key = ?",
        (licence_id, cache_key),
    ).fetchone()
    return None if row is None else dict(codec.loads(row[0]))


# --- licences and revocations --------------------------------------------------------------


def _licences(conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> list[Licence]:
    sql = f"SELECT * FROM licences {where}"  # noqa: S608 (callers pass fixed clauses)
    return [codec.licence_from_row(r) for r in conn.execute(sql, args)]


def get_licence(conn: sqlite3.Connection, licence_id: str) -> Licence | None:
    found = _licences(conn, "WHERE id = ?", (licence_id,))
    return found[0] if found else None


def list_licences(conn: sqlite3.Connection, subject: str | None) -> list[Licence]:
    if subject is None:
        return _licences(conn, "ORDER BY created_at, id", ())
    return _licences(conn, "WHERE subject = ? ORDER BY created_at, id", (subject,))


def licences_for(conn: sqlite3.Connection, subject: str) -> list[Licence]:
    return _licences(conn, "WHERE subject = ? ORDER BY created_at DESC, id DESC", (subject,))


def insert_licence(
    conn: sqlite3.Connection, lic: Licence, draft: AuditDraft, now: dt.datetime
) -> AuditRecord:
    lic = replace(lic, created_at=lic.created_at or now, updated_at=lic.updated_at or now)
    placeholders = ", ".join("?" for _ in codec.LICENCE_COLUMNS)
    with write_tx(conn):
        codec.check_no_overlap(lic, licences_for(conn, lic.subject))
        if get_licence(conn, lic.id) is not None:
            raise Conflict("a licence with this id exists")
        conn.execute(
            f"INSERT INTO licences ({', '.join(codec.LICENCE_COLUMNS)})"  # noqa: S608
            f" VALUES ({placeholders})",
            codec.licence_values(lic),
        )
        return _append_locked(conn, codec.with_licence(draft, lic.id), now)


def update_licence(
    conn: sqlite3.Connection,
    licence_id: str,
    changes: dict[str, Any],
    draft: AuditDraft,
    now: dt.datetime,
) -> tuple[Licence, AuditRecord]:
    with write_tx(conn):
        current = get_licence(conn, licence_id)
        if current is None:
            raise NotFound("no such licence")
        updated = codec.apply_changes(current, changes, now)
        codec.check_no_overlap(updated, licences_for(conn, updated.subject))
        assignments = ", ".join(f"{c} = ?" for c in codec.LICENCE_COLUMNS[1:])
        conn.execute(
            f"UPDATE licences SET {assignments} WHERE id = ?",  # noqa: S608
            (*codec.licence_values(updated)[1:], licence_id),
        )
        record = _append_locked(conn, codec.with_licence(draft, licence_id), now)
    return updated, record


def add_revocation(
    conn: sqlite3.Connection, jti: str, reason: str, draft: AuditDraft, now: dt.datetime
) -> AuditRecord:
    with write_tx(conn):
        record = _append_locked(conn, draft, now)
        # Revoking twice is not an error: the token stays refused, both requests are audited.
        conn.execute(
            "INSERT INTO revocations (jti, reason, created_at, audit_seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (jti) DO NOTHING",
            (jti, reason, record.ts, record.seq),
        )
    return record


def is_revoked(conn: sqlite3.Connection, jti: str) -> bool:
    return conn.execute("SELECT 1 FROM revocations WHERE jti = ?", (jti,)).fetchone() is not None


# --- policies ------------------------------------------------------------------------------


def put_policy(
    conn: sqlite3.Connection,
    kind: PolicyKind,
    name: str,
    body: dict[str, Any],
    actor: str,
    draft: AuditDraft | None,
    now: dt.datetime,
    expected: int | None = None,
) -> tuple[PolicyVersion, AuditRecord | None]:
    with write_tx(conn):
        row = conn.execute(
            "SELECT MAX(version) FROM policies WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        version = codec.next_policy_version(row[0], expected)
        stored = {**body, "version": version}
        record = _append_locked(conn, draft, now) if draft is not None else None
        created = record.ts if record is not None else iso(now)
        conn.execute(
            "INSERT INTO policies (kind, name, version, body, created_at, actor, audit_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                name,
                version,
                codec.dumps(stored),
                created,
                actor,
                record.seq if record else None,
            ),
        )
    return PolicyVersion(kind, name, version, stored, created, actor), record


def get_policy(
    conn: sqlite3.Connection, kind: PolicyKind, name: str, version: int | None
) -> PolicyVersion | None:
    if version is None:
        row = conn.execute(
            "SELECT * FROM policies WHERE kind = ? AND name = ? ORDER BY version DESC LIMIT 1",
            (kind, name),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT * FROM policies WHERE kind = ? AND name = ? AND version = ?",
            (kind, name, version),
        ).fetchone()
    return None if row is None else codec.policy_from_row(row)


def list_policies(conn: sqlite3.Connection, kind: PolicyKind) -> list[PolicyVersion]:
    rows = conn.execute(
        "SELECT p.* FROM policies p WHERE p.kind = ? AND p.version = ("
        " SELECT MAX(version) FROM policies q WHERE q.kind = p.kind AND q.name = p.name)"
        " ORDER BY p.name",
        (kind,),
    )
    return [codec.policy_from_row(r) for r in rows]


def policy_history(conn: sqlite3.Connection, kind: PolicyKind, name: str) -> list[PolicyVersion]:
    rows = conn.execute(
        "SELECT * FROM policies WHERE kind = ? AND name = ? ORDER BY version", (kind, name)
    )
    return [codec.policy_from_row(r) for r in rows]


def seed_policies(
    conn: sqlite3.Connection,
    items: Sequence[tuple[PolicyKind, str, dict[str, Any]]],
    actor: str,
    now: dt.datetime,
) -> bool:
    """Version 1 of every item, only if the store holds no policy at all; True if written.

    The emptiness check and the inserts share one ``BEGIN IMMEDIATE`` transaction, so two
    processes seeding at once cannot both find the store empty."""
    created = iso(now)
    with write_tx(conn):
        if conn.execute("SELECT 1 FROM policies LIMIT 1").fetchone() is not None:
            return False
        conn.executemany(
            "INSERT INTO policies (kind, name, version, body, created_at, actor, audit_seq)"
            " VALUES (?, ?, 1, ?, ?, ?, NULL)",
            [(k, n, codec.dumps({**b, "version": 1}), created, actor) for k, n, b in items],
        )
    return True


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)


def shared_secret(conn: sqlite3.Connection, name: str, proposed: bytes, now: dt.datetime) -> bytes:
    """The stored secret ``name``, storing ``proposed`` first if there is none."""
    with write_tx(conn):
        conn.execute(
            "INSERT INTO shared_secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, proposed.hex(), iso(now)),
        )
        row = conn.execute("SELECT value FROM shared_secrets WHERE name = ?", (name,)).fetchone()
    return bytes.fromhex(row[0])


def count_hits(
    conn: sqlite3.Connection, keys: Sequence[str], win: int, sweep: bool
) -> dict[str, int]:
    """Add a hit to each key in window ``win`` (``store/counters.py``); the new counts.
    Committed without an fsync (the counters are not worth one); FULL again afterwards."""
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        with write_tx(conn):
            if sweep:
                conn.execute(counters.sweep_sql("qmark"), (win,))
            sql = counters.hit_sql(len(keys), "qmark")
            rows = conn.execute(sql, counters.hit_args(keys, win)).fetchall()
    finally:
        conn.execute("PRAGMA synchronous = FULL")
    return counters.counts(rows)

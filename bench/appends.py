"""Audit appends: concurrent writers on one store, per state store (issue 14).

    .venv/bin/python -m bench.appends                    # SQLite (+ PostgreSQL if configured)
    ENCLAVE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.appends
    .venv/bin/python -m bench.appends --smoke            # 1 and 8 writers, a few appends
    .venv/bin/python -m bench.appends --label before     # its own section, kept beside others
    .venv/bin/python -m bench.appends --writers 32       # only that level

What is timed: ``writers`` coroutines in one event loop share one opened store, as the
requests of one gateway process do, and each calls the store's public API in a closed loop
(the next call as soon as the previous one returned), bounded by a call count and a time
limit. Two kinds of write:

- *append*: ``Store.append`` of a query-like audit record (SQL text, licence, tier, dataset,
  epsilon, result digest, a ``query_id`` in its detail);
- *debit*: ``Store.debit`` with the same record, a ``Charge`` and a ``CacheEntry``, as a
  released query commits them (``charged.read_and_release``): the licence and subject layers
  re-checked, the ledger row and lifetime totals written, the release kept for the cache.
  Each writer has its own licence and subject (distinct licences, one dataset, a huge limit),
  as distinct researchers do; no charge is refused.

A call returns once its transaction has committed (``synchronous=FULL`` on SQLite, the
server's ``synchronous_commit`` on PostgreSQL), so appends/s is durable records per second;
latency is per call, measured around the ``await``. The SQLite store is a fresh file under
``--out``; for PostgreSQL a throwaway database is created on the DSN's server and dropped
after (skipped, with the reason, if the server is unreachable or the store fails to open).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import (
    create_database,
    drop_database,
    load_text,
    log,
    markdown_table,
    parser,
    results_path,
    write_section,
)
from bench.load import LoadResult
from enclave.audit.record import AuditDraft
from enclave.ledger.charge import CacheEntry, Charge, Layer
from enclave.ledger.grid import Amount
from enclave.store import open_store
from enclave.store.base import Store

SQL = "SELECT COUNT(*) AS n FROM visits WHERE age >= {a}"
#: the issue's targets at 32 concurrent writers, appends/s
TARGETS = {"sqlite": 5_000, "postgresql": 3_000}
TARGET_WRITERS = 32
LIMIT = Amount.limit("1000000", "0.001")  # the largest tier budget: never refused


def draft(i: int, writer: int) -> AuditDraft:
    """A released query's record (as ``AuditContext.draft("ok", ...)`` makes it)."""
    digest = hashlib.sha256(f"result {i}".encode()).hexdigest()
    return AuditDraft(
        action="query",
        outcome="ok",
        actor=f"writer{writer}",
        roles=("researcher",),
        request_id=f"req_bench{i:012d}",
        licence_id=f"lic_writer{writer}",
        tier="bench",
        dataset="visits",
        sql=SQL.format(a=i % 90),
        epsilon=epsilon(i),
        delta=0.0,
        client="bench/appends",
        result_sha256=digest,
        detail={"query_id": f"q_bench{i:012d}"},
    )


def epsilon(i: int) -> float:
    return 0.5 + (i % 1000) * 1e-6


def charge(i: int, writer: int) -> Charge:
    """The default tier's charge (``budget_layers.charge_for``): licence and subject layers."""
    return Charge(
        licence_id=f"lic_writer{writer}",
        dataset="visits",
        cost=Amount.charge(str(epsilon(i))),
        limit=LIMIT,
        since=None,
        layers=(Layer("subject", LIMIT, None),),
        subject=f"writer{writer}",
        organization="Benchmarks",
    )


def cache_entry(i: int, writer: int) -> CacheEntry:
    """A one-cell release as ``charged.stored_release`` keeps it."""
    digest = hashlib.sha256(f"result {i}".encode()).hexdigest()
    body = {
        "columns": ["n"],
        "rows": [[41_000 + i % 1000]],
        "accuracy": {"n": {"alpha": 0.05, "plus_minus": 5.99}},
        "suppressed_groups": 0,
        "epsilon": str(Amount.charge(str(epsilon(i))).epsilon_decimal),
        "delta": "0",
        "result_sha256": digest,
        "query_id": f"q_bench{i:012d}",
    }
    return CacheEntry(f"lic_writer{writer}", hashlib.sha256(f"key {i}".encode()).hexdigest(), body)


Call = Callable[[Store, int, int], Awaitable[Any]]


async def _append(store: Store, i: int, writer: int) -> Any:
    return await store.append(draft(i, writer))


async def _debit(store: Store, i: int, writer: int) -> Any:
    return await store.debit(draft(i, writer), charge(i, writer), cache_entry(i, writer))


KINDS: dict[str, Call] = {"append": _append, "debit": _debit}


async def run_writers(
    store: Store, call: Call, writers: int, count: int, limit_s: float, offset: int
) -> LoadResult:
    """``writers`` closed-loop writers sharing one counter, until ``count`` calls or
    ``limit_s`` seconds."""
    run = LoadResult(clients=writers)
    next_i = 0
    deadline = time.monotonic() + limit_s

    async def writer(w: int) -> None:
        nonlocal next_i
        while next_i < count and time.monotonic() < deadline:
            i = offset + next_i
            next_i += 1
            started = time.perf_counter()
            try:
                await call(store, i, w)
            except Exception as exc:  # counted and reported; the run goes on
                run.errors += 1
                run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
            run.latencies.append(time.perf_counter() - started)
            run.done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    run.seconds = time.perf_counter() - started
    return run


async def bench_store(
    label: str, url: str, levels: list[tuple[int, int]], limit_s: float, smoke: bool
) -> list[list[Any]]:
    store = open_store(url)
    await store.open()
    rows: list[list[Any]] = []
    offset = 0
    try:
        await run_writers(store, _debit, 4, 40, limit_s, offset)  # warm up (not reported)
        offset += 40
        for kind, call in KINDS.items():
            for writers, count in levels:
                run = await run_writers(store, call, writers, count, limit_s, offset)
                offset += count
                if run.errors and (smoke or run.done == 0):
                    raise SystemExit(f"{run.errors} calls failed; first: {run.first_error}")
                target = TARGETS[label] if writers == TARGET_WRITERS else None
                verdict = (
                    ""
                    if target is None
                    else f">= {target:,}: {'met' if run.qps >= target else 'not met'}"
                )
                rows.append(
                    [label, kind, writers, run.done, run.errors, f"{run.qps:,.0f}"]
                    + [run.ms(0.5), run.ms(0.99), verdict]
                )
                log(
                    f"  {label} {kind} x{writers}: {run.qps:,.0f} appends/s,"
                    f" p50 {run.ms(0.5):.2f} ms, p99 {run.ms(0.99):.2f} ms,"
                    f" errors {run.errors}"
                )
    finally:
        await store.close()
    return rows


async def server_settings(url: str) -> str:
    """The PostgreSQL settings that decide what a commit waits for."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        names = ("synchronous_commit", "fsync", "wal_sync_method")
        return ", ".join([f"`{n}={await conn.fetchval(f'SHOW {n}')}`" for n in names])
    finally:
        await conn.close()


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--postgres-dsn", default=os.environ.get("ENCLAVE_TEST_POSTGRES_DSN"))
    p.add_argument("--time-limit", type=float, default=None, help="seconds per run (cap)")
    p.add_argument("--writers", type=int, nargs="+", default=None, help="writer counts to run")
    p.add_argument(
        "--label",
        default=None,
        help="write the section appends-LABEL (e.g. before, after) instead of appends",
    )
    args = p.parse_args()
    load_before = load_text()
    levels = [(1, 20), (8, 80)] if args.smoke else [(1, 5_000), (8, 40_000), (32, 80_000)]
    if args.writers:
        levels = [(w, n) for w, n in levels if w in args.writers] or levels
    limit_s = args.time_limit or (10.0 if args.smoke else 15.0)
    work = Path(args.out) / "appends"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "appends.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    table_rows = asyncio.run(bench_store("sqlite", f"sqlite:///{db}", levels, limit_s, args.smoke))
    notes = []
    if not args.postgres_dsn:
        notes.append("PostgreSQL rows skipped: ENCLAVE_TEST_POSTGRES_DSN is not set.")
    else:
        url = None
        try:
            url = asyncio.run(create_database(args.postgres_dsn))
            settings = asyncio.run(server_settings(url))
            table_rows += asyncio.run(bench_store("postgresql", url, levels, limit_s, args.smoke))
            notes.append(f"PostgreSQL server settings: {settings}.")
        except Exception as exc:  # the server or driver is missing: say so, keep SQLite's rows
            notes.append(f"PostgreSQL rows skipped: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            if url is not None:
                asyncio.run(drop_database(args.postgres_dsn, url))
    table = markdown_table(
        ["store", "write", "writers", "done", "errors", "appends/s", "p50 ms", "p99 ms"]
        + [f"target at {TARGET_WRITERS}"],
        table_rows,
    )
    note_text = "".join(f"\n\n{n}" for n in notes)
    print(table + note_text, flush=True)
    body = (
        "`.venv/bin/python -m bench.appends"
        + (f" --label {args.label}" if args.label else "")
        + "` — *writers* coroutines in one event loop share one opened store (as one gateway "
        "process's requests do), each in a closed loop, every run capped by a call count and "
        f"{limit_s:.0f} s. *append*: `Store.append` of a query-like audit record. *debit*: "
        "`Store.debit` with that record, a `Charge` (licence and subject layers) and a "
        "`CacheEntry`, as a released query commits them; each writer has its own licence and "
        "subject (distinct licences, one dataset, a huge limit: nothing refused). A call returns "
        "once committed: SQLite is a file store with WAL and `synchronous=FULL` (an fsync per "
        "commit), PostgreSQL a throwaway database on the local server (settings below). "
        "Latency is per call. The issue's targets at "
        f"{TARGET_WRITERS} writers: >= {TARGETS['sqlite']:,}/s on SQLite, "
        f">= {TARGETS['postgresql']:,}/s on PostgreSQL. Machine load (`uptime`): {load_before} "
        f"before the run, {load_text()} after.\n\n{table}{note_text}\n"
    )
    name = f"appends-{args.label}" if args.label else "appends"
    title = "Audit appends: concurrent writers on one store"
    write_section(
        results_path(args), name, title + (f" ({args.label})" if args.label else ""), body
    )


if __name__ == "__main__":
    main()

"""Throughput: concurrent clients sending small queries (100k rows), per state store.

    .venv/bin/python -m bench.throughput                 # SQLite (+ PostgreSQL if configured)
    ENCLAVE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.throughput
    .venv/bin/python -m bench.throughput --smoke         # 1 and 2 clients, a few requests
    .venv/bin/python -m bench.throughput --processes 1 2 # server.processes 1, then 2
    .venv/bin/python -m bench.throughput --processes 1 2 --clients 1 32  # fewer runs

For each store and each client count: distinct small queries (a filtered COUNT whose bound
and epsilon change per request, so every one is a fresh release with a budget debit and an
audit append), then cached repeats (a primed set of queries repeated verbatim: the release
cache answers, still with an audit append). Loops are bounded by a request count and a time
limit. For PostgreSQL a throwaway database is created on the DSN's server and dropped after;
the rows are skipped, with the reason, if the server is unreachable or the store fails to open.
The raw DuckDB reference runs the same SQL sequentially from Python on the source file.
``--processes`` runs every store once per ``server.processes`` value (one worker process per
core is the gateway's default; 1 unless given here, as the other benchmarks use).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb

from bench.common import (
    Server,
    dataset,
    log,
    make_deployment,
    markdown_table,
    parser,
    results_path,
    write_section,
)
from bench.load import LoadResult, run_load, small_query

PRIMED = 16  # distinct queries primed for the cached-repeat runs


def cached_query(i: int) -> tuple[str, float]:
    return small_query(i % PRIMED)


async def _create_db(dsn: str) -> str:
    """Create a throwaway database on ``dsn``'s server; return its URL."""
    import asyncpg

    name = f"enclave_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


async def _drop_db(dsn: str, url: str) -> None:
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def raw_qps(src: Path, n: int) -> float:
    con = duckdb.connect(config={"threads": 2})
    table = f"read_parquet('{str(src).replace(chr(39), chr(39) * 2)}')"
    started = time.perf_counter()
    for i in range(n):
        sql = small_query(i)[0].replace("FROM visits", f"FROM {table}")
        con.execute(sql.replace("COUNT(*)", "count(*)")).fetchall()
    seconds = time.perf_counter() - started
    con.close()
    return n / seconds


def bench_store(
    label: str,
    store_url: str,
    args: Any,
    src: Path,
    levels: list[tuple[int, int]],
    limit_s: float,
    processes: int,
) -> list[list[Any]]:
    name = f"throughput-{label}-p{processes}"
    dep = make_deployment(Path(args.out) / "deploy" / name, src, store_url, processes)
    rows: list[list[Any]] = []
    with Server(dep, Path(args.out) / "logs" / f"{name}.log") as server:
        prime = asyncio.run(run_load(server, dep.token, 1, PRIMED, limit_s, small_query))
        _check(prime, args)
        offset = PRIMED
        for clients, count in levels:
            for kind, maker in (("distinct", small_query), ("cached", cached_query)):
                res = asyncio.run(
                    run_load(server, dep.token, clients, count, limit_s, maker, offset)
                )
                if kind == "distinct":
                    offset += count
                _check(res, args)
                if kind == "cached" and res.cached != res.done:
                    raise SystemExit(f"{res.done - res.cached} repeats were not cached")
                rows.append(
                    [label, processes, kind, clients, res.done, res.errors, res.qps]
                    + [res.ms(0.5), res.ms(0.99)]
                )
                log(
                    f"  {label} p{processes} {kind} x{clients}: {res.qps:.0f} q/s,"
                    f" p50 {res.ms(0.5):.1f} ms,"
                    f" p99 {res.ms(0.99):.1f} ms, errors {res.errors}"
                )
    return rows


def _check(res: LoadResult, args: Any) -> None:
    if res.errors and (args.smoke or res.done == 0):
        raise SystemExit(f"{res.errors} requests failed; first: {res.first_error}")


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--postgres-dsn", default=os.environ.get("ENCLAVE_TEST_POSTGRES_DSN"))
    p.add_argument("--time-limit", type=float, default=None, help="seconds per run (cap)")
    p.add_argument(
        "--processes", type=int, nargs="+", default=[1], help="server.processes values to run"
    )
    p.add_argument("--clients", type=int, nargs="+", default=None, help="client counts to run")
    args = p.parse_args()
    rows_n = 2_000 if args.smoke else 100_000
    levels = [(1, 4), (2, 6)] if args.smoke else [(1, 200), (8, 600), (32, 1200), (128, 1600)]
    if args.clients:
        levels = [(c, n) for c, n in levels if c in args.clients] or levels
    limit_s = args.time_limit or (20.0 if args.smoke else 30.0)
    src = dataset(args.out, rows_n)
    table_rows: list[list[Any]] = []
    for processes in args.processes:
        sqlite = "sqlite:///state/enclave.db"
        table_rows += bench_store("sqlite", sqlite, args, src, levels, limit_s, processes)
    notes = []
    if not args.postgres_dsn:
        notes.append("PostgreSQL rows skipped: ENCLAVE_TEST_POSTGRES_DSN is not set.")
    for processes in args.processes if args.postgres_dsn else []:
        url = None
        try:
            url = asyncio.run(_create_db(args.postgres_dsn))
            table_rows += bench_store("postgresql", url, args, src, levels, limit_s, processes)
        except Exception as exc:  # the server or driver is missing: say so, keep SQLite's rows
            notes.append(f"PostgreSQL rows skipped: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            if url is not None:
                asyncio.run(_drop_db(args.postgres_dsn, url))
    raw_n = 20 if args.smoke else 500
    raw = raw_qps(src, raw_n)
    table = markdown_table(
        ["store", "processes", "queries", "clients", "done", "errors", "queries/s", "p50 ms"]
        + ["p99 ms"],
        table_rows,
    )
    note_text = "".join(f"\n\n{n}" for n in notes)
    print(table, f"\n\nraw DuckDB: {raw:.0f} queries/s{note_text}", flush=True)
    body = (
        f"`.venv/bin/python -m bench.throughput` — {rows_n:,} rows. *distinct*: a filtered "
        "COUNT whose bound and epsilon change per request (each a fresh release: plan, DuckDB, "
        "noise, budget debit and audit append in one store transaction). *cached*: "
        f"{PRIMED} primed queries repeated verbatim (release cache; still one audit append "
        "each). Closed loop, each run capped by a request count and "
        f"{limit_s:.0f} s; the aiohttp client runs in the bench process on the same cores. "
        "*processes*: `server.processes`, worker processes sharing one socket (each with its own "
        "event loop, store connection and DuckDB); the load generator competes with them for "
        f"the {os.cpu_count()} cores.\n\n"
        f"{table}\n\nRaw DuckDB on the same SQL over the source file, sequential from Python "
        f"(2 threads): **{raw:.0f} queries/s** ({raw_n} queries).{note_text}\n"
    )
    write_section(results_path(args), "throughput", "Throughput: concurrent small queries", body)


if __name__ == "__main__":
    main()

"""Throughput: concurrent clients sending small queries (100k rows), per state store.

    .venv/bin/python -m bench.throughput                 # SQLite (+ PostgreSQL if configured)
    ENCLAVE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.throughput
    .venv/bin/python -m bench.throughput --smoke         # 1 and 2 clients, a few requests
    .venv/bin/python -m bench.throughput --processes 1 2 # server.processes 1, then 2
    .venv/bin/python -m bench.throughput --processes 1 2 --clients 1 32  # fewer runs
    ENCLAVE_TEST_POSTGRES_DSN=... .venv/bin/python -m bench.throughput --replicas 2 \
        --clients 32 --queries distinct         # one gateway, then two, on one PostgreSQL

For each store and each client count: distinct small queries (a filtered COUNT whose bound
and epsilon change per request, so every one is a fresh release with a budget debit and an
audit append), then cached repeats (a primed set of queries repeated verbatim: the release
cache answers, still with an audit append). Loops are bounded by a request count and a time
limit. For PostgreSQL a throwaway database is created on the DSN's server and dropped after;
the rows are skipped, with the reason, if the server is unreachable or the store fails to open.
The raw DuckDB reference runs the same SQL sequentially from Python on the source file.
``--processes`` runs every store once per ``server.processes`` value (one worker process per
core is the gateway's default; 1 unless given here, as the other benchmarks use).
``--replicas N`` also runs N gateways (whole ``enclave serve`` processes, each with its own
store pool and DuckDB) on one PostgreSQL database, after the one-gateway run on its own
database; the clients are split evenly between the replicas and the row gives their combined
queries/s and every request's latency. Such a run writes the section ``throughput-replicas``,
so the full table of ``throughput`` is kept.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import duckdb

from bench.common import (
    Server,
    create_database,
    dataset,
    drop_database,
    load_text,
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
    replicas: int = 1,
) -> list[list[Any]]:
    name = f"throughput-{label}-p{processes}" + (f"-r{replicas}" if replicas > 1 else "")
    dep = make_deployment(Path(args.out) / "deploy" / name, src, store_url, processes)
    makers = {"distinct": small_query, "cached": cached_query}
    kinds = [k for k in makers if k in args.queries]
    rows: list[list[Any]] = []
    with ExitStack() as stack:
        servers = [
            stack.enter_context(Server(dep, Path(args.out) / "logs" / f"{name}-{r}.log"))
            for r in range(replicas)
        ]  # one deployment folder: one config, store and engine state dir for all replicas
        prime = asyncio.run(run_load(servers, dep.token, 1, PRIMED, limit_s, small_query))
        _check(prime, args)
        offset = PRIMED
        for clients, count in levels:
            for kind in kinds:
                res = asyncio.run(
                    run_load(servers, dep.token, clients, count, limit_s, makers[kind], offset)
                )
                if kind == "distinct":
                    offset += count
                _check(res, args)
                if kind == "cached" and res.cached != res.done:
                    raise SystemExit(f"{res.done - res.cached} repeats were not cached")
                rows.append(
                    [label, replicas, processes, kind, clients, res.done, res.errors, res.qps]
                    + [res.ms(0.5), res.ms(0.99)]
                )
                log(
                    f"  {label} r{replicas} p{processes} {kind} x{clients}: {res.qps:.0f} q/s,"
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
    p.add_argument(
        "--queries",
        nargs="+",
        choices=["distinct", "cached"],
        default=["distinct", "cached"],
        help="which runs (default both)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="N > 1: PostgreSQL only, one gateway and then N gateways on one database",
    )
    args = p.parse_args()
    load_before = load_text()
    rows_n = 2_000 if args.smoke else 100_000
    levels = [(1, 4), (2, 6)] if args.smoke else [(1, 200), (8, 600), (32, 1200), (128, 1600)]
    if args.clients:
        levels = [(c, n) for c, n in levels if c in args.clients] or levels
    limit_s = args.time_limit or (20.0 if args.smoke else 30.0)
    src = dataset(args.out, rows_n)
    table_rows: list[list[Any]] = []
    notes = []
    if args.replicas > 1:
        notes.append("SQLite rows skipped: replicas share a PostgreSQL database.")
    for processes in args.processes if args.replicas == 1 else []:
        sqlite = "sqlite:///state/enclave.db"
        table_rows += bench_store("sqlite", sqlite, args, src, levels, limit_s, processes)
    if not args.postgres_dsn:
        notes.append("PostgreSQL rows skipped: ENCLAVE_TEST_POSTGRES_DSN is not set.")
    runs = sorted({1, args.replicas})
    for processes in args.processes if args.postgres_dsn else []:
        for replicas in runs:  # a fresh database each
            url = None
            try:
                url = asyncio.run(create_database(args.postgres_dsn))
                table_rows += bench_store(
                    "postgresql", url, args, src, levels, limit_s, processes, replicas
                )
            except Exception as exc:  # the server or driver is missing: say so, keep the rest
                notes.append(f"PostgreSQL rows skipped: {type(exc).__name__}: {str(exc)[:200]}")
            finally:
                if url is not None:
                    asyncio.run(drop_database(args.postgres_dsn, url))
    raw_n = 20 if args.smoke else 500
    raw = raw_qps(src, raw_n)
    table = markdown_table(
        ["store", "replicas", "processes", "queries", "clients", "done", "errors", "queries/s"]
        + ["p50 ms", "p99 ms"],
        table_rows,
    )
    note_text = "".join(f"\n\n{n}" for n in notes)
    print(table, f"\n\nraw DuckDB: {raw:.0f} queries/s{note_text}", flush=True)
    command = "`.venv/bin/python -m bench.throughput" + (
        f" --replicas {args.replicas}` — " if args.replicas > 1 else "` — "
    )
    replicas_text = (
        f"*replicas*: {args.replicas} whole gateways (`enclave serve` processes) on one "
        "PostgreSQL database, the clients split evenly between them (client k to replica k mod "
        f"{args.replicas}); queries/s is their combined rate, p50/p99 over every request; the "
        "one-replica rows are one gateway on a database of its own, run just before. "
        if args.replicas > 1
        else ""
    )
    body = (
        f"{command}{rows_n:,} rows. *distinct*: a filtered "
        "COUNT whose bound and epsilon change per request (each a fresh release: plan, DuckDB, "
        "noise, budget debit and audit append in one store transaction). *cached*: "
        f"{PRIMED} primed queries repeated verbatim (release cache; still one audit append "
        "each). Closed loop, each run capped by a request count and "
        f"{limit_s:.0f} s; the aiohttp client runs in the bench process on the same cores. "
        "*processes*: `server.processes`, worker processes sharing one socket (each with its own "
        "event loop, store connection and DuckDB); the load generator competes with them for "
        f"the {os.cpu_count()} cores. {replicas_text}Machine load (`uptime`): {load_before} "
        f"before the run, {load_text()} after."
        f"\n\n{table}\n\nRaw DuckDB on the same SQL over the source file, sequential from Python "
        f"(2 threads): **{raw:.0f} queries/s** ({raw_n} queries).{note_text}\n"
    )
    if args.replicas > 1:
        name, title = "throughput-replicas", "Throughput: replicas on one PostgreSQL"
    else:
        name, title = "throughput", "Throughput: concurrent small queries"
    write_section(results_path(args), name, title, body)


if __name__ == "__main__":
    main()

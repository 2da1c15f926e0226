"""Latency: the full gateway path over HTTP against the raw exact DuckDB query, same file.

    .venv/bin/python -m bench.latency            # 100k, 1M and 10M rows (a few minutes)
    .venv/bin/python -m bench.latency --smoke    # 2,000 rows, 2 repetitions (seconds)

For each size: a fresh bench deployment (``bench/common.py``), the one-time cost of bounding
the dataset version (``engine.bounding.bound_dataset`` timed in this process, into the
deployment's own state folder, so the server then reuses the file), a real ``enclave serve``
subprocess, then for each query shape ``--reps`` alternating pairs: the gateway request (token,
policy, plan, DuckDB over the bounded table, noise, budget debit, audit append) and the raw
exact query on the *source* file from a DuckDB connection with the engine's thread count.
The order inside a pair alternates so that neither side always runs on a warm cache.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb

from bench.common import (
    Deployment,
    QueryError,
    Server,
    dataset,
    log,
    make_deployment,
    markdown_table,
    parser,
    post_query,
    quantile,
    results_path,
    write_section,
)

#: (name, gateway SQL, raw SQL over ``{src}``): the raw side is the plain exact query.
SHAPES: tuple[tuple[str, str, str], ...] = (
    (
        "grouped COUNT+SUM",
        "SELECT region, COUNT(*) AS n, SUM(cost) AS total FROM visits GROUP BY region",
        "SELECT region, count(*) AS n, sum(cost) AS total FROM {src} GROUP BY region",
    ),
    (
        "filtered AVG",
        "SELECT AVG(cost) AS mean_cost FROM visits WHERE age >= 40 AND sex = 'F'",
        "SELECT avg(cost) AS mean_cost FROM {src} WHERE age >= 40 AND sex = 'F'",
    ),
    (
        "MEDIAN",
        "SELECT MEDIAN(cost) AS median_cost FROM visits",
        "SELECT median(cost) AS median_cost FROM {src}",
    ),
    (
        "two-column GROUP BY",
        "SELECT region, sex, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits "
        "GROUP BY region, sex",
        "SELECT region, sex, count(*) AS n, avg(cost) AS mean_cost FROM {src} GROUP BY region, sex",
    ),
)
ENGINE_THREADS = 2  # the engine's default threads (EngineConfig), used for the raw side too


async def bounding_seconds(dep: Deployment) -> tuple[float, int]:
    """Bound the dataset version the server will serve; (seconds, rows kept)."""
    from enclave.config import load_config
    from enclave.engine.bounding import bound_dataset
    from enclave.policy.registry import Registry
    from enclave.store import open_store

    cfg = load_config(dep.config)
    store = open_store(cfg.store.url)
    await store.open()
    try:
        spec = await Registry(store, cfg.policies.dir, cfg.policies.data_dir).dataset("visits")
    finally:
        await store.close()
    assert spec is not None
    started = time.perf_counter()
    target = await asyncio.to_thread(
        bound_dataset,
        spec,
        cfg.engine.state_dir,
        threads=cfg.engine.threads,
        memory_limit=cfg.engine.memory_limit,
    )
    seconds = time.perf_counter() - started
    with duckdb.connect() as con:
        rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(target.path)]).fetchone()
    return seconds, int(rows[0]) if rows else -1


async def measure(
    server: Server, token: str, src: Path, reps: int, warmup: int
) -> list[dict[str, Any]]:
    con = duckdb.connect(config={"threads": ENGINE_THREADS})
    src_sql = f"read_parquet('{str(src).replace(chr(39), chr(39) * 2)}')"
    out = []
    async with aiohttp.ClientSession() as session:
        for shape_no, (name, gw_sql, raw_tpl) in enumerate(SHAPES):
            raw_sql = raw_tpl.format(src=src_sql)
            gw: list[float] = []
            raw: list[float] = []
            failed = 0
            for rep in range(warmup + reps):
                pair = ("gw", "raw") if rep % 2 == 0 else ("raw", "gw")
                for side in pair:
                    if side == "gw":
                        seconds, body, skipped = await _gateway(
                            session, server, token, gw_sql, 1.0 + shape_no * 1e-3, rep
                        )
                        failed += skipped
                        if body.get("cached"):
                            raise RuntimeError("release cache answered a distinct query")
                        if rep >= warmup:
                            gw.append(seconds)
                    else:
                        started = time.perf_counter()
                        con.execute(raw_sql).fetchall()
                        if rep >= warmup:
                            raw.append(time.perf_counter() - started)
            out.append({"shape": name, "gw": gw, "raw": raw, "failed": failed})
            log(
                f"  {name}: gateway p50 {quantile(gw, 0.5) * 1e3:.1f} ms, "
                f"raw p50 {quantile(raw, 0.5) * 1e3:.1f} ms"
            )
    con.close()
    return out


async def _gateway(
    session: aiohttp.ClientSession, server: Server, token: str, sql: str, base: float, rep: int
) -> tuple[float, dict[str, Any], int]:
    """One gateway request with a distinct epsilon (so the cache never answers).

    Some epsilons make the gateway answer 500 "privacy accounting failed" (a float-rounding
    bug in pricing, reported upstream); such a request is counted and the next epsilon is
    tried, so the bug shows in the table instead of aborting the run.
    """
    for attempt in range(20):
        eps = base + rep * 1e-5 + attempt * 1e-7
        try:
            seconds, body = await post_query(session, server, token, sql, eps)
        except QueryError as exc:
            if "privacy accounting failed" not in str(exc):
                raise
            continue
        return seconds, body, attempt
    raise QueryError("20 epsilons in a row failed pricing")


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--sizes", default=None, help="comma-separated row counts")
    p.add_argument("--reps", type=int, default=None)
    args = p.parse_args()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([2_000] if args.smoke else [100_000, 1_000_000, 10_000_000])
    )
    reps = args.reps or (2 if args.smoke else 25)
    warmup = 1 if args.smoke else 3
    lat_rows: list[list[Any]] = []
    bound_rows: list[list[Any]] = []
    for rows in sizes:
        src = dataset(args.out, rows)
        dep = make_deployment(Path(args.out) / "deploy" / f"latency-{rows}", src)
        log(f"{rows:,} rows: bounding ...")
        bound_s, kept = asyncio.run(bounding_seconds(dep))
        with Server(dep, Path(args.out) / "logs" / f"latency-{rows}.log") as server:
            bound_rows.append([f"{rows:,}", f"{kept:,}", bound_s, server.ready_s])
            log(f"{rows:,} rows: bounded in {bound_s:.2f}s; server ready in {server.ready_s:.2f}s")
            for r in asyncio.run(measure(server, dep.token, src, reps, warmup)):
                g50, g95 = quantile(r["gw"], 0.5) * 1e3, quantile(r["gw"], 0.95) * 1e3
                r50, r95 = quantile(r["raw"], 0.5) * 1e3, quantile(r["raw"], 0.95) * 1e3
                lat_rows.append(
                    [f"{rows:,}", r["shape"], g50, g95, r50, r95, g50 / r50, g50 - r50, r["failed"]]
                )
    lat_table = markdown_table(
        [
            "rows",
            "shape",
            "gateway p50 ms",
            "gateway p95 ms",
            "raw p50 ms",
            "raw p95 ms",
            "ratio p50",
            "gateway − raw p50 ms",
            "500s skipped",
        ],
        lat_rows,
    )
    bound_table = markdown_table(
        ["source rows", "bounded rows", "bounding s (one-time)", "server start s (bounded)"],
        bound_rows,
    )
    print(lat_table, "\n\n" + bound_table, flush=True)
    body = (
        f"`.venv/bin/python -m bench.latency` — {reps} alternating pairs per shape after "
        f"{warmup} warm-up pairs; epsilon varies by 1e-5 per request so every gateway request "
        "is a fresh release (cache never answers); *500s skipped* counts requests answered 500 "
        "(retried with the next epsilon; none are expected since the pricing fix). "
        "Gateway: `enclave serve` subprocess, HTTP "
        "over loopback, aiohttp client in the bench process. Raw: the exact query with DuckDB "
        f"({ENGINE_THREADS} threads) from Python on the *source* Parquet file.\n\n"
        f"{lat_table}\n\nOne-time cost of bounding a dataset version (per-unit truncation to "
        f"k rows, written as Parquet), and server start once it exists:\n\n{bound_table}\n"
    )
    write_section(results_path(args), "latency", "Latency: gateway vs raw DuckDB", body)


if __name__ == "__main__":
    main()

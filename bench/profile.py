"""Where a request's time goes: the gateway under pyinstrument, and the engine's SQL alone.

    .venv/bin/pip install pyinstrument                       # once (not a gateway dependency)
    .venv/bin/python -m bench.profile                        # 100k rows, small queries
    .venv/bin/python -m bench.profile --rows 10000000 --shape 0 --requests 40

Part 1 runs ``enclave serve`` under ``python -m pyinstrument`` (main thread, i.e. the event
loop: time in Python per request, and how long the loop sits idle waiting for DuckDB and
SQLite threads), sends ``--requests`` distinct queries one at a time, stops the server with
SIGINT and keeps the text report in ``bench/out/profile-<rows>.txt``.

``--plain`` runs the server without the profiler and reports its CPU time per request
(user + system, all threads, from ``/proc/<pid>/stat``): on a shared machine that is steadier
than wall time, and it is the number to compare before and after a change.

Part 2 times, in this process, the SQL the gateway actually runs (``compile_plan`` over the
bounded table) against the raw query on the source file and the raw query on the bounded
file, so the engine's share of a request is split into "bounded table" and "compiled SQL".
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb

from bench.common import (
    Server,
    dataset,
    log,
    make_deployment,
    parser,
    post_query,
    quantile,
)
from bench.latency import SHAPES, bounding_seconds
from bench.load import small_query


async def drive(
    server: Server, token: str, requests: int, shape: int | None, first: int = 0
) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as session:
        for i in range(first, first + requests):
            if shape is None:
                sql, eps = small_query(i)
            else:
                sql, eps = SHAPES[shape][1], 1.0 + i * 1e-5
            seconds, _ = await post_query(session, server, token, sql, eps)
            times.append(seconds)
    return times


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def compiled_sql(config: Path, sql: str) -> tuple[str, list[Any], Path]:
    from enclave.config import load_config
    from enclave.engine.bounding import bounded_target, load_or_create_key
    from enclave.policy.registry import Registry
    from enclave.query.compile import compile_plan
    from enclave.query.parse import parse_query
    from enclave.store import open_store

    cfg = load_config(config)
    store = open_store(cfg.store.url)
    await store.open()
    try:
        spec = await Registry(store, cfg.policies.dir, cfg.policies.data_dir).dataset("visits")
    finally:
        await store.close()
    assert spec is not None
    state = Path(cfg.engine.state_dir).resolve()
    target = bounded_target(spec, state, load_or_create_key(state))
    compiled = compile_plan(parse_query(sql, spec), spec, "bench_bounded")
    return compiled.sql, list(compiled.params), target.path


def engine_split(dep_config: Path, src: Path, reps: int) -> None:
    con = duckdb.connect(config={"threads": 2})
    for name, sql, raw in SHAPES:
        gw_sql, params, bounded = asyncio.run(compiled_sql(dep_config, sql))
        con.execute(
            f"CREATE OR REPLACE VIEW bench_bounded AS SELECT * FROM read_parquet('{bounded}')"  # noqa: S608
        )
        cases = {
            "raw on source": (raw.format(src=f"read_parquet('{src}')"), []),
            "raw on bounded": (raw.format(src=f"read_parquet('{bounded}')"), []),
            "compiled (gateway SQL)": (gw_sql, params),
        }
        line = []
        for label, (q, ps) in cases.items():
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                con.execute(q, ps).fetchall()
                times.append(time.perf_counter() - started)
            line.append(f"{label} {quantile(times, 0.5) * 1e3:.1f} ms")
        print(f"{name}: " + ", ".join(line), flush=True)
    print("\ncompiled SQL of the last shape:\n" + gw_sql, flush=True)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--shape", type=int, default=None, help="index into latency SHAPES")
    p.add_argument("--plain", action="store_true", help="no profiler: CPU ms per request")
    p.add_argument("--label", default="", help="suffix of the report file name")
    args = p.parse_args()
    rows = 2_000 if args.smoke else args.rows
    src = dataset(args.out, rows)
    dep = make_deployment(Path(args.out) / "deploy" / f"profile-{rows}", src)
    asyncio.run(bounding_seconds(dep))
    report = Path(args.out) / f"profile-{rows}{args.label}.txt"
    prefix = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(report), "-m"]
    if args.plain:
        prefix = [sys.executable, "-m"]
    server = Server(dep, Path(args.out) / "logs" / f"profile-{rows}.log", [*prefix, "enclave"])
    with server:
        assert server.proc is not None
        asyncio.run(drive(server, dep.token, 20, args.shape))  # warm-up, not counted
        cpu0, load = cpu_seconds(server.proc.pid), os.getloadavg()
        times = asyncio.run(drive(server, dep.token, args.requests, args.shape, 20))
        cpu = cpu_seconds(server.proc.pid) - cpu0
    per = cpu / len(times) * 1e3
    where = "no profiler" if args.plain else f"report: {report}"
    log(f"{len(times)} requests, p50 {quantile(times, 0.5) * 1e3:.1f} ms, server CPU {per:.2f} ms")
    log(f"per request; load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}; {where}")
    if not args.plain:
        engine_split(dep.config, src, 3 if args.smoke else 7)


if __name__ == "__main__":
    main()

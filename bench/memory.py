"""Memory: peak RSS (``VmHWM``) of a real gateway process serving the 10M-row dataset.

    .venv/bin/python -m bench.memory           # 10M rows
    .venv/bin/python -m bench.memory --smoke   # 2,000 rows

Two server lifetimes on one deployment, read from ``/proc/<pid>/status``:

1. *cold start*: no bounded table yet, so the server bounds the dataset version inside its own
   process at startup (``services_ctx``); ``VmHWM`` once ready includes that peak.
2. *warm start*: restarted on the same state folder (the bounded Parquet file is reused);
   ``VmHWM`` once ready, then after the throughput load (distinct small queries at 32 and 128
   clients, as ``bench.throughput``) plus every latency shape (grouped, filtered, MEDIAN,
   two-column) a few times each, all against the 10M-row dataset.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    Server,
    dataset,
    log,
    make_deployment,
    markdown_table,
    parser,
    post_query,
    results_path,
    write_section,
)
from bench.latency import SHAPES
from bench.load import run_load, small_query

TARGET_MIB = 1536


async def shapes(server: Server, token: str, reps: int) -> None:
    async with aiohttp.ClientSession() as session:
        for shape_no, (_name, sql, _raw) in enumerate(SHAPES):
            for rep in range(reps):
                eps = 2.0 + shape_no * 1e-3 + rep * 1e-5
                try:
                    await post_query(session, server, token, sql, eps)
                except Exception:
                    log(f"  a {_name} request failed (ignored for memory)")


def mib(kib: int) -> float:
    return kib / 1024


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rows", type=int, default=None)
    args = p.parse_args()
    n = args.rows or (2_000 if args.smoke else 10_000_000)
    levels = [(2, 10)] if args.smoke else [(32, 1200), (128, 1600)]
    src = dataset(args.out, n)
    dep = make_deployment(Path(args.out) / "deploy" / f"memory-{n}", src)
    logs = Path(args.out) / "logs"
    rows: list[list[Any]] = []
    log(f"{n:,} rows: cold start (bounds in-process) ...")
    with Server(dep, logs / f"memory-{n}-cold.log") as server:
        rows.append(
            [
                "cold start, ready (includes bounding)",
                mib(server.status("VmHWM")),
                mib(server.status("VmRSS")),
                f"{server.ready_s:.1f} s to ready",
            ]
        )
    log(f"{n:,} rows: warm start + load ...")
    with Server(dep, logs / f"memory-{n}-warm.log") as server:
        rows.append(
            [
                "warm start, ready",
                mib(server.status("VmHWM")),
                mib(server.status("VmRSS")),
                f"{server.ready_s:.1f} s to ready",
            ]
        )
        done = 0
        for clients, count in levels:
            res = asyncio.run(run_load(server, dep.token, clients, count, 60.0, small_query, done))
            done += count
            if res.errors and args.smoke:
                raise SystemExit(f"{res.errors} requests failed: {res.first_error}")
            rows.append(
                [
                    f"after {res.done} small queries at {clients} clients",
                    mib(server.status("VmHWM")),
                    mib(server.status("VmRSS")),
                    f"{res.qps:.0f} q/s, {res.errors} errors",
                ]
            )
        reps = 1 if args.smoke else 3
        asyncio.run(shapes(server, dep.token, reps))
        rows.append(
            [
                f"after the 4 latency shapes x{reps}",
                mib(server.status("VmHWM")),
                mib(server.status("VmRSS")),
                "",
            ]
        )
    table = markdown_table(["phase", "VmHWM MiB (peak)", "VmRSS MiB (now)", "note"], rows)
    peak = max(r[1] for r in rows)
    verdict = "within" if peak < TARGET_MIB else "OVER"
    print(table, f"\n\npeak {peak:.0f} MiB ({verdict} the {TARGET_MIB} MiB target)", flush=True)
    body = (
        f"`.venv/bin/python -m bench.memory` — {n:,} rows, one `enclave serve` process "
        "(engine defaults: memory_limit 2GB, threads 2, workers 4), `/proc/<pid>/status`.\n\n"
        f"{table}\n\nPeak: **{peak:.0f} MiB** ({verdict} the {TARGET_MIB} MiB target).\n"
    )
    write_section(results_path(args), "memory", "Memory: peak RSS of the gateway", body)


if __name__ == "__main__":
    main()

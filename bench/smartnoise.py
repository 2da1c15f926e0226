"""Against SmartNoise SQL: the same data and queries, with the same max_ids and bounds.

    .venv/bin/python -m bench.smartnoise           # 1M and 10M rows (first run installs)
    .venv/bin/python -m bench.smartnoise --smoke   # 2,000 rows (needs the venv; installs it)

smartnoise-sql pins an older OpenDP, so it lives in its own virtual environment,
``bench/out/snvenv`` (created with ``python3 -m venv`` and ``pip install smartnoise-sql duckdb
pandas`` on first use; PyPI must be reachable). ``bench/smartnoise_worker.py`` runs inside it:
SmartNoise's PostgreSQL dialect over DuckDB through a small DB-API adapter (not the pandas
reader), on the same Parquet source file, ``max_ids`` = our ``max_rows_per_unit`` (5), the
declared bounds, epsilon 1.0 per query, the same 2 threads and 2GB memory limit (spilling to
bench/out/snvenv-spill like our bounding step; a query that still runs out of memory is
reported so and measured again with 12GB). The gateway side is a real ``enclave serve`` timed
exactly as in ``bench.latency`` (the same run also times raw DuckDB for reference); the server
is stopped before SmartNoise runs so that the two never share the cores.

What each side does per query: SmartNoise samples ``max_ids`` rows per person *in every query*
(a window over the whole table), then clamps, aggregates and adds noise. The gateway reads a
table bounded once per dataset version, so its query costs what a plain aggregate costs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    OUT,
    REPO,
    Server,
    dataset,
    log,
    make_deployment,
    markdown_table,
    parser,
    quantile,
    results_path,
    write_section,
)
from bench.latency import SHAPES, bounding_seconds, measure

WORKER = REPO / "bench" / "smartnoise_worker.py"
PACKAGES = ("smartnoise-sql", "duckdb", "pandas")


def ensure_venv(venv: Path) -> Path:
    py = Path(venv) / "bin" / "python"
    if py.exists():
        check = subprocess.run(
            [str(py), "-c", "import snsql, duckdb"], capture_output=True, check=False
        )
        if check.returncode == 0:
            return py
    log(f"creating {py.parent.parent} (python3 -m venv) ...")
    subprocess.run([sys.executable, "-m", "venv", str(py.parent.parent)], check=True)
    log(f"pip install {' '.join(PACKAGES)} (this can take a few minutes) ...")
    subprocess.run(
        [str(py), "-m", "pip", "install", "--progress-bar", "off", *PACKAGES], check=True
    )
    log("smartnoise environment ready")
    return py


def run_worker(py: Path, src: Path, reps: int, warmup: int) -> dict[str, Any]:
    job = {
        "parquet": str(src),
        "threads": 2,
        "memory_limit": "2GB",
        "retry_memory_limit": "12GB",
        "temp_dir": str(src.parent.parent / "snvenv-spill"),
        "reps": reps,
        "warmup": warmup,
        "epsilon": 1.0,
        "delta": 1e-6,
        "max_ids": 5,
        "queries": [
            [name, sql.replace("FROM visits", "FROM bench.visits")] for name, sql, _raw in SHAPES
        ],
    }
    proc = subprocess.run(
        [str(py), str(WORKER), json.dumps(job)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"smartnoise worker failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--sizes", default=None, help="comma-separated row counts")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--venv", type=Path, default=OUT / "snvenv", help="smartnoise venv folder")
    args = p.parse_args()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([2_000] if args.smoke else [1_000_000, 10_000_000])
    )
    reps = args.reps or (1 if args.smoke else 5)
    warmup = 1
    py = ensure_venv(args.venv)
    rows: list[list[Any]] = []
    versions: dict[str, str] = {}
    errors: list[str] = []
    for n in sizes:
        src = dataset(args.out, n)
        dep = make_deployment(Path(args.out) / "deploy" / f"smartnoise-{n}", src)
        asyncio.run(bounding_seconds(dep))
        with Server(dep, Path(args.out) / "logs" / f"smartnoise-{n}.log") as server:
            ours = {
                r["shape"]: r for r in asyncio.run(measure(server, dep.token, src, reps, warmup))
            }
        log(f"{n:,} rows: smartnoise-sql ...")
        theirs = run_worker(py, src, reps, warmup)
        versions = theirs["versions"]
        for name, _sql, _raw in SHAPES:
            g50 = quantile(ours[name]["gw"], 0.5) * 1e3
            r50 = quantile(ours[name]["raw"], 0.5) * 1e3
            sn = theirs["queries"][name]
            if sn["error"]:
                what = "unsupported" if "Bad token" in sn["error"] else sn["error"].split(":")[0]
                rows.append([f"{n:,}", name, g50, what, "–", r50])
                errors.append(f"{n:,} rows, {name}: {sn['error'][:160]}")
                log(f"  {name}: smartnoise error {sn['error'][:120]}")
                continue
            s50 = quantile(sn["times"], 0.5) * 1e3
            cell: Any = s50
            if sn.get("oom_at"):
                cell = f"{s50:.2f} (out of memory at {sn['oom_at']}; 12GB)"
            rows.append([f"{n:,}", name, g50, cell, s50 / g50, r50])
            log(f"  {name}: gateway {g50:.1f} ms, smartnoise {s50:.1f} ms")
    table = markdown_table(
        [
            "rows",
            "shape",
            "gateway p50 ms",
            "smartnoise-sql p50 ms",
            "smartnoise / gateway",
            "raw DuckDB p50 ms",
        ],
        rows,
    )
    print(table, flush=True)
    body = (
        "`.venv/bin/python -m bench.smartnoise` — smartnoise-sql "
        f"{versions.get('smartnoise-sql')} (OpenDP {versions.get('opendp')}, DuckDB "
        f"{versions.get('duckdb')}) in `bench/out/snvenv`, PostgreSQL dialect over DuckDB "
        "through a DB-API adapter (`bench/smartnoise_worker.py`; its `ORDER BY RANDOM()` "
        "window, refused by DuckDB 2.0, is rewritten to order by a `random()` column computed "
        "just below it), on the same Parquet file. `max_ids` 5 and bounds as ours, "
        "`censor_dims` off (we release the declared groups), epsilon 1.0, delta 1e-6. "
        f"p50 of {reps} runs after {warmup} warm-up; the gateway is timed over HTTP as in "
        "the latency benchmark. SmartNoise SQL has no MEDIAN (its parser refuses it).\n\n"
        f"{table}\n" + "".join(f"\n- {e}" for e in errors) + "\n"
    )
    write_section(results_path(args), "smartnoise", "Against SmartNoise SQL", body)


if __name__ == "__main__":
    main()

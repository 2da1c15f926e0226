"""Timing: from "data read" to the released table, for an empty and a full key set.

    .venv/bin/python -m bench.timing            # 1M rows (about two minutes)
    .venv/bin/python -m bench.timing --smoke    # 5,000 rows (seconds)

What a caller can time is the step after the engine has returned its rows: building the
exact groups, partition selection, noise, ordering and the digest. If that step grew with the
data, its duration would tell how many keys a filter matched (issue: 650-720 ms for ~17k keys
against 13-16 ms for none, both releasing nothing). This benchmark runs the gateway's own
code in-process on a real bench deployment: the engine's ``Warehouse`` bounds the synthetic
visits and runs the compiled SQL (not timed), then the step the pipeline times out of
``dp.deadline.padded`` is timed, once with no deadline (the raw work) and once padded to
``server.release_deadline_ms`` (what a caller observes). Cases, each over a filter that
matches nothing and over one that matches many:

- ``GROUP BY cost`` (a float column, so its keys are undeclared and high-cardinality);
- ``MEDIAN(cost)`` (a quantile from the histogram; not padded: its work is ``O(candidates)``).
"""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import (
    dataset,
    log,
    make_deployment,
    markdown_table,
    parser,
    quantile,
    results_path,
    write_section,
)

#: (case, gateway SQL): the filters match no row, or many
CASES: tuple[tuple[str, str], ...] = (
    (
        "GROUP BY cost, empty",
        "SELECT cost, COUNT(*) AS n FROM visits WHERE age = 200 GROUP BY cost",
    ),
    (
        "GROUP BY cost, some",
        "SELECT cost, COUNT(*) AS n FROM visits WHERE age = 30 AND region = 'north' GROUP BY cost",
    ),
    (
        "GROUP BY cost, full",
        "SELECT cost, COUNT(*) AS n FROM visits WHERE age BETWEEN 30 AND {hi} GROUP BY cost",
    ),
    ("MEDIAN, empty", "SELECT MEDIAN(cost) AS m FROM visits WHERE age = 200"),
    ("MEDIAN, full", "SELECT MEDIAN(cost) AS m FROM visits"),
)


async def measure(config: Path, rows: int, reps: int) -> list[list[Any]]:
    from enclave.config import load_config
    from enclave.dp.deadline import deadline_for, padded
    from enclave.dp.mechanisms import price_plan
    from enclave.dp.release import release
    from enclave.engine.warehouse import Warehouse
    from enclave.pipeline import declared_group_count
    from enclave.policy.registry import Registry
    from enclave.query.compile import assemble, compile_plan
    from enclave.query.parse import parse_query
    from enclave.store import open_store

    cfg = load_config(config)
    store = open_store(cfg.store.url)
    await store.open()
    try:
        spec = await Registry(store, cfg.policies.dir, cfg.policies.data_dir).dataset("visits")
        tiers = await Registry(store, cfg.policies.dir, cfg.policies.data_dir).tier_map()
    finally:
        await store.close()
    assert spec is not None
    tier = tiers["accredited"]
    deadline_ms = cfg.server.release_deadline_ms
    warehouse = Warehouse(cfg.engine)
    await warehouse.open()
    out: list[list[Any]] = []
    try:
        table = await warehouse.prepare(spec)
        hi = 31 if rows >= 500_000 else 60  # about 17k distinct costs at 1M rows
        for case, sql in CASES:
            plan = parse_query(sql.format(hi=hi), spec)
            groups = declared_group_count(plan, spec)
            priced = price_plan(plan, spec, tier, Decimal("1.0"), groups)
            compiled = compile_plan(plan, spec, table)
            engine_rows = await warehouse.run(compiled, 120)
            hist = compiled.stats.index("a0_values") if "a0_values" in compiled.stats else -1
            values = engine_rows[0][hist] if hist >= 0 and engine_rows else None
            read = sum(int(n) for n in values.values()) if isinstance(values, dict) else 0
            keys = len(engine_rows) if plan.group_by else read
            deadline = deadline_for(priced, deadline_ms)
            timings: dict[float, list[float]] = {0.0: [], deadline: []}
            released = 0
            for rep in range(reps * 2):
                pad = 0.0 if rep % 2 == 0 else deadline

                def step(
                    q: Any = plan, p: Any = priced, c: Any = compiled, r: Any = engine_rows
                ) -> Any:
                    return release(q, spec, tier, p, assemble(c, r))

                started = time.perf_counter()
                table_out = await padded(step, pad)
                timings[pad].append(time.perf_counter() - started)
                released = len(table_out.rows)
            raw50 = quantile(timings[0.0], 0.5) * 1e3
            pad50 = quantile(timings[deadline], 0.5) * 1e3
            pad95 = quantile(timings[deadline], 0.95) * 1e3
            label = "keys" if plan.group_by else "values"
            out.append([case, f"{keys:,} {label}", released, raw50, deadline * 1e3, pad50, pad95])
            log(f"{case}: {keys:,} {label}, raw {raw50:.1f} ms, padded {pad50:.1f} ms")
    finally:
        await warehouse.close()
    return out


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
    args = p.parse_args()
    rows = args.rows or (5_000 if args.smoke else 1_000_000)
    reps = args.reps or (2 if args.smoke else 15)
    src = dataset(args.out, rows)
    dep = make_deployment(Path(args.out) / "deploy" / f"timing-{rows}", src)
    log(f"{rows:,} rows: bounding and measuring ...")
    results = asyncio.run(measure(dep.config, rows, reps))
    table = markdown_table(
        [
            "step",
            "data matched",
            "groups released",
            "work p50 ms",
            "deadline ms",
            "observed p50 ms",
            "observed p95 ms",
        ],
        results,
    )
    print(table, flush=True)
    empty, full = results[0], results[2]
    keys = int(str(full[1]).split()[0].replace(",", ""))
    slope = (full[3] - empty[3]) / max(keys, 1) * 1e3
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    body = (
        f"`.venv/bin/python -m bench.timing` — {rows:,} synthetic visits, `accredited` tier, "
        f"epsilon 1, {reps} runs of each. The step timed is the pipeline's, from the engine's "
        "rows to the released table (`assemble` + `release`), run through "
        "`dp.deadline.padded`: *work* with no deadline, *observed* padded to "
        "`server.release_deadline_ms` (undeclared keys only; a quantile is not padded). "
        "The engine's own run is not included. "
        f"Load average while it ran: {load} (1, 5, 15 min).\n\n"
        f"{table}\n\n"
        f"Work grows by {slope:.1f} us per distinct key found (full against empty), almost all "
        "of it OpenDP sampling one noise value per key; a quantile's work is bounded by its "
        "candidate count, not the rows (no row is expanded).\n"
    )
    write_section(results_path(args), "timing", "Timing: data read to release", body)


if __name__ == "__main__":
    main()

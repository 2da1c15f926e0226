"""Accuracy targets: the CPU an accuracy-first request costs before any charge.

    .venv/bin/python -m bench.accuracy_search
    .venv/bin/python -m bench.accuracy_search --label before   # its own section, kept beside
    .venv/bin/python -m bench.accuracy_search --smoke

A request that gives ``"accuracy"`` instead of an epsilon is free until data is read, and the
epsilon search (``dp/target.py``) runs first. This times, in this process, what such a request
does before anything is charged: ``choose_epsilon`` then ``price_plan`` at the chosen epsilon,
for the shipped ``visits`` dataset and ``standard`` tier, at a one-aggregate query, a typical
grouped one and the largest one the parser accepts (``MAX_AGGREGATES`` aggregates,
``MAX_QUANTILES`` of them quantiles).
Each request asks for a slightly different target, so no two share an epsilon and nothing is
answered from the pricing caches (as a researcher varying the target would make it); one
warm-up request per shape is not counted. CPU is ``time.process_time`` (this process, all
threads), steadier than wall time on a shared machine: milliseconds of the search alone
(p50) and of the search and the price (p50, max).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import (
    REPO,
    load_text,
    log,
    markdown_table,
    parser,
    results_path,
    write_section,
)
from enclave.dp.mechanisms import enable_dp, price_plan
from enclave.dp.target import choose_epsilon
from enclave.ledger.grid import epsilon_down, epsilon_value
from enclave.pipeline import declared_group_count
from enclave.policy.files import load_policy_dir
from enclave.query.parse import MAX_AGGREGATES, MAX_QUANTILES, parse_query

SMALL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
TYPICAL = (
    "SELECT region, sex, COUNT(*) AS n, SUM(cost) AS total, AVG(age) AS mean_age "
    "FROM visits GROUP BY region, sex"
)


def largest() -> str:
    """The parser's largest query: MAX_AGGREGATES aggregates, MAX_QUANTILES quantiles."""
    cols = [f"QUANTILE_CONT(cost, {0.05 + 0.09 * i:.2f}) AS q{i}" for i in range(MAX_QUANTILES)]
    kinds = ("COUNT(*)", "SUM(age)", "SUM(cost)", "AVG(cost)")
    cols += [f"{kinds[i % 4]} AS a{i}" for i in range(MAX_AGGREGATES - MAX_QUANTILES)]
    return f"SELECT region, {', '.join(cols)} FROM visits GROUP BY region"  # noqa: S608


#: shape, SQL, targeted columns (each target a multiple of its ci95 at the tier's cap)
SHAPES = (
    ("small", SMALL, ("n",)),
    ("typical", TYPICAL, ("n", "total")),
    ("largest", largest(), ("a0", "a1")),
)


def measure(
    sql: str, aliases: tuple[str, ...], requests: int
) -> tuple[int, int, list[tuple[float, float]]]:
    """The plan's aggregates and quantiles, and the CPU seconds of each request's search, and
    of its search and price (targets varied per request; a warm-up first, not counted)."""
    policies = load_policy_dir(REPO / "policies", REPO / "data", require_source=False)
    spec, tier = policies.datasets["visits"], policies.tiers["standard"]
    plan = parse_query(sql, spec)
    groups = declared_group_count(plan, spec)
    cap = epsilon_value(epsilon_down(tier.max_epsilon_per_query))
    at_cap = price_plan(plan, spec, tier, cap, groups).accuracy
    base = {a: 4.0 * float(at_cap[a]["ci95"] or 0.0) for a in aliases}
    times = []
    for i in range(requests + 1):
        targets = {a: t * (1.0 + 0.013 * i) for a, t in base.items()}
        start = time.process_time()
        chosen = choose_epsilon(plan, spec, tier, groups, targets)
        searched = time.process_time()
        price_plan(plan, spec, tier, chosen.epsilon, groups)
        times.append((searched - start, time.process_time() - start))
    quantiles = sum(1 for a in plan.aggregates if a.kind == "quantile")
    return len(plan.aggregates), quantiles, times[1:]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20, help="requests per shape")
    p.add_argument("--label", default=None, help="write the section accuracy_search-LABEL")
    args = p.parse_args()
    load_before = load_text()
    requests = 2 if args.smoke else args.requests
    enable_dp()
    rows: list[list[Any]] = []
    for shape, sql, aliases in SHAPES:
        aggregates, quantiles, seconds = measure(sql, aliases, requests)
        search = [s * 1000 for s, _ in seconds]
        ms = [t * 1000 for _, t in seconds]
        row = [shape, aggregates, quantiles, requests, statistics.median(search)]
        rows.append([*row, statistics.median(ms), max(ms)])
        log(f"{shape}: {rows[-1]}")
    headers = ["shape", "aggregates", "quantiles", "requests", "search p50"]
    headers += ["search + price p50", "search + price max"]
    table = markdown_table(headers, rows)
    print(table)
    body = (
        "`.venv/bin/python -m bench.accuracy_search"
        + (f" --label {args.label}" if args.label else "")
        + "`: CPU milliseconds per accuracy-first request before any charge (the epsilon "
        "search, then the price at the chosen epsilon), in process, `standard` tier, targets "
        "varied per request. Machine load (`uptime`): "
        f"{load_before} before the run, {load_text()} after.\n\n{table}\n"
    )
    name = "accuracy_search" + (f"-{args.label}" if args.label else "")
    title = "Accuracy targets: CPU per request" + (f" ({args.label})" if args.label else "")
    write_section(results_path(args), name, title, body)


if __name__ == "__main__":
    main()

"""Flood: does one licence sending long refused SQL slow another user down?

    .venv/bin/python -m bench.flood            # 100 refused ~7 KB statements per scenario
    .venv/bin/python -m bench.flood --smoke    # 10 statements, a few probes

A second user (no licence; ``GET /v1/budget`` is still a full authenticated request with a
store read) probes the gateway sequentially, first on an idle server, then while one
licence sends ``--statements`` statements of ~7 KB that the SQL parser refuses, from
``--clients`` concurrent connections. Two floods: on the bench tier (a huge rate limit, so
every statement is parsed: this measures parsing off the event loop) and on the shipped
``standard`` tier (60 a minute: the licence limit refuses the rest before parsing). The table
gives the probe's latency (median, p95, max; ``/healthz`` alongside, which touches only the
event loop, to tell a stalled loop from a queue at the store) and the flood's answers by
status. Nothing is asserted: speed is measured here, not in tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench.common import (
    AUDIENCE,
    ISSUER,
    Deployment,
    Server,
    add_licence,
    dataset,
    log,
    make_deployment,
    markdown_table,
    parser,
    quantile,
    results_path,
    write_section,
)

JUNK = "SELEKT " + "x, " * 2300 + "x FROM visits"  # ~7 KB the parser refuses


def mint(deployment: Deployment, subject: str) -> str:
    from enclave.devkeys import mint_token

    return mint_token(
        deployment.folder / "keys" / "private.pem",
        sub=subject,
        roles=["researcher"],
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_s=3600,
        kid="bench-key",
    )


async def probe(
    session: aiohttp.ClientSession, url: str, token: str, n: int
) -> tuple[list[float], list[float]]:
    """``n`` rounds of ``GET /v1/budget`` then ``GET /healthz`` (no token, no store: only the
    event loop); the latencies of each."""
    headers = {"Authorization": f"Bearer {token}"}
    budget: list[float] = []
    health: list[float] = []
    for _ in range(n):
        for path, hdrs, out in (("/v1/budget", headers, budget), ("/healthz", {}, health)):
            started = time.perf_counter()
            async with session.get(url + path, headers=hdrs) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            out.append(time.perf_counter() - started)
    return budget, health


async def flood(
    session: aiohttp.ClientSession, url: str, token: str, statements: int, clients: int
) -> Counter[int]:
    statuses: Counter[int] = Counter()
    body = {"dataset": "visits", "sql": JUNK}
    headers = {"Authorization": f"Bearer {token}"}
    left = statements

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url + "/v1/queries", json=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


Latencies = tuple[list[float], list[float]]


async def scenario(
    url: str, flooder: str, prober: str, statements: int, clients: int, probes: int
) -> tuple[Latencies, Latencies, Counter[int]]:
    async with aiohttp.ClientSession() as session:
        idle = await probe(session, url, prober, probes)
        flood_task = asyncio.create_task(flood(session, url, flooder, statements, clients))
        busy: Latencies = ([], [])
        while not flood_task.done():
            budget, health = await probe(session, url, prober, 1)
            busy[0].extend(budget)
            busy[1].extend(health)
        return idle, busy, await flood_task


def row(name: str, lat: Latencies) -> list[object]:
    budget = [quantile(lat[0], q) * 1e3 for q in (0.5, 0.95, 1.0)]
    return [name, len(lat[0]), *budget, quantile(lat[1], 0.5) * 1e3, quantile(lat[1], 1.0) * 1e3]


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--statements", type=int, default=100)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--probes", type=int, default=50)
    args = p.parse_args()
    if args.smoke:
        args.statements, args.probes = 10, 5
    data = dataset(args.out, 1_000 if args.smoke else 100_000)
    deployment = make_deployment(Path(args.out) / "deploy" / "flood", data)
    asyncio.run(add_licence(deployment.config, "standard-user", "standard", days=1))
    log_path = Path(args.out) / "logs" / "flood.log"
    rows: list[list[object]] = []
    with Server(deployment, log_path) as server:
        prober = mint(deployment, "prober")
        for label, flooder in (
            ("bench tier (every statement parsed)", deployment.token),
            ("standard tier (60/min licence limit)", mint(deployment, "standard-user")),
        ):
            log(f"flood: {label}")
            idle, busy, statuses = asyncio.run(
                scenario(server.url, flooder, prober, args.statements, args.clients, args.probes)
            )
            answers = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
            rows.append([*row(f"idle, before {label}", idle), "-"])
            rows.append([*row(f"during {label}", busy), answers])
    headers = ["phase", "rounds", "budget median ms", "budget p95 ms", "budget max ms"]
    headers += ["healthz median ms", "healthz max ms", "flood answers"]
    table = markdown_table(headers, rows)
    print(table)
    body = (
        f"{args.statements} statements of {len(JUNK):,} characters that the parser refuses, "
        f"from {args.clients} connections of one licence, while another user probes "
        f"`GET /v1/budget` one request at a time.\n\n{table}\n"
    )
    write_section(results_path(args), "flood", "Flood: refused SQL against another user", body)


if __name__ == "__main__":
    main()

"""A bounded closed-loop load generator: ``clients`` tasks share one request counter and stop
at ``count`` requests or ``time_limit_s``, whichever comes first (so a slow configuration
cannot make a run endless). Each task sends its next request as soon as the previous answer
arrived; latency is measured per request on the client, throughput as completed / wall time.
Given several servers (replicas of one gateway), client ``k`` sends to server ``k mod n``, so
the clients are split evenly between them and the result is their combined throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from bench.common import QueryError, Server, post_query, quantile

#: i -> (sql, epsilon); distinct i must give a distinct (sql, epsilon) unless repeats are meant.
QueryMaker = Callable[[int], tuple[str, float]]


@dataclass
class LoadResult:
    clients: int
    done: int = 0
    errors: int = 0
    cached: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None

    @property
    def qps(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else float("nan")

    def ms(self, q: float) -> float:
        return quantile(self.latencies, q) * 1e3


def small_query(i: int) -> tuple[str, float]:
    """A distinct small query per ``i``: a filtered count, epsilon nudged by one grid unit
    (1e-6) per request."""
    sql = f"SELECT COUNT(*) AS n FROM visits WHERE age >= {i % 90}"  # noqa: S608 - an int
    return sql, 0.5 + i * 1e-6


async def run_load(
    server: Server | Sequence[Server],
    token: str,
    clients: int,
    count: int,
    time_limit_s: float,
    make: QueryMaker,
    offset: int = 0,
) -> LoadResult:
    servers = [server] if isinstance(server, Server) else list(server)
    result = LoadResult(clients=clients)
    next_i = 0
    deadline = time.monotonic() + time_limit_s
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(session: aiohttp.ClientSession, target: Server) -> None:
        nonlocal next_i
        while next_i < count and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            sql, eps = make(offset + i)
            try:
                seconds, body = await post_query(session, target, token, sql, eps)
            except (QueryError, aiohttp.ClientError, TimeoutError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
            result.done += 1
            result.cached += bool(body.get("cached"))
            result.latencies.append(seconds)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, servers[k % len(servers)]) for k in range(clients)))
        result.seconds = time.perf_counter() - started
    return result

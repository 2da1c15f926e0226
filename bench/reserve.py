"""Budget reservations: what reserving before the read adds to a query's store writes.

    .venv/bin/python -m bench.reserve          # SQLite, and PostgreSQL if the DSN is set:
    export ENCLAVE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.reserve --smoke

A query's charge path, on a real store, without the engine: ``debit`` alone (how every query
was charged before reservations) against ``reserve`` then ``debit`` (now), each a distinct
licence of one organisation on one dataset with a ``total_budget`` (every charge shares the
organisation and dataset layers, the contended case). Sequential, then with 8 concurrent
callers; charges per second and p50/p99 of one charge path in milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.common import log, markdown_table, parser, quantile, results_path, write_section
from enclave.audit.record import AuditDraft
from enclave.ledger.charge import Charge, Layer
from enclave.ledger.grid import Amount

LAYERS = (
    Layer("subject", Amount.limit("1000000"), None),
    Layer("organisation", Amount.limit("1000000"), None),
    Layer("dataset", Amount.limit("1000000"), None),
)


def _charge(i: int) -> Charge:
    return Charge(
        licence_id=f"lic{i}",
        dataset="visits",
        cost=Amount.charge("0.01"),
        limit=Amount.limit("1000000"),
        since=None,
        layers=LAYERS,
        subject=f"s{i}",
        organization="org",
    )


def _draft(i: int) -> AuditDraft:
    return AuditDraft(
        action="query", outcome="ok", actor=f"s{i}", request_id=f"r{i}", dataset="visits"
    )


async def _path(store: Any, i: int, reserved: bool) -> float:
    start = time.perf_counter()
    charge = _charge(i)
    if reserved:
        charge = await store.reserve(charge, 30)
    await store.debit(_draft(i), charge)
    return time.perf_counter() - start


async def _measure(store: Any, n: int, callers: int, reserved: bool) -> list[Any]:
    times: list[float] = []
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            times.append(await _path(store, i, reserved))

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall = time.perf_counter() - start
    ms = [t * 1000 for t in times]
    return [round(n / wall), quantile(ms, 0.5), quantile(ms, 0.99)]


async def _run_store(make: Any, name: str, n: int) -> list[list[Any]]:
    rows = []
    for callers in (1, 8):
        for reserved in (False, True):
            store = make()
            await store.open()
            try:
                got = await _measure(store, n, callers, reserved)
            finally:
                await store.close()
            label = "reserve + debit" if reserved else "debit only"
            log(f"{name} {callers} callers, {label}: {got}")
            rows.append([name, callers, label, *got])
    return rows


async def main_async(out: Path, n: int) -> list[list[Any]]:
    from enclave.store.sqlite import SqliteStore

    rows: list[list[Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1000))

    def sqlite() -> Any:
        path = out / f"reserve-{os.getpid()}-{next(counter)}.db"
        return SqliteStore(str(path))

    rows += await _run_store(sqlite, "SQLite", n)
    dsn = os.environ.get("ENCLAVE_TEST_POSTGRES_DSN")
    if dsn:
        rows += await _postgres(dsn, n)
    return rows


async def _postgres(dsn: str, n: int) -> list[list[Any]]:
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    from enclave.store.postgres import PostgresStore

    admin = await asyncpg.connect(dsn)
    rows: list[list[Any]] = []
    try:
        names: list[str] = []

        def make() -> Any:
            names.append("enclave_bench_" + secrets.token_hex(6))
            return PostgresStore(urlunsplit(urlsplit(dsn)._replace(path="/" + names[-1])))

        for callers in (1, 8):
            for reserved in (False, True):
                store = make()  # each run on its own empty database
                await admin.execute(f'CREATE DATABASE "{names[-1]}"')
                await store.open()
                try:
                    got = await _measure(store, n, callers, reserved)
                finally:
                    await store.close()
                    await admin.execute(f'DROP DATABASE IF EXISTS "{names[-1]}" WITH (FORCE)')
                label = "reserve + debit" if reserved else "debit only"
                log(f"PostgreSQL {callers} callers, {label}: {got}")
                rows.append(["PostgreSQL", callers, label, *got])
    finally:
        await admin.close()
    return rows


def main() -> None:
    p = parser("Budget reservations: the cost of reserving before the read")
    p.add_argument("--charges", type=int, default=None, help="charge paths per run")
    args = p.parse_args()
    n = args.charges or (20 if args.smoke else 400)
    rows = asyncio.run(main_async(Path(args.out) / "reserve", n))
    table = markdown_table(
        ["store", "callers", "charge path", "charges/s", "p50 ms", "p99 ms"], rows
    )
    print(table)
    body = (
        f"{n} charge paths per row, each a distinct licence of one organisation on one dataset "
        "(shared organisation and dataset layers), no engine: `debit` alone is how a query was "
        "charged before reservations, `reserve` + `debit` is now (`bench/reserve.py`).\n\n" + table
    )
    write_section(results_path(args), "reserve", "Budget reservations: store cost", body)


if __name__ == "__main__":
    main()

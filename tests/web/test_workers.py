"""``server.processes = 2``: one ``enclave serve`` with two worker processes acts as one gateway.

Real processes and real HTTP, on SQLite and (when configured) PostgreSQL. Every request opens
a new connection, so the kernel hands them to both workers:

- a licence with epsilon 2.0 and 200 concurrent queries at 0.1: exactly 20 released, whichever
  worker answered; the ledger holds exactly 2.0 and the audit chain verifies;
- ``enclave_worker_requests_total`` from one scrape shows both workers (multiprocess metrics);
- ``/readyz`` answers alike from any worker; a revocation refuses the token on every worker;
- ``kill -9`` of one worker under load: it is restarted (log line), and every acknowledged
  release is in the audit chain, charged in the ledger;
- SIGTERM drains: a request in flight (a release padded to 3 s) is answered, exit status 0.

Also: a port in use and a worker that cannot start each fail the start with a clear line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from enclave.audit.chain import verify
from enclave.devkeys import KeyPaths
from enclave.store import connected_store
from tests.conftest import AUDIENCE, ISSUER, REPO, TokenFactory, _toml
from tests.serving import START_TIMEOUT_S, Served, free_port

pytestmark = pytest.mark.slow

BUDGET = Decimal("2.0")
EPSILON = 0.1
QUERIES = 200
SMALL_EPSILON = 0.01  # the load during kill -9 (accredited tier, a large budget)
DEADLINE_MS = 3000  # an undeclared-key release takes at least this long: in flight at SIGTERM


def write_deployment(
    root: Path, store_url: str, keypair: KeyPaths, parquet: Path, **engine: Any
) -> Path:
    shutil.copytree(REPO / "policies", root / "policies")
    tiers = root / "policies" / "tiers"
    for name, budget in (("standard", float(BUDGET)), ("accredited", 1000.0)):
        tier = yaml.safe_load((tiers / f"{name}.yaml").read_text())
        tier["budget"]["epsilon"] = budget
        tier["rate_limit_per_minute"] = 1_000_000
        (tiers / f"{name}.yaml").write_text(yaml.safe_dump(tier))
    (root / "data").mkdir()
    shutil.copy(parquet, root / "data" / "visits.parquet")
    shutil.copy(keypair.jwks_json, root / "jwks.json")
    config: dict[str, dict[str, Any]] = {
        "server": {
            "host": "127.0.0.1",
            "processes": 2,
            "query_timeout_s": 20,
            "release_deadline_ms": DEADLINE_MS,
        },
        "auth": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "jwks.json"},
        "store": {"url": store_url},
        "policies": {"dir": "policies", "data_dir": "data"},
        "engine": {"state_dir": "state", "memory_limit": "512MB", "threads": 1, **engine},
        # the revocation round sends up to 400 refused tokens from one address: a failed
        # authentication counts against unauthenticated_per_minute (60 by default)
        "limits": {
            "per_address_per_minute": 1_000_000,
            "per_subject_per_minute": 1_000_000,
            "unauthenticated_per_minute": 1_000_000,
        },
    }
    path = root / "enclave.toml"
    path.write_text(_toml(config))
    return path


class Gateway(Served):
    """A gateway with several worker processes."""

    async def worker_pids(self) -> list[int]:
        found = await self.wait_log(r"with 2 worker processes \(pids (\d+), (\d+)\)")
        return [int(found.group(1)), int(found.group(2))]

    def stop(self, kill: bool = True) -> None:
        super().stop(kill)


@asynccontextmanager
async def gateway(config: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(config, free_port())
    try:
        await gw.worker_pids()  # every worker said it is ready
        yield gw
    finally:
        gw.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fresh_connections() -> aiohttp.ClientSession:
    """A session that opens a new connection per request, so both workers get some."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=64))


async def issue_licence(
    http: aiohttp.ClientSession, gw: Gateway, admin: dict[str, str], subject: str, tier: str
) -> str:
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    body = {
        "subject": subject,
        "organization": "Test University",
        "tier": tier,
        "datasets": ["visits"],
        "purpose": "worker test",
        "jurisdiction": "GB",
        "valid_until": until,
    }
    async with http.post(gw.url + "/v1/admin/licences", json=body, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


async def ask(
    http: aiohttp.ClientSession, gw: Gateway, who: dict[str, str], i: int, epsilon: float
) -> tuple[int, dict[str, Any]]:
    sql = f"SELECT COUNT(*) AS n FROM visits WHERE age >= {i % 90} AND cost <= {1000 + i}"  # noqa: S608
    query = {"dataset": "visits", "sql": sql, "epsilon": epsilon}
    async with http.post(gw.url + "/v1/queries", json=query, headers=who) as resp:
        return resp.status, await resp.json(content_type=None)


def worker_counts(metrics_text: str) -> dict[str, float]:
    pattern = r'^enclave_worker_requests_total\{worker="(\d+)"\} ([0-9.e+]+)$'
    return {m[0]: float(m[1]) for m in re.findall(pattern, metrics_text, flags=re.M)}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///state/enclave.db"
        return
    from tests.store.conftest import temporary_database

    async with temporary_database() as url:
        yield url


async def test_two_workers_act_as_one_gateway(
    tmp_path: Path,
    keypair: KeyPaths,
    visits_parquet: Path,
    token_factory: TokenFactory,
    store_url: str,
) -> None:
    config = write_deployment(tmp_path, store_url, keypair, visits_parquet)
    admin = bearer(token_factory("root", ["admin"]))
    auditor = bearer(token_factory("oversight", ["auditor"]))
    async with gateway(config) as gw, fresh_connections() as http:
        alice_licence = await issue_licence(http, gw, admin, "alice", "standard")
        await one_budget_across_workers(http, gw, token_factory, alice_licence)
        await health_and_revocation_on_every_worker(http, gw, token_factory)
        carol_licence = await issue_licence(http, gw, admin, "carol", "accredited")
        acknowledged = await kill_one_worker_under_load(http, gw, token_factory)
        async with http.get(gw.url + "/v1/audit/verify", headers=auditor) as resp:
            assert resp.status == 200
            assert (await resp.json())["valid"] is True
        await sigterm_drains(http, gw, token_factory)
    url = store_url.replace("sqlite:///", f"sqlite:///{tmp_path}/")
    await everything_acknowledged_is_stored(url, alice_licence, carol_licence, acknowledged)


async def one_budget_across_workers(
    http: aiohttp.ClientSession, gw: Gateway, tokens: TokenFactory, licence_id: str
) -> None:
    alice = bearer(tokens("alice", ["researcher"]))
    answers = await asyncio.gather(*(ask(http, gw, alice, i, EPSILON) for i in range(QUERIES)))
    statuses = Counter(status for status, _ in answers)
    assert statuses[200] == 20, statuses  # 2.0 / 0.1: never more, and all of it usable
    assert statuses[200] + statuses[403] == QUERIES, statuses
    refused = [body for status, body in answers if status == 403]
    assert all(p["type"].endswith("budget-exhausted") for p in refused), refused[:3]
    released = [body for status, body in answers if status == 200]
    assert sum(Decimal(str(r["epsilon_spent"])) for r in released) == BUDGET
    async with http.get(gw.url + "/metrics") as resp:
        counts = worker_counts(await resp.text())
    assert set(counts) == {"1", "2"}, counts  # one scrape sees both workers
    assert all(n > 0 for n in counts.values()), counts
    assert sum(counts.values()) >= QUERIES + 1  # the licence, the queries (and this scrape)


async def health_and_revocation_on_every_worker(
    http: aiohttp.ClientSession, gw: Gateway, tokens: TokenFactory
) -> None:
    bodies = []
    for _ in range(8):
        async with http.get(gw.url + "/readyz") as resp:
            assert resp.status == 200
            bodies.append(await resp.json())
        async with http.get(gw.url + "/healthz") as resp:
            assert resp.status == 200
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["datasets"]["ok"] == 1
    jti = "tok-revoked-1"
    carried = bearer(tokens("alice", ["researcher"], jti=jti))
    async with http.get(gw.url + "/v1/budget", headers=carried) as resp:
        assert resp.status == 200
    admin = bearer(tokens("root", ["admin"]))
    revoke = {"jti": jti, "reason": "laptop lost"}
    async with http.post(gw.url + "/v1/admin/revocations", json=revoke, headers=admin) as resp:
        assert resp.status == 201
    before = worker_counts(await (await http.get(gw.url + "/metrics")).text())
    closing = {**carried, "Connection": "close"}  # a new connection each time
    after = before
    for _ in range(20):  # rounds of new connections, until both workers have answered some
        for _ in range(20):
            async with http.get(gw.url + "/v1/budget", headers=closing) as resp:
                assert resp.status == 401
        after = worker_counts(await (await http.get(gw.url + "/metrics")).text())
        if all(after[w] > before[w] for w in ("1", "2")):
            break
    assert all(after[w] > before[w] for w in ("1", "2")), (before, after)


async def kill_one_worker_under_load(
    http: aiohttp.ClientSession, gw: Gateway, tokens: TokenFactory
) -> list[dict[str, Any]]:
    """Queries from 6 clients; one worker is killed with SIGKILL meanwhile. Returns every
    release acknowledged with 200."""
    carol = bearer(tokens("carol", ["researcher"]))
    pids = await gw.worker_pids()
    acknowledged: list[dict[str, Any]] = []
    failed = Counter[str]()
    stop = asyncio.Event()
    counter = iter(range(10**6))

    async def client() -> None:
        while not stop.is_set():
            try:
                status, body = await ask(http, gw, carol, next(counter), SMALL_EPSILON)
            except aiohttp.ClientError:  # a connection (or a reply) the killed worker held
                failed["connection"] += 1
                continue
            if status == 200:
                acknowledged.append(body)
            else:
                failed[str(status)] += 1

    clients = [asyncio.create_task(client()) for _ in range(6)]
    try:
        await asyncio.sleep(2.0)
        before = len(acknowledged)
        assert before > 0, failed
        os.kill(pids[0], signal.SIGKILL)
        await gw.wait_log(rf"worker 1 \(pid {pids[0]}\) was killed by SIGKILL; restarting")
        found = await gw.wait_log(r"worker 1 \(pid (\d+)\) is serving")
        assert int(found.group(1)) not in pids
        during = len(acknowledged)
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert len(acknowledged) > during > before  # served throughout and after the restart
    assert set(failed) <= {"connection"}, failed  # no HTTP error: only dropped connections
    return acknowledged


async def sigterm_drains(http: aiohttp.ClientSession, gw: Gateway, tokens: TokenFactory) -> None:
    carol = bearer(tokens("carol", ["researcher"]))
    sql = "SELECT age, COUNT(*) AS n FROM visits GROUP BY age"  # undeclared keys: padded
    query = {"dataset": "visits", "sql": sql, "epsilon": 0.5}
    started = time.monotonic()
    request = asyncio.create_task(http.post(gw.url + "/v1/queries", json=query, headers=carol))
    await asyncio.sleep(1.0)  # accepted and running, not yet answered
    gw.proc.send_signal(signal.SIGTERM)
    resp = await request
    assert resp.status == 200, await resp.text()
    assert time.monotonic() - started >= DEADLINE_MS / 1000
    assert await asyncio.to_thread(gw.proc.wait, 60) == 0
    assert "stopping: 2 worker(s) finish the requests in flight" in gw.text()
    resp.release()


async def everything_acknowledged_is_stored(
    url: str, alice: str, carol: str, acknowledged: list[dict[str, Any]]
) -> None:
    async with connected_store(url) as store:
        records = [r async for r in store.audit_iter()]
        assert verify(records).valid
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert (await store.spent(alice, "visits", None)).epsilon_decimal == BUDGET
        carol_spent = (await store.spent(carol, "visits", None)).epsilon_decimal
    by_seq = {r.seq: r for r in records}
    for body in acknowledged:
        record = by_seq[body["audit_seq"]]
        assert (record.action, record.outcome, record.licence_id) == ("query", "ok", carol)
    charged = [
        r for r in records if r.licence_id == carol and r.action == "query" and r.outcome == "ok"
    ]
    assert len(charged) >= len(acknowledged) + 1  # every acknowledged one, and the drained one
    assert carol_spent == sum(Decimal(str(r.epsilon)) for r in charged)  # ledger = audit


async def test_a_port_in_use_fails_the_start_at_once(
    tmp_path: Path, keypair: KeyPaths, visits_parquet: Path
) -> None:
    config = write_deployment(tmp_path, "sqlite:///state/enclave.db", keypair, visits_parquet)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gw = Gateway(config, taken.getsockname()[1])
        code = await asyncio.to_thread(gw.proc.wait, 60)
    assert code == 1
    assert re.search(
        r"error: cannot listen on 127\.0\.0\.1:\d+ \(Address already in use\)", gw.text()
    )
    assert "worker" not in gw.text()  # nothing was started


async def test_a_worker_that_cannot_start_fails_the_whole_start(
    tmp_path: Path, keypair: KeyPaths, visits_parquet: Path
) -> None:
    # DuckDB refuses this memory limit when a worker opens its engine (the supervisor does not)
    config = write_deployment(
        tmp_path, "sqlite:///state/enclave.db", keypair, visits_parquet, memory_limit="lots"
    )
    gw = Gateway(config, free_port())
    try:
        code = await asyncio.to_thread(gw.proc.wait, START_TIMEOUT_S)
    finally:
        gw.stop()
    text = gw.text()
    assert code == 1, text
    assert "error: worker " in text  # the worker's own line: what failed
    assert re.search(
        r"error: worker \d \(pid \d+\) exited with status 1 before serving; "
        r"the gateway did not start",
        text,
    ), text

"""``kill -9`` of a whole gateway under load: nothing acknowledged is lost, on either store.

A real gateway (``python -m enclave serve``) runs on a SQLite file store, or on a throwaway
PostgreSQL database (with ``ENCLAVE_TEST_POSTGRES_DSN``; see conftest), with one process or
with ``server.processes = 2``. 32 concurrent clients send distinct queries that release (one
licence with a large budget, each request with its own ``X-Request-Id``). Once at least 100
have been answered 200, every process of the gateway gets ``SIGKILL`` at once: with workers,
the supervisor is stopped first (``SIGSTOP``, so it cannot restart them; workers run in their
own sessions, so a process-group kill would not reach them), then every worker and the
supervisor are killed. Then the store is opened directly and:

- every 200 the clients saw has its audit record (by ``audit_seq``, ``query_id`` and
  ``request_id``) and its ledger charge, of the query's epsilon;
- every charge has its record and every released record its charge;
- the chain verifies, its sequence has no gap;
- a record the clients never saw acknowledged is allowed (committed, then the process died
  before answering): such records are counted and printed, and each belongs to a request that
  was sent and never answered (no data left, and its charge overstates what was released,
  the safe direction for a privacy budget);
- a new gateway on the same store starts, answers a query that continues the chain, and
  ``/v1/audit/verify`` says the chain is valid.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from enclave.audit.chain import verify
from enclave.audit.record import AuditRecord
from enclave.devkeys import KeyPaths
from enclave.ledger.grid import Amount
from enclave.store import connected_store
from enclave.store.bulk import TABLES
from tests.conftest import AUDIENCE, ISSUER, REPO, TokenFactory, _toml
from tests.serving import Served, free_port, serving

pytestmark = pytest.mark.slow

CLIENTS = 32
KILL_AFTER = 100  # answers with 200 before the kill
EPSILON = 0.01
LEDGER = next(spec for spec in TABLES if spec.name == "ledger")


def write_deployment(
    root: Path, store_url: str, keypair: KeyPaths, parquet: Path, processes: int
) -> Path:
    """Policies (the accredited tier with a budget the load never exhausts), data, JWKS and a
    config with ``processes`` worker processes; flood limits out of the way."""
    shutil.copytree(REPO / "policies", root / "policies")
    tier_file = root / "policies" / "tiers" / "accredited.yaml"
    tier = yaml.safe_load(tier_file.read_text())
    tier["budget"]["epsilon"] = 1000.0
    tier["rate_limit_per_minute"] = 1_000_000
    tier_file.write_text(yaml.safe_dump(tier))
    (root / "data").mkdir()
    shutil.copy(parquet, root / "data" / "visits.parquet")
    shutil.copy(keypair.jwks_json, root / "jwks.json")
    config: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "processes": processes, "query_timeout_s": 20},
        "auth": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "jwks.json"},
        "store": {"url": store_url},
        "policies": {"dir": "policies", "data_dir": "data"},
        "engine": {"state_dir": "state", "memory_limit": "512MB", "threads": 1},
        "limits": {"per_address_per_minute": 1_000_000, "per_subject_per_minute": 1_000_000},
    }
    path = root / "enclave.toml"
    path.write_text(_toml(config))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state/enclave.db"  # a file store, synchronous=FULL
        return
    from tests.store.conftest import temporary_database

    async with temporary_database() as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Load:
    """Distinct releasing queries from ``CLIENTS`` concurrent clients until ``stop`` is set."""

    http: aiohttp.ClientSession
    url: str
    auth: dict[str, str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: set[str] = field(default_factory=set)  # request ids
    acknowledged: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)  # answered, not 200
    dropped: Counter[str] = field(default_factory=Counter)  # no answer (connection)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    async def client(self) -> None:
        while not self.stop.is_set():
            i = next(self.counter)
            request_id = f"kill-{i}"
            sql = f"SELECT COUNT(*) AS n FROM visits WHERE age >= {i % 90} AND cost <= {1000 + i}"  # noqa: S608
            query = {"dataset": "visits", "sql": sql, "epsilon": EPSILON}
            self.sent.add(request_id)
            headers = {**self.auth, "X-Request-Id": request_id}
            try:
                async with self.http.post(self.url, json=query, headers=headers) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:  # the gateway died mid-request
                self.dropped[type(exc).__name__] += 1
                continue
            if status == 200:
                self.acknowledged.append((request_id, body))
            else:
                self.refused[status] += 1


def gone(pid: int) -> bool:
    """The process has exited (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


async def kill_gateway(gw: Served, workers: list[int]) -> None:
    """SIGKILL every process of the gateway at once (the supervisor frozen first, so it
    restarts nothing and its death sends the workers no SIGTERM to drain on)."""
    if workers:
        os.kill(gw.proc.pid, signal.SIGSTOP)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    gw.proc.kill()
    await asyncio.to_thread(gw.proc.wait, 30)
    for _ in range(300):
        if all(gone(pid) for pid in workers):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"worker processes {workers} still running after SIGKILL")


async def read_back(url: str) -> tuple[list[AuditRecord], dict[int, int]]:
    """Every audit record, and the ledger's epsilon units by audit sequence (one row each)."""
    names = LEDGER.column_names
    seq_at, units_at = names.index("audit_seq"), names.index("epsilon_units")
    ledger: dict[int, int] = {}
    async with connected_store(url) as store:
        records = [r async for r in store.audit_iter()]
        async with store.export_snapshot() as snapshot:
            async for page in snapshot.rows(LEDGER):
                for row in page:
                    assert row[seq_at] not in ledger, row  # one charge per record
                    ledger[row[seq_at]] = row[units_at]
    return records, ledger


async def datasets_ready(http: aiohttp.ClientSession, gw: Served) -> None:
    """Until ``/readyz`` counts the dataset ``ok`` (readiness does not wait for its bounding,
    and a query meanwhile would be refused)."""
    for _ in range(600):
        async with http.get(gw.url + "/readyz") as resp:
            if (await resp.json()).get("datasets", {}).get("ok") == 1:
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"dataset not prepared after 120 s:\n{gw.tail()}")


async def issue_licence(http: aiohttp.ClientSession, gw: Served, admin: dict[str, str]) -> str:
    body = {
        "subject": "carol",
        "organization": "Test University",
        "tier": "accredited",
        "datasets": ["visits"],
        "purpose": "kill test",
        "jurisdiction": "GB",
        "valid_until": (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(),
    }
    async with http.post(gw.url + "/v1/admin/licences", json=body, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


@pytest.mark.parametrize("processes", [1, 2])
async def test_kill_9_under_load_loses_nothing_acknowledged(
    tmp_path: Path,
    keypair: KeyPaths,
    visits_parquet: Path,
    token_factory: TokenFactory,
    store_url: str,
    processes: int,
) -> None:
    config = write_deployment(tmp_path, store_url, keypair, visits_parquet, processes)
    admin = bearer(token_factory("root", ["admin"]))
    carol = bearer(token_factory("carol", ["researcher"]))
    gw = Served(config, free_port())
    connector = aiohttp.TCPConnector(limit=2 * CLIENTS)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            await gw.wait_ready(http)
            await datasets_ready(http, gw)
            workers: list[int] = []
            if processes > 1:
                found = await gw.wait_log(r"with 2 worker processes \(pids (\d+), (\d+)\)")
                workers = [int(found.group(1)), int(found.group(2))]
            licence_id = await issue_licence(http, gw, admin)
            load = Load(http, gw.url + "/v1/queries", carol)
            clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
            try:
                deadline = asyncio.get_running_loop().time() + 120
                while len(load.acknowledged) < KILL_AFTER:
                    assert not load.refused, load.refused
                    if asyncio.get_running_loop().time() > deadline:
                        pytest.fail(f"{len(load.acknowledged)} answered in 120 s:\n{gw.tail()}")
                    await asyncio.sleep(0.02)
                await kill_gateway(gw, workers)
            finally:
                load.stop.set()
                await asyncio.gather(*clients)
    finally:
        gw.stop(kill=True)

    assert not load.refused, load.refused  # before the kill every answer released
    records, ledger = await read_back(store_url)
    assert verify(records).valid
    assert [r.seq for r in records] == list(range(1, len(records) + 1))  # no gap
    released = {
        r.seq: r
        for r in records
        if (r.action, r.outcome, r.licence_id) == ("query", "ok", licence_id)
    }
    lost = sorted(b["audit_seq"] for _, b in load.acknowledged if b["audit_seq"] not in released)
    assert not lost, f"{len(lost)} acknowledged release(s) not in the store: seq {lost[:10]}"
    units = Amount.charge(str(EPSILON)).epsilon
    for request_id, body in load.acknowledged:  # every answer was recorded and charged first
        record = released[body["audit_seq"]]
        assert record.detail is not None and record.detail["query_id"] == body["query_id"]
        assert record.request_id == request_id
        assert ledger[body["audit_seq"]] == units
    assert set(ledger) == set(released)  # every charge has its record, and vice versa
    unacknowledged = set(released) - {body["audit_seq"] for _, body in load.acknowledged}
    answered = {request_id for request_id, _ in load.acknowledged}
    for seq in unacknowledged:  # committed, never answered: the request got no reply at all
        assert released[seq].request_id in load.sent - answered
    print(
        f"kill -9 ({processes} process(es)): {len(load.acknowledged)} acknowledged,"
        f" {sum(load.dropped.values())} dropped {dict(load.dropped)},"
        f" {len(unacknowledged)} committed but unacknowledged; chain of {len(records)}"
    )

    auditor = bearer(token_factory("oversight", ["auditor"]))
    async with serving([config]) as (http, (again,)):  # a new gateway on the same store
        await datasets_ready(http, again)
        query = {"dataset": "visits", "sql": "SELECT COUNT(*) AS n FROM visits", "epsilon": 0.5}
        async with http.post(again.url + "/v1/queries", json=query, headers=carol) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["audit_seq"] > records[-1].seq
        async with http.get(again.url + "/v1/audit/verify", headers=auditor) as resp:
            assert resp.status == 200
            assert (await resp.json())["valid"] is True

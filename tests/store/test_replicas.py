"""Two real gateway processes on one PostgreSQL database act as one gateway.

Both replicas (``python -m enclave serve``) start at once on an empty database, each with its
own engine state folder holding the same truncation key. A licence issued through replica A
gets a small budget (epsilon 2.0) and hundreds of concurrent, distinct queries at epsilon 0.1
are split across A and B: exactly 20 may be released, the ledger holds exactly 2.0, and the
audit chain is one linear chain (verifies, no gaps, no two records with one ``prev_hash``).
Then a revocation and a licence suspension made through A are refused by B on the very next
request. Runs only with ``ENCLAVE_TEST_POSTGRES_DSN`` (see conftest).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from enclave.audit.chain import verify
from enclave.devkeys import KeyPaths
from enclave.policy.version import PolicyKind
from tests.conftest import AUDIENCE, ISSUER, REPO, TokenFactory, _toml
from tests.serving import Served, serving
from tests.store.conftest import temporary_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BUDGET = Decimal("2.0")
EPSILON = 0.1
QUERIES = 240


def write_deployment(
    root: Path, store_url: str, keypair: KeyPaths, parquet: Path, replicas: int
) -> list[Path]:
    """Policies (standard tier with a small budget and no practical rate limit), data, JWKS,
    and one config per replica; each replica gets its own state folder holding the SAME
    truncation key (replicas must bound identically: docs/operations.md, "Several replicas on
    PostgreSQL")."""
    shutil.copytree(REPO / "policies", root / "policies")
    tier_file = root / "policies" / "tiers" / "standard.yaml"
    tier = yaml.safe_load(tier_file.read_text())
    tier["budget"]["epsilon"] = float(BUDGET)
    tier["rate_limit_per_minute"] = 100_000  # the rate limit is per process; not tested here
    tier_file.write_text(yaml.safe_dump(tier))
    (root / "data").mkdir()
    shutil.copy(parquet, root / "data" / "visits.parquet")
    shutil.copy(keypair.jwks_json, root / "jwks.json")
    key = secrets.token_bytes(32)
    configs = []
    for i in range(replicas):
        state = root / f"state-{i}"
        state.mkdir()
        (state / "truncation.key").write_bytes(key)
        (state / "truncation.key").chmod(0o600)
        config: dict[str, dict[str, Any]] = {
            "server": {"host": "127.0.0.1", "query_timeout_s": 20},
            "auth": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "jwks.json"},
            "store": {"url": store_url},
            "policies": {"dir": "policies", "data_dir": "data"},
            "engine": {"state_dir": state.name, "memory_limit": "512MB", "threads": 1},
        }
        path = root / f"replica-{i}.toml"
        path.write_text(_toml(config))
        configs.append(path)
    return configs


Replica = Served  # one replica: a whole gateway process


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def read_store(url: str, licence_id: str) -> tuple[list[Any], Decimal, dict[str, list[int]]]:
    from enclave.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    try:
        records = [r async for r in store.audit_iter()]
        spent = (await store.spent(licence_id, "visits", None)).epsilon_decimal
        versions = {}
        kinds: tuple[PolicyKind, ...] = ("tier", "dataset")
        for kind in kinds:
            for p in await store.list_policies(kind):
                history = await store.policy_history(kind, p.name)
                versions[f"{kind}:{p.name}"] = [v.version for v in history]
        return records, spent, versions
    finally:
        await store.close()


async def test_two_replicas_share_budget_chain_and_revocations(
    tmp_path: Path, keypair: KeyPaths, visits_parquet: Path, token_factory: TokenFactory
) -> None:
    async with temporary_database() as db_url:
        configs = write_deployment(tmp_path, db_url, keypair, visits_parquet, replicas=2)
        async with serving(configs) as (http, replicas):  # started together: a seed race
            await scenario(http, replicas, token_factory, db_url)


async def scenario(
    http: aiohttp.ClientSession, replicas: list[Replica], tokens: TokenFactory, db_url: str
) -> None:
    a, b = replicas
    admin = bearer(tokens("root", ["admin"]))
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    body = {
        "subject": "alice",
        "organization": "Test University",
        "tier": "standard",
        "datasets": ["visits"],
        "purpose": "replica test",
        "jurisdiction": "GB",
        "valid_until": until,
    }
    async with http.post(a.url + "/v1/admin/licences", json=body, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
        licence_id = (await resp.json())["id"]

    alice = bearer(tokens("alice", ["researcher"]))

    async def ask(i: int) -> tuple[int, dict[str, Any]]:
        target = replicas[i % 2]
        sql = f"SELECT COUNT(*) AS n FROM visits WHERE age >= {i % 90} AND cost <= {1000 + i}"  # noqa: S608
        query = {"dataset": "visits", "sql": sql, "epsilon": EPSILON}
        async with http.post(target.url + "/v1/queries", json=query, headers=alice) as resp:
            return resp.status, await resp.json(content_type=None)

    answers = await asyncio.gather(*(ask(i) for i in range(QUERIES)))
    statuses = Counter(status for status, _ in answers)
    released = [body for status, body in answers if status == 200]
    assert statuses[200] == 20, statuses  # 2.0 / 0.1: never more, and the budget is usable
    assert statuses[200] + statuses[403] == QUERIES, statuses
    refused = [body for status, body in answers if status == 403]
    assert all(p["type"].endswith("budget-exhausted") for p in refused), refused[:3]
    spent = sum(Decimal(str(r["epsilon_spent"])) for r in released)
    assert spent == BUDGET
    assert len({r["audit_seq"] for r in released}) == 20
    by_replica = Counter(i % 2 for i, (status, _) in enumerate(answers) if status == 200)
    assert set(by_replica) <= {0, 1}

    records, ledger, versions = await read_store(db_url, licence_id)
    assert ledger == BUDGET  # the durable ledger agrees with what clients received
    assert verify(records).valid
    assert [r.seq for r in records] == list(range(1, len(records) + 1))  # no gaps
    assert len({r.prev_hash for r in records}) == len(records)  # no forks
    assert len(records) == 1 + QUERIES  # the licence, then one record per query
    by_seq = {r.seq: r for r in records}
    for r in released:
        rec = by_seq[r["audit_seq"]]
        assert (rec.action, rec.outcome, rec.cached, rec.epsilon) == ("query", "ok", False, EPSILON)
    ok_records = [r for r in records if r.action == "query" and r.outcome == "ok"]
    assert len(ok_records) == 20

    # a revocation through A is refused by B on the next request
    jti = "tok-" + secrets.token_hex(4)
    carried = bearer(tokens("alice", ["researcher"], jti=jti))
    async with http.get(b.url + "/v1/budget", headers=carried) as resp:
        assert resp.status == 200
    revoke = {"jti": jti, "reason": "laptop lost"}
    async with http.post(a.url + "/v1/admin/revocations", json=revoke, headers=admin) as resp:
        assert resp.status == 201
    async with http.get(b.url + "/v1/budget", headers=carried) as resp:
        assert resp.status == 401
        assert (await resp.json(content_type=None))["type"].endswith("revoked-token")

    # a suspension through A is refused by B on the next request
    estimate = {"dataset": "visits", "sql": "SELECT COUNT(*) FROM visits", "epsilon": EPSILON}
    async with http.post(b.url + "/v1/queries/estimate", json=estimate, headers=alice) as resp:
        assert resp.status == 200
    patch = {"status": "suspended", "reason": "review"}
    path = f"/v1/admin/licences/{licence_id}"
    async with http.patch(a.url + path, json=patch, headers=admin) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(b.url + "/v1/queries/estimate", json=estimate, headers=alice) as resp:
        assert resp.status == 403
        assert (await resp.json(content_type=None))["type"].endswith("licence-suspended")

    # both replicas started together on an empty database: the policy files were seeded once
    assert versions and all(v == [1] for v in versions.values()), versions

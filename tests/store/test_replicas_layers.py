"""Two real gateway processes on one PostgreSQL database never overspend a shared budget layer.

The dataset's ``total_budget`` is 1.0 and the tier's ``organisation_budget`` 0.6 (both set in
the policy files, so they are validated there). Six subjects of two organisations, each with
their own licence (budget 2.0 each), send concurrent, distinct queries at epsilon 0.1, split
across replicas A and B: exactly ten are released (1.0 / 0.1), at most six for the first
organisation, every refusal names a shared layer, and the ledger agrees. Runs only with
``ENCLAVE_TEST_POSTGRES_DSN``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from enclave.devkeys import KeyPaths
from tests.conftest import TokenFactory
from tests.serving import serving
from tests.spend import layer_spent
from tests.store.conftest import temporary_database
from tests.store.test_replicas import Replica, bearer, write_deployment

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SUBJECTS = {
    "a1": "Org A",
    "a2": "Org A",
    "a3": "Org A",
    "b1": "Org B",
    "b2": "Org B",
    "b3": "Org B",
}
QUERIES = 120


def set_layers(root: Path) -> None:
    tier_file = root / "policies" / "tiers" / "standard.yaml"
    tier = yaml.safe_load(tier_file.read_text())
    tier["organisation_budget"] = {"epsilon": 0.6}
    tier_file.write_text(yaml.safe_dump(tier))
    dataset_file = root / "policies" / "datasets" / "visits.yaml"
    dataset = yaml.safe_load(dataset_file.read_text())
    dataset["total_budget"] = {"epsilon": 1.0}
    dataset_file.write_text(yaml.safe_dump(dataset))


async def test_two_replicas_never_overspend_a_shared_layer(
    tmp_path: Path, keypair: KeyPaths, visits_parquet: Path, token_factory: TokenFactory
) -> None:
    async with temporary_database() as db_url:
        configs = write_deployment(tmp_path, db_url, keypair, visits_parquet, replicas=2)
        set_layers(tmp_path)
        async with serving(configs) as (http, replicas):  # started together: a seed race
            await scenario(http, replicas, token_factory, db_url)


async def scenario(
    http: aiohttp.ClientSession, replicas: list[Replica], tokens: TokenFactory, db_url: str
) -> None:
    admin = bearer(tokens("root", ["admin"]))
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    for subject, org in SUBJECTS.items():
        body = {
            "subject": subject,
            "organization": org,
            "tier": "standard",
            "datasets": ["visits"],
            "purpose": "layer test",
            "jurisdiction": "GB",
            "valid_until": until,
        }
        async with http.post(replicas[0].url + "/v1/admin/licences", json=body, headers=admin) as r:
            assert r.status == 201, await r.text()
    names = list(SUBJECTS)

    async def ask(i: int) -> tuple[str, int, dict[str, Any]]:
        subject = names[i % len(names)]
        sql = f"SELECT COUNT(*) AS n FROM visits WHERE age >= {i % 90} AND cost <= {1000 + i}"  # noqa: S608
        query = {"dataset": "visits", "sql": sql, "epsilon": 0.1}
        target = replicas[(i // len(names)) % 2]
        auth = bearer(tokens(subject, ["researcher"]))
        async with http.post(target.url + "/v1/queries", json=query, headers=auth) as resp:
            return subject, resp.status, await resp.json(content_type=None)

    answers = await asyncio.gather(*(ask(i) for i in range(QUERIES)))
    statuses = Counter(status for _, status, _ in answers)
    assert statuses[200] == 10 and statuses[403] == QUERIES - 10, statuses
    by_org = Counter(SUBJECTS[s] for s, status, _ in answers if status == 200)
    assert by_org["Org A"] <= 6, by_org
    layers = Counter(body["layer"] for _, status, body in answers if status == 403)
    assert set(layers) <= {"organisation", "dataset"}, layers

    from enclave.store.postgres import PostgresStore

    store = PostgresStore(db_url)
    await store.open()
    try:
        total = await layer_spent(store, "dataset", "visits", "visits", None)
        org_a = await layer_spent(store, "organisation", "Org A", "visits", None)
    finally:
        await store.close()
    assert total.epsilon_decimal == Decimal("1")
    assert org_a.epsilon_decimal <= Decimal("0.6")

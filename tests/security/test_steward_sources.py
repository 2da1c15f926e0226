"""Dataset sources relative to ``policies.data_dir``, and registering a dataset from a file:
hostile relative paths and symlinks are refused wherever a source is given (policy PUT, schema
proposal, file listing), and a proposal carries the file's schema only, never a value."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from enclave.audit.log import AuditFilter

ADMIN = ("stella", ["admin"])
HOSTILE = [
    "../../etc/passwd",
    "../../etc/passwd.csv",
    "../../../../../../etc/passwd.csv",
    "/etc/passwd.csv",
    "..",
    "../",
    "sub/../../outside.csv",
    "visits.parquet/../../secret.csv",
    "file:///etc/passwd.csv",
    "https://example.org/x.csv",
    "*.csv",
    "visits.parquet\x00.csv",
]


async def admin(gw: Any, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    resp = await gw.client.request(method, path, headers=gw.auth(*ADMIN), **kw)
    return resp.status, await resp.json(content_type=None)


async def dataset_body(gw: Any) -> dict[str, Any]:
    _, body = await admin(gw, "GET", "/v1/admin/datasets/visits")
    return {k: v for k, v in body.items() if k not in ("created_at", "changed_by", "versions")}


def outside_file(gw: Any, name: str = "secret.csv") -> Path:
    target = gw.config.policies.data_dir.parent / name
    target.write_text("person_id,secret\np1,TOPSECRET\n")
    return target


async def test_source_is_relative_to_the_data_folder(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    body = await dataset_body(gw)
    assert body["source"] == "visits.parquet"  # the shipped definition, relative to data_dir
    sub = gw.config.policies.data_dir / "2026"
    sub.mkdir()
    shutil.copy(gw.config.policies.data_dir / "visits.parquet", sub / "clinic.parquet")
    for source in ("2026/clinic.parquet", "../../data/visits.parquet"):  # the earlier rule too
        body = await dataset_body(gw)
        status, stored = await admin(
            gw, "PUT", "/v1/admin/datasets/visits",
            json={**body, "source": source, "reason": "moved"},
        )  # fmt: skip
        assert status == 200, stored
        assert stored["source"] == source
        sql = f"SELECT COUNT(*) AS n FROM visits WHERE age > {len(source)}"  # noqa: S608
        resp = await gw.query(sql)
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("source", HOSTILE)
async def test_hostile_sources_are_refused_everywhere(make_gateway: Any, source: str) -> None:
    gw = await make_gateway()
    outside_file(gw, "outside.csv")
    before = await dataset_body(gw)
    status, problem = await admin(
        gw, "PUT", "/v1/admin/datasets/visits", json={**before, "source": source}
    )
    assert status == 400, problem
    assert any("source:" in p for p in problem["problems"]), problem
    assert await dataset_body(gw) == before
    status, problem = await admin(
        gw, "GET", "/v1/admin/data-files/schema", params={"source": source}
    )
    assert status == 400, problem
    assert "TOPSECRET" not in json.dumps(problem) and "root:" not in json.dumps(problem)


async def test_symlinks_out_of_the_data_folder_are_refused(make_gateway: Any) -> None:
    gw = await make_gateway()
    data = gw.config.policies.data_dir
    os.symlink(outside_file(gw), data / "link.csv")
    os.symlink(data.parent, data / "up")  # a folder link leading out
    (data / "inner").mkdir()
    os.symlink(data / "visits.parquet", data / "inner" / "alias.parquet")  # inside: listed no
    before = await dataset_body(gw)
    for source in ("link.csv", "up/secret.csv", str(data / "link.csv")):
        status, problem = await admin(
            gw, "PUT", "/v1/admin/datasets/visits", json={**before, "source": source}
        )
        assert status == 400 and "inside the data folder" in problem["detail"], problem
        status, problem = await admin(
            gw, "GET", "/v1/admin/data-files/schema", params={"source": source}
        )
        assert status == 400 and "TOPSECRET" not in json.dumps(problem), problem
    status, listed = await admin(gw, "GET", "/v1/admin/data-files")
    assert status == 200 and listed["files"] == ["visits.parquet"]


async def test_the_state_store_is_never_listed_nor_proposed(make_gateway: Any) -> None:
    gw = await make_gateway(
        store_url="sqlite:///data/enclave.db", engine={"state_dir": "data/state"}
    )
    await gw.licence()
    assert (await gw.query("SELECT COUNT(*) AS n FROM visits")).status == 200
    bounded = sorted(gw.config.engine.state_dir.rglob("*.parquet"))
    assert bounded
    rel = bounded[0].relative_to(gw.config.policies.data_dir).as_posix()
    status, listed = await admin(gw, "GET", "/v1/admin/data-files")
    assert listed["files"] == ["visits.parquet"], listed
    status, problem = await admin(gw, "GET", "/v1/admin/data-files/schema", params={"source": rel})
    assert status == 400 and "own state" in problem["detail"], problem


async def test_a_proposal_holds_names_and_types_and_no_value(make_gateway: Any) -> None:
    gw = await make_gateway()
    data = gw.config.policies.data_dir
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE ward AS SELECT 'p' || i AS person_id, 987654 + i AS salary,"
        " 3.25 * i AS score, DATE '2019-03-07' + CAST(i AS INTEGER) AS seen,"
        " CASE WHEN i % 2 = 0 THEN 'ZEBRA_CROSSING' ELSE 'UNICORN_RANCH' END AS ward,"
        " i % 3 = 0 AS flag, [i] AS tags FROM range(1, 50) t(i)"
    )
    conn.execute(f"COPY ward TO '{data / 'ward.parquet'}' (FORMAT parquet)")
    conn.execute(f"COPY ward TO '{data / 'ward.csv'}' (HEADER)")
    conn.close()
    status, listed = await admin(gw, "GET", "/v1/admin/data-files")
    assert listed["files"] == ["visits.parquet", "ward.csv", "ward.parquet"]
    for source in ("ward.parquet", "ward.csv"):
        status, proposal = await admin(
            gw, "GET", "/v1/admin/data-files/schema", params={"source": source}
        )
        assert status == 200, proposal
        cols = {c["name"]: (c["type"], c["needs"]) for c in proposal["columns"]}
        assert cols["salary"] == ("int", "bounds") and cols["score"] == ("float", "bounds")
        assert cols["seen"] == ("date", "bounds") and cols["ward"] == ("category", "values")
        assert cols["person_id"] == ("category", "values")  # the steward picks the unit
        assert set(proposal) == {"source", "columns"}
        assert all(set(c) == {"name", "source_type", "type", "needs"} for c in proposal["columns"])
        text = json.dumps(proposal)
        for value in ("ZEBRA", "UNICORN", "987", "2019", "3.25", "p1", "49", "true"):
            assert value not in text, (value, text)
    recs = await gw.services.store.audit_events(AuditFilter(action="dataset.schema"))
    assert [(r.actor, r.detail["path"]) for r in recs] == [
        ("stella", "ward.parquet"), ("stella", "ward.csv"),
    ]  # fmt: skip

    # the steward declares bounds and values, and registers through the dataset PUT
    body = {
        "name": "ward",
        "description": "Ward visits",
        "source": "ward.parquet",
        "privacy_unit": "person_id",
        "max_rows_per_unit": 1,
        "min_tier": "open",
        "columns": {
            "person_id": {"type": "identifier"},
            "salary": {"type": "int", "bounds": [0, 2_000_000]},
            "ward": {"type": "category", "values": ["ZEBRA_CROSSING", "UNICORN_RANCH"]},
        },
        "reason": "new study data, DSA-9",
    }
    status, stored = await admin(gw, "PUT", "/v1/admin/datasets/ward", json=body)
    assert status == 201, stored
    (rec,) = await gw.services.store.audit_events(AuditFilter(action="dataset.update"))
    assert (rec.actor, rec.reason, rec.dataset) == ("stella", "new study data, DSA-9", "ward")


async def test_an_unreadable_file_is_a_listed_problem(make_gateway: Any) -> None:
    gw = await make_gateway()
    (gw.config.policies.data_dir / "broken.parquet").write_bytes(b"not parquet at all")
    status, problem = await admin(
        gw, "GET", "/v1/admin/data-files/schema", params={"source": "broken.parquet"}
    )
    assert status == 400 and problem["problems"] == ["source: cannot be read as a table"]
    status, problem = await admin(gw, "GET", "/v1/admin/data-files/schema")
    assert status == 400 and "source: required" in problem["detail"]

"""Declared columns against the source's schema (``engine/schema.py``): the type table, every
problem listed, at admin PUT (400) and in ``enclave policy check``."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from enclave.cli import main
from enclave.engine.schema import fits, schema_problems, source_schema
from enclave.errors import DatasetUnavailable
from enclave.models import ColumnSpec
from tests.engine.test_bounding import make_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("declared", "source_type", "ok"),
    [
        ("int", "BIGINT", True),
        ("int", "UTINYINT", True),
        ("int", "HUGEINT", True),
        ("int", "DOUBLE", True),
        ("int", "DECIMAL(18,3)", True),
        ("int", "VARCHAR", False),
        ("int", "DATE", False),
        ("int", "BOOLEAN", False),
        ("float", "FLOAT", True),
        ("float", "INTEGER", True),
        ("float", "VARCHAR", False),
        ("date", "DATE", True),
        ("date", "TIMESTAMP", True),
        ("date", "TIMESTAMP WITH TIME ZONE", True),
        ("date", "VARCHAR", False),
        ("date", "BIGINT", False),
        ("category", "VARCHAR", True),
        ("category", "BIGINT", True),
        ("category", "DOUBLE", True),
        ("category", "BOOLEAN", True),
        ("category", "ENUM('a', 'b')", True),
        ("category", "BLOB", False),
        ("category", "VARCHAR[]", False),
        ("category", "INTEGER[3]", False),
        ("category", "STRUCT(a INTEGER)", False),
        ("category", "MAP(VARCHAR, INTEGER)", False),
        ("identifier", "UUID", True),
        ("identifier", "BIGINT", True),
        ("identifier", "BLOB", False),
    ],
)
def test_type_table(declared: str, source_type: str, ok: bool) -> None:
    assert fits(declared, source_type) is ok


def test_schema_of_each_source_kind(tmp_path: Path, visits_parquet: Path) -> None:
    csv = tmp_path / "v.csv"
    db = tmp_path / "v.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE visits AS SELECT * FROM read_parquet(?)", [str(visits_parquet)])
    con.execute(f"COPY visits TO '{csv}' (HEADER)")
    con.close()
    expected = source_schema(make_spec(visits_parquet), tmp_path / "state")
    assert expected["age"] in ("INTEGER", "BIGINT", "SMALLINT") and expected["region"] == "VARCHAR"
    assert source_schema(make_spec(db, table="visits"), tmp_path / "state") == expected
    from_csv = source_schema(make_spec(csv), tmp_path / "state")
    assert set(from_csv) == set(expected)
    assert schema_problems(make_spec(csv), from_csv) == []
    with pytest.raises(DatasetUnavailable):
        source_schema(make_spec(tmp_path / "absent.parquet"), tmp_path / "state")
    assert not list((tmp_path / "state" / "prepare").iterdir())


def test_every_problem_is_listed(visits_parquet: Path) -> None:
    spec = make_spec(visits_parquet)
    spec = replace(
        spec,
        columns=(
            *spec.columns,
            ColumnSpec("nope", "int", (0, 1)),
            ColumnSpec("REGION2", "category", None, ("a",)),
        ),
    )
    schema = {"PERSON_ID": "VARCHAR", "age": "VARCHAR", "sex": "VARCHAR", "region": "VARCHAR"}
    schema |= {"cost": "DOUBLE", "visit_date": "VARCHAR"}
    assert schema_problems(spec, schema) == [
        "dataset visits: columns.age: declared int, but the source column is VARCHAR"
        " (needs a numeric type)",
        "dataset visits: columns.visit_date: declared date, but the source column is VARCHAR"
        " (needs a DATE or TIMESTAMP type)",
        "dataset visits: columns.nope: not found in the source",
        "dataset visits: columns.REGION2: not found in the source",
    ]


async def test_admin_put_refuses_columns_the_source_lacks(make_gateway: Any) -> None:
    gw = await make_gateway()
    admin = gw.auth("root", ["admin"])
    current = await (await gw.client.get("/v1/admin/datasets/visits", headers=admin)).json()
    body = {
        k: v
        for k, v in current.items()
        if k not in ("version", "created_at", "changed_by", "versions")
    }
    body["columns"] = {
        **body["columns"],
        "ward": {"type": "category", "values": ["a"]},
        "sex": {"type": "int", "bounds": [0, 1]},
    }
    resp = await gw.client.put("/v1/admin/datasets/visits", json=body, headers=admin)
    problem = await resp.json()
    assert resp.status == 400, problem
    assert problem["problems"] == [
        "dataset visits: columns.sex: declared int, but the source column is VARCHAR"
        " (needs a numeric type)",
        "dataset visits: columns.ward: not found in the source",
    ]
    after = await (await gw.client.get("/v1/admin/datasets/visits", headers=admin)).json()
    assert after["version"] == current["version"]


def test_policy_check_reports_columns_the_source_lacks(
    tmp_path: Path, visits_parquet: Path
) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    (tmp_path / "data").mkdir()
    shutil.copy(visits_parquet, tmp_path / "data" / "visits.parquet")
    ok = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "policies")])
    assert ok.exit_code == 0, ok.output
    path = tmp_path / "policies" / "datasets" / "visits.yaml"
    path.write_text(path.read_text().replace("  age:", "  agee:"))
    result = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "policies")])
    assert result.exit_code == 1
    assert "dataset visits: columns.agee: not found in the source" in result.output

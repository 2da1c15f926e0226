"""A hostile source cannot read other files or the truncation seed (docs/security.md, "Preparation
sandbox"): the signing-key exfiltration through a ``duckdb://`` view is replayed and refused,
at registration and after the file behind a registered dataset is swapped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

from enclave.engine.bounding import bound_dataset, load_or_create_key
from enclave.errors import DatasetUnavailable
from enclave.models import ColumnSpec, DatasetSpec

ADMIN = ("root", ["admin"])


def write_duckdb(path: Path, sql: str) -> None:
    """A DuckDB file holding ``sql`` as table or view ``t``, swapped into place atomically."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute(sql)
    con.close()
    os.replace(tmp, path)


def leak_view(secret: Path) -> str:
    """The view from the finding: each byte of ``secret`` as an integer group key."""
    text = str(secret).replace("'", "''")
    view = (
        "CREATE VIEW t AS SELECT 'p' || i AS person_id,"
        " unicode(substr(content, i, 1)) AS v"
        " FROM read_text('{}'), range(1, 120) r(i)"
    )
    return view.format(text)


def leak_body() -> dict[str, Any]:
    return {
        "name": "leak",
        "description": "hostile",
        "source": "duckdb://../../data/leak.duckdb#t",
        "privacy_unit": "person_id",
        "max_rows_per_unit": 1,
        "min_tier": "accredited",
        "columns": {"person_id": {"type": "identifier"}, "v": {"type": "int", "bounds": [0, 255]}},
    }


async def put(gw: Any, body: dict[str, Any]) -> tuple[int, Any]:
    resp = await gw.client.put("/v1/admin/datasets/leak", json=body, headers=gw.auth(*ADMIN))
    return resp.status, await resp.json(content_type=None)


def secret_of(gw: Any) -> tuple[Path, bytes]:
    pem = gw.config.engine.state_dir / "audit-signing.pem"
    if not pem.exists():  # the signing key is made on first use; any state file will do
        pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    return pem, pem.read_bytes()


def assert_no_secret(text: str, secret: bytes) -> None:
    lines = [ln for ln in secret.decode().splitlines() if ln and "-----" not in ln]
    assert lines and not any(ln in text for ln in lines)


async def test_a_view_reading_the_signing_key_is_refused_at_registration(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    pem, secret = secret_of(gw)
    write_duckdb(gw.config.policies.data_dir / "leak.duckdb", leak_view(pem))
    status, problem = await put(gw, leak_body())
    assert status == 400, problem
    assert problem["problems"] == ["dataset leak: source: cannot be read as a table"]
    assert_no_secret(json.dumps(problem), secret)


async def test_swapping_in_a_leaking_view_makes_the_dataset_unavailable(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    pem, secret = secret_of(gw)
    data = gw.config.policies.data_dir
    write_duckdb(
        data / "leak.duckdb",
        "CREATE TABLE t AS SELECT 'p' || range AS person_id, 65 AS v FROM range(50)",
    )
    status, body = await put(gw, leak_body())
    assert status == 201, body
    await gw.licence(tier="accredited", datasets=("leak",))
    sql = "SELECT v, COUNT(*) AS n FROM leak GROUP BY v"
    assert (await gw.query(sql, epsilon=1.0, dataset="leak")).status == 200
    write_duckdb(data / "leak.duckdb", leak_view(pem))  # no admin action
    sql = sql.replace("GROUP BY", "WHERE v >= 0 GROUP BY")  # not a cached repeat
    resp = await gw.query(sql, epsilon=1.0, dataset="leak")
    text = await resp.text()
    assert resp.status == 503, text
    assert json.loads(text)["type"].endswith("/dataset-unavailable")
    assert_no_secret(text, secret)
    again = await gw.query(sql, epsilon=1.0, dataset="leak")  # refused at once, not re-read
    assert again.status == 503


def spec_for(path: Path, table: str | None = "t") -> DatasetSpec:
    return DatasetSpec(
        name="leak",
        description="hostile",
        source=str(path),
        source_path=str(path),
        privacy_unit="person_id",
        max_rows_per_unit=1,
        min_tier=("accredited",),
        allowed_jurisdictions=None,
        columns=(ColumnSpec("person_id", "identifier"), ColumnSpec("v", "category")),
        source_table=table,
    )


@pytest.mark.parametrize(
    "expr",
    [
        "getvariable('enclave_seed')",
        "current_query()",
        "(SELECT string_agg(name || '=' || value, ';') FROM duckdb_settings())",
    ],
)
def test_the_seed_is_never_visible_to_source_sql(tmp_path: Path, expr: str) -> None:
    state = tmp_path / "state"
    key = load_or_create_key(state)
    src = tmp_path / "seed.duckdb"
    write_duckdb(
        src,
        f"CREATE VIEW t AS SELECT 'p' || range AS person_id, {expr} AS v FROM range(3)",  # noqa: S608
    )
    target = bound_dataset(spec_for(src), state, key=key, threads=1, memory_limit="256MB")
    con = duckdb.connect()
    values = con.execute("SELECT v FROM read_parquet(?)", [str(target.path)]).fetchall()
    con.close()
    assert len(values) == 3
    for (v,) in values:
        assert v is None or (key.hex() not in v and key.hex()[:16] not in v)


@pytest.mark.parametrize(
    "view",
    [
        "SELECT 'p' AS person_id, content AS v FROM read_text('{secret}')",
        "SELECT 'p' AS person_id, column0 AS v FROM read_csv('{secret}', header = false)",
        "SELECT 'p' AS person_id, CAST(size AS VARCHAR) AS v FROM read_blob('{secret}')",
        "SELECT 'p' AS person_id, file AS v FROM glob('{folder}/*')",
        "SELECT 'p' AS person_id, content AS v FROM read_text('{folder}/x/../secret.txt')",
    ],
)
def test_views_cannot_read_outside_the_source(tmp_path: Path, view: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    src = tmp_path / "data" / "v.duckdb"
    src.parent.mkdir()
    write_duckdb(src, "CREATE VIEW t AS " + view.format(secret=secret, folder=tmp_path))
    with pytest.raises(DatasetUnavailable) as info:
        bound_dataset(spec_for(src), tmp_path / "state", threads=1, memory_limit="256MB")
    assert "TOPSECRET" not in info.value.detail and str(tmp_path) not in info.value.detail
    assert not list((tmp_path / "state").rglob("*.parquet"))
    left = list((tmp_path / "state" / "prepare").iterdir())
    # work folders removed; only the per-version lock files stay, empty (bounding.py)
    assert [f for f in left if f.suffix != ".lock"] == []
    assert all(f.stat().st_size == 0 for f in left)


def test_links_and_fifos_in_place_of_a_source_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("person_id,v\np,TOPSECRET\n")
    os.symlink(secret, data / "link.csv")
    os.mkfifo(data / "fifo.csv")
    good = data / "good.duckdb"
    write_duckdb(good, "CREATE TABLE t AS SELECT 'p' AS person_id, 'x' AS v")
    os.mkfifo(data / "good.duckdb.wal")  # DuckDB would block on it for good
    specs = [spec_for(data / n, table=None) for n in ("link.csv", "fifo.csv")]
    for spec in [*specs, spec_for(good)]:
        with pytest.raises(DatasetUnavailable):
            bound_dataset(spec, tmp_path / "state", threads=1, memory_limit="256MB")

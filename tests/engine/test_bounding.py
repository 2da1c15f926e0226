"""Per-unit truncation: caps, whole light units, keyed determinism, reuse, sources, errors."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from enclave.engine import bounding
from enclave.engine.bounding import (
    KEY_FILE,
    bound_dataset,
    bounded_target,
    load_or_create_key,
)
from enclave.errors import DatasetUnavailable
from enclave.models import ColumnSpec, DatasetSpec

K = 5
HEAVY = ("H1", "H2", "H3")
COLS = "person_id, age, sex, region, cost, visit_date"


def make_spec(path: Path, *, version: int = 1, table: str | None = None) -> DatasetSpec:
    return DatasetSpec(
        name="visits",
        description="test",
        source=str(path),
        source_path=str(path),
        privacy_unit="person_id",
        max_rows_per_unit=K,
        min_tier=("standard",),
        allowed_jurisdictions=None,
        columns=(
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("age", "int", (0, 110)),
            ColumnSpec("sex", "category", None, ("F", "M")),
            ColumnSpec("region", "category", None, ("north", "south", "east", "west", "central")),
            ColumnSpec("cost", "float", (0, 50000)),
            ColumnSpec("visit_date", "date", (dt.date(2015, 1, 1), dt.date(2025, 12, 31))),
        ),
        version=version,
        source_table=table,
    )


SOURCE_SQL = """
WITH units AS (
    SELECT 'H' || (i + 1) AS person_id, 100 AS n FROM range(3) t(i)
    UNION ALL SELECT 'S6', 6
    UNION ALL SELECT 'U' || i, i % 5 + 1 FROM range(200) t(i)
    UNION ALL SELECT NULL, 3
), numbered AS (
    SELECT u.person_id, row_number() OVER () AS idx
    FROM units u, unnest(range(u.n)) AS r(j)
)
SELECT person_id, (idx % 90)::INTEGER AS age,
       CASE WHEN idx % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
       ['north', 'south', 'east', 'west', 'central'][1 + idx % 5] AS region,
       idx * 1.5 AS cost, DATE '2015-01-01' + idx::INTEGER AS visit_date,
       'do-not-read' AS secret_note
FROM numbered ORDER BY idx
"""


def write_source(path: Path) -> Path:
    con = duckdb.connect()
    con.execute(f"COPY ({SOURCE_SQL}) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_source(tmp_path / "src.parquet")


def read(path: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    sql = f"SELECT {COLS} FROM read_parquet(?) ORDER BY ALL"  # noqa: S608
    rows = con.execute(sql, [str(path)]).fetchall()
    con.close()
    return rows


def per_unit(rows: list[tuple[object, ...]]) -> dict[object, list[tuple[object, ...]]]:
    out: dict[object, list[tuple[object, ...]]] = {}
    for row in rows:
        out.setdefault(row[0], []).append(row)
    return out


def test_caps_heavy_units_and_keeps_others_whole(tmp_path: Path, source: Path) -> None:
    target = bound_dataset(make_spec(source), tmp_path / "state")
    bounded = per_unit(read(target.path))
    original = per_unit(read(source))
    assert None not in bounded  # rows without a unit are dropped
    assert set(bounded) == set(original) - {None}
    for unit, rows in original.items():
        if unit is None:
            continue
        if len(rows) <= K:
            assert bounded[unit] == rows  # kept whole
        else:
            assert len(bounded[unit]) == K
            assert set(bounded[unit]) <= set(rows)
    # the choice is not simply the first rows in file order
    assert any(bounded[u] != original[u][:K] for u in HEAVY)


def test_a_version_is_bounded_once_then_reused(tmp_path: Path, source: Path) -> None:
    first = bound_dataset(make_spec(source), tmp_path / "state")
    again = bound_dataset(make_spec(source), tmp_path / "state")
    assert first.made and not again.made and first == again


def test_declared_columns_only_with_declared_types(tmp_path: Path, source: Path) -> None:
    target = bound_dataset(make_spec(source), tmp_path / "state")
    con = duckdb.connect()
    schema = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(target.path)]).fetchall()
    con.close()
    assert [(r[0], r[1]) for r in schema] == [
        ("person_id", "VARCHAR"),
        ("age", "BIGINT"),
        ("sex", "VARCHAR"),
        ("region", "VARCHAR"),
        ("cost", "DOUBLE"),
        ("visit_date", "DATE"),
        ("age#clamped", "BIGINT"),
        ("cost#clamped", "DECIMAL(18,6)"),
    ]


def test_clamped_columns_hold_the_clamped_values(tmp_path: Path, source: Path) -> None:
    spec = make_spec(source)
    narrow = replace(
        spec,
        columns=tuple(
            replace(c, bounds=(10, 20)) if c.name == "age" else
            replace(c, bounds=(3.25, 1e12)) if c.name == "cost" else c
            for c in spec.columns
        ),
    )  # fmt: skip
    target = bound_dataset(narrow, tmp_path / "state")
    con = duckdb.connect()
    rows = con.execute(
        'SELECT age, "age#clamped", cost, "cost#clamped", typeof("cost#clamped") '
        "FROM read_parquet(?)",
        [str(target.path)],
    ).fetchall()
    con.close()
    assert rows
    for age, age_c, cost, cost_c, cost_type in rows:
        assert age_c == (None if age is None else min(max(age, 10), 20))
        assert cost_c == Decimal(str(min(max(cost, 3.25), 1e12))).quantize(Decimal("0.000001"))
        assert cost_type == "DECIMAL(38,6)"  # bounds beyond 1e11


def test_bounds_and_format_are_in_the_fingerprint(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(source)
    key = load_or_create_key(tmp_path)
    base = bounded_target(spec, tmp_path, key)
    wider = replace(
        spec,
        columns=tuple(replace(c, bounds=(0, 111)) if c.name == "age" else c for c in spec.columns),
    )
    assert bounded_target(wider, tmp_path, key).fingerprint != base.fingerprint
    assert bounded_target(spec, tmp_path, key) == base
    monkeypatch.setattr(bounding, "_FORMAT", "bounded-v3:some-other-layout")
    assert bounded_target(spec, tmp_path, key).fingerprint != base.fingerprint


def test_same_key_same_choice_other_key_differs(tmp_path: Path, source: Path) -> None:
    a = bound_dataset(make_spec(source), tmp_path / "a")
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / KEY_FILE, tmp_path / "b" / KEY_FILE)
    b = bound_dataset(make_spec(source), tmp_path / "b")
    c = bound_dataset(make_spec(source), tmp_path / "c")  # fresh random key
    assert a.path.name == b.path.name
    assert read(a.path) == read(b.path)
    heavy_a = {u: r for u, r in per_unit(read(a.path)).items() if u in HEAVY}
    heavy_c = {u: r for u, r in per_unit(read(c.path)).items() if u in HEAVY}
    assert heavy_a != heavy_c
    assert a.path.name != c.path.name  # the seed id is part of the fingerprint


def test_key_file_private_and_reused(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    path = tmp_path / KEY_FILE
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temp file left


def test_reused_across_restarts_and_rebuilt_for_new_version(tmp_path: Path, source: Path) -> None:
    state = tmp_path / "state"
    first = bound_dataset(make_spec(source), state)
    os.utime(first.path, (1_000_000_000, 1_000_000_000))  # make a rebuild visible
    again = bound_dataset(make_spec(source), state)
    assert again == first
    assert first.path.stat().st_mtime == 1_000_000_000
    v2 = bound_dataset(make_spec(source, version=2), state)
    assert v2.path != first.path and "-v2-" in v2.path.name
    assert sorted(p.name for p in (state / "bounded").iterdir()) == sorted(
        [first.path.name, v2.path.name]
    )  # no temporary files left behind


def test_csv_and_duckdb_sources_give_the_same_bounded_rows(tmp_path: Path, source: Path) -> None:
    csv_path, db_path = tmp_path / "src.csv", tmp_path / "src.duckdb"
    con = duckdb.connect(str(db_path))
    con.execute(f"COPY (SELECT * FROM read_parquet('{source}')) TO '{csv_path}' (HEADER)")  # noqa: S608
    con.execute("CREATE TABLE visits AS SELECT * FROM read_parquet(?)", [str(source)])
    con.close()
    state = tmp_path / "state"
    from_parquet = read(bound_dataset(make_spec(source), state).path)
    from_csv = read(bound_dataset(make_spec(csv_path), state).path)
    from_db = read(bound_dataset(make_spec(db_path, table="visits"), state).path)
    # the ranking hashes row content, so the format of the source does not change the choice
    assert from_csv == from_parquet
    assert from_db == from_parquet
    # the DuckDB source was opened read-only and left as it was
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT count(*) FROM visits").fetchone() == (len(read(source)),)
    con.close()


def test_unreadable_sources_raise_a_safe_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not a parquet file at all")
    for spec in (
        make_spec(bad),
        make_spec(tmp_path / "missing.parquet"),
        make_spec(bad, table="visits"),
    ):
        with pytest.raises(DatasetUnavailable) as info:
            bound_dataset(spec, tmp_path / "state")
        assert "broken" not in info.value.detail and "missing" not in info.value.detail
        assert "Error" not in info.value.detail
    assert list((tmp_path / "state" / "bounded").glob("*")) == []


def test_undeclared_source_column_is_an_error(tmp_path: Path, source: Path) -> None:
    spec = make_spec(source)
    spec = DatasetSpec(**{**spec.__dict__, "columns": (*spec.columns, ColumnSpec("nope", "int"))})
    with pytest.raises(DatasetUnavailable):
        bound_dataset(spec, tmp_path / "state")

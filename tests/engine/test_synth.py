"""The synthetic visits generator: shape, skew, determinism."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from enclave.engine.synth import REGIONS, generate_visits


def _digest(path: Path) -> str:
    con = duckdb.connect()
    row = con.execute(
        "SELECT md5(string_agg(concat_ws('|', person_id, age, sex, region, cost, visit_date),"
        " ',' ORDER BY person_id, visit_date, cost)) FROM read_parquet(?)",
        [str(path)],
    ).fetchone()
    con.close()
    assert row is not None
    return str(row[0])


def test_shape_and_ranges(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    persons = generate_visits(path, 20_000, seed=3)
    con = duckdb.connect()
    schema = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    assert [(r[0], r[1]) for r in schema] == [
        ("person_id", "VARCHAR"),
        ("age", "INTEGER"),
        ("sex", "VARCHAR"),
        ("region", "VARCHAR"),
        ("cost", "DOUBLE"),
        ("visit_date", "DATE"),
    ]
    stats = con.execute(
        "SELECT count(*), count(DISTINCT person_id), min(age), max(age), min(cost),"
        " min(visit_date), max(visit_date), list(DISTINCT sex ORDER BY sex),"
        " list(DISTINCT region ORDER BY region), count(*) FILTER (cost > 50000)"
        " FROM read_parquet(?)",
        [str(path)],
    ).fetchone()
    assert stats is not None
    rows, units, age_lo, age_hi, cost_lo, d_lo, d_hi, sexes, regions, above = stats
    assert rows == 20_000
    assert units == persons
    assert 0 <= age_lo and age_hi <= 110
    assert cost_lo >= 0
    assert dt.date(2015, 1, 1) <= d_lo and d_hi <= dt.date(2025, 12, 31)
    assert sexes == ["F", "M"]
    assert regions == sorted(REGIONS)
    assert 0 < above < rows * 0.01  # a few values above the declared bound, not many
    visits = con.execute(
        "SELECT count(*) FILTER (n <= 5) / count(*), max(n) FROM"
        " (SELECT count(*) AS n FROM read_parquet(?) GROUP BY person_id)",
        [str(path)],
    ).fetchone()
    con.close()
    assert visits is not None
    assert visits[0] > 0.95  # most persons have 1-5 visits ...
    assert visits[1] >= 20  # ... and a few contribute dozens


def test_same_seed_same_rows_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    assert generate_visits(a, 5_000, seed=11) == generate_visits(b, 5_000, seed=11)
    generate_visits(c, 5_000, seed=12)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_rejects_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_visits(tmp_path / "x.parquet", 0)

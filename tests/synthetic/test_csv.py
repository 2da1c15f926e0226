"""The synthetic table's CSV file: no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from enclave.synthetic.mst import write_csv


def test_text_cells_that_start_a_formula_get_an_apostrophe(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "region": ['=HYPERLINK("http://evil.example")', "@SUM(A1)", "+1", "-2", "north", None],
            "n": [-3, 0, 1, 2, 3, None],
            "cost": [-1.5, 0.0, 1.25, 2.0, 3.0, 4.0],
        }
    )
    path = tmp_path / "synthetic.csv"
    write_csv(frame, path)
    with path.open(newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header == ["region", "n", "cost"]
    assert [r[0] for r in rows] == [
        "'=HYPERLINK(\"http://evil.example\")", "'@SUM(A1)", "'+1", "'-2", "north", ""
    ]  # fmt: skip
    assert [r[1] for r in rows] == ["-3", "0", "1", "2", "3", ""]  # numbers as they are
    assert rows[0][2] == "-1.5"

"""``enclave report`` and ``enclave audit verify --report`` on a real SQLite store: the report
of the seeded log (the store suite's hand-computed totals), checked against a real export, and
refused once edited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from enclave.cli import main
from enclave.config import sqlite_path
from enclave.store.sqlite import SqliteStore
from tests.store.conftest import Clock
from tests.store.test_transparency import FEBRUARY, JANUARY, seed


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def deployment(config_factory: Any, tmp_path: Path) -> list[str]:
    cfg = config_factory()
    path = Path(sqlite_path(cfg.store.url))
    path.parent.mkdir(parents=True, exist_ok=True)

    async def fill() -> None:
        clock = Clock()
        store = SqliteStore(str(path), clock=clock)
        await store.open()
        try:
            await seed(store, clock)
        finally:
            await store.close()

    asyncio.run(fill())
    return ["--config", str(cfg.path)]


def _files(base: list[str], tmp_path: Path) -> tuple[Path, Path, Path]:
    report, exported, key = tmp_path / "r.json", tmp_path / "e.jsonl", tmp_path / "k.pem"
    made = _cli("report", *base, "--from", "2026-01-01", "--to", "2026-03-01",
                "--period", "month", "--out", str(report))  # fmt: skip
    assert made.exit_code == 0, made.output
    assert _cli("audit", "export", *base, "--out", str(exported)).exit_code == 0
    assert _cli("audit", "key", *base, "--out", str(key)).exit_code == 0
    return report, exported, key


def test_report_then_verify_it_against_an_export(deployment: list[str], tmp_path: Path) -> None:
    report, exported, key = _files(deployment, tmp_path)
    body = json.loads(report.read_text())
    assert body["periods"] == [JANUARY, FEBRUARY] and body["upto"] == 17
    args = ["audit", "verify", "--file", str(exported), "--report", str(report)]
    ok = _cli(*args, "--key", str(key))
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("VALID: 18 records")  # the export's own record is the 18th

    body["periods"][1]["datasets"][1]["queries"]["released"] = 7
    report.write_text(json.dumps(body))
    edited = _cli(*args, "--key", str(key))
    assert edited.exit_code == 1
    assert (
        "report: periods[2026-02].datasets[visits].queries.released: the report says 7, "
        "the export gives 1" in edited.stdout
    )
    body["periods"][1]["datasets"][1]["queries"]["released"] = 1
    body["signed_head"]["signature"] = body["signed_head"]["signature"][::-1]
    report.write_text(json.dumps(body))
    assert _cli(*args).exit_code == 0  # without the key, only the hash can be checked
    forged = _cli(*args, "--key", str(key), "--json")
    assert forged.exit_code == 1
    assert json.loads(forged.stdout)["problems"] == [
        "report: signed_head: the head's signature does not verify with this key"
    ]


def test_formats_and_usage_errors(deployment: list[str], tmp_path: Path) -> None:
    csv_out = _cli("report", *deployment, "--period", "month", "--format", "csv")
    assert csv_out.exit_code == 0
    assert csv_out.stdout.splitlines()[0].startswith("row,period,from,to,dataset,epsilon")
    html = _cli("report", *deployment, "--format", "html")
    assert html.exit_code == 0 and "<h1>Transparency report</h1>" in html.stdout
    bad = _cli("report", *deployment, "--from", "2026-13-01", "--to", "soon")
    assert bad.exit_code == 2
    assert "from: must be a date" in bad.output and "to: must be a date" in bad.output
    lonely = _cli("audit", "verify", *deployment, "--report", str(tmp_path / "x.json"))
    assert lonely.exit_code == 2
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    report, exported, _ = _files(deployment, tmp_path)
    wrong = _cli("audit", "verify", "--file", str(exported), "--report", str(junk))
    assert wrong.exit_code == 1 and "report: the report is not a JSON object" in wrong.stdout

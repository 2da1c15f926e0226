"""`enclave audit verify|export|head|key` against a real SQLite store and real export files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from enclave.audit import export
from enclave.audit.record import AuditDraft
from enclave.cli import main
from enclave.config import sqlite_path
from enclave.store import connected_store

HOSTILE = 'SELECT COUNT(*) FROM visits -- "x"\n\u2028 \U0001f600 =1+1'


def _fill(url: str, n: int, start: int = 0) -> None:
    async def go() -> None:
        async with connected_store(url) as store:
            for i in range(start, start + n):
                await store.append(
                    AuditDraft(
                        action="query",
                        outcome="ok" if i % 3 else "denied",
                        actor=f"user{i % 2}",
                        roles=("researcher",),
                        dataset="visits",
                        sql=f"{HOSTILE} {i}",
                        epsilon=0.1,
                        detail={"i": i},
                    )
                )

    asyncio.run(go())


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args], catch_exceptions=False)


@pytest.fixture
def deployment(config_factory: Any, tmp_path: Path) -> tuple[Any, list[str]]:
    cfg = config_factory()
    _fill(cfg.store.url, 9)
    return cfg, ["--config", str(cfg.path)]


def test_verify_the_store(deployment: Any) -> None:
    cfg, base = deployment
    result = _cli("verify", *base)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("VALID: 9 records; head ")
    as_json = json.loads(_cli("verify", *base, "--json").stdout)
    assert (as_json["valid"], as_json["count"], as_json["problems"]) == (True, 9, [])
    con = sqlite3.connect(sqlite_path(cfg.store.url))
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET sql = 'SELECT 1' WHERE seq = 4")
    con.commit()
    con.close()
    bad = _cli("verify", *base)
    assert bad.exit_code == 1
    assert "INVALID" in bad.stdout and "chain broken at seq 4" in bad.stdout


def test_export_then_verify_the_file_offline(deployment: Any, tmp_path: Path) -> None:
    _, base = deployment
    out, pub = tmp_path / "audit.jsonl", tmp_path / "pub.pem"
    assert _cli("key", *base, "--out", str(pub)).exit_code == 0
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    exported = _cli("export", *base, "--out", str(out))
    assert exported.exit_code == 0 and "exported 10 records" in exported.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 11  # nine records, the export's own record, the trailer
    assert json.loads(lines[9])["action"] == "audit.export"
    assert json.loads(lines[9])["actor"].startswith("cli")
    assert json.loads(lines[0])["sql"] == f"{HOSTILE} 0"
    ok = _cli("verify", "--file", str(out), "--key", str(pub))
    assert ok.exit_code == 0 and ok.stdout.startswith("VALID: 10 records")
    unkeyed = _cli("verify", "--file", str(out))
    assert unkeyed.exit_code == 0 and "not checked against a key" in unkeyed.stdout

    edited = [*lines]
    record = json.loads(edited[5])
    record["actor"] = "mallory"
    edited[5] = json.dumps(record)
    out.write_text("\n".join(edited) + "\n")
    bad = _cli("verify", "--file", str(out), "--key", str(pub))
    assert bad.exit_code == 1 and "chain broken at seq 6" in bad.stdout
    assert "mallory" not in bad.stdout

    out.write_text("\n".join(lines[:-1]) + "\n")  # the download stopped before the trailer
    cut = _cli("verify", "--file", str(out))
    assert cut.exit_code == 1 and "incomplete" in cut.stdout


def test_saved_head_catches_truncation_offline(deployment: Any, tmp_path: Path) -> None:
    cfg, base = deployment
    head, pub, out = tmp_path / "head.json", tmp_path / "pub.pem", tmp_path / "e.jsonl"
    _cli("key", *base, "--out", str(pub))
    saved = _cli("head", *base, "--out", str(head))
    assert saved.exit_code == 0 and json.loads(head.read_text())["seq"] == 9
    _fill(cfg.store.url, 3, start=9)
    assert _cli("verify", *base, "--head", str(head), "--key", str(pub)).exit_code == 0
    _cli("export", *base, "--out", str(out))
    good = _cli("verify", "--file", str(out), "--head", str(head), "--key", str(pub))
    assert good.exit_code == 0, good.stdout

    con = sqlite3.connect(sqlite_path(cfg.store.url))
    con.execute("DROP TRIGGER audit_no_delete")
    con.execute("DELETE FROM audit WHERE seq > 6")
    con.commit()
    con.close()
    assert _cli("verify", *base).exit_code == 0  # consistent on its own
    cut = _cli("verify", *base, "--head", str(head), "--key", str(pub))
    assert cut.exit_code == 1 and "truncated: the log ends at seq 6" in cut.stdout
    _cli("export", *base, "--out", str(out))
    cut_file = _cli("verify", "--file", str(out), "--head", str(head), "--key", str(pub))
    assert cut_file.exit_code == 1 and "truncated" in cut_file.stdout


def test_usage_errors_and_csv(deployment: Any, tmp_path: Path) -> None:
    _, base = deployment
    head = tmp_path / "head.json"
    _cli("head", *base, "--out", str(head))
    no_key = _cli("verify", *base, "--head", str(head))
    assert no_key.exit_code == 2 and "--key" in no_key.output
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert _cli("verify", *base, "--head", str(head), "--key", str(junk)).exit_code == 2
    csv_out = _cli("export", *base, "--format", "csv")
    assert csv_out.exit_code == 0
    rows = csv_out.stdout.splitlines()
    assert rows[0].startswith("seq,ts,request_id,actor")
    assert "'=1+1" not in rows[1] and "=1+1" in csv_out.stdout  # inside the cell, not leading


def test_progress_goes_to_stderr(deployment: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, base = deployment
    monkeypatch.setattr(export, "PROGRESS_EVERY", 4)
    result = _cli("verify", *base)
    assert result.exit_code == 0
    assert "4 records checked" in result.stderr and "8 records checked" in result.stderr
    assert "checked" not in result.stdout


def test_a_missing_store_is_an_error_not_an_empty_valid_log(config_factory: Any) -> None:
    cfg = config_factory()
    for command in ("verify", "head"):
        extra = ["--out", "h.json"] if command == "head" else []
        result = _cli(command, "--config", str(cfg.path), *extra)
        assert result.exit_code == 1 and "no store" in result.stderr
    assert not Path(sqlite_path(cfg.store.url)).exists()


def test_verify_ledger_reports_charges_without_ledger_rows(deployment: Any, tmp_path: Path) -> None:
    """These records were appended as released queries without a debit: the chain is valid,
    the ledger check names every one of them."""
    _, base = deployment
    assert _cli("verify", *base).exit_code == 0
    result = _cli("verify", *base, "--ledger")
    assert result.exit_code == 1
    assert "ledger at seq 2: the charged record has no ledger row" in result.stdout
    assert "ledger at seq 1:" not in result.stdout  # outcome denied: charged nothing
    out = tmp_path / "x.jsonl"
    out.write_text("")
    assert _cli("verify", "--file", str(out), "--ledger").exit_code == 2

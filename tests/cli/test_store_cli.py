"""``enclave store migrate|copy``: schema creation (also from several processes at once) and
moving a SQLite deployment to PostgreSQL with the audit chain verified after the copy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from enclave.cli import main
from enclave.models import utcnow
from enclave.store import chain
from enclave.store.driver import Tx
from enclave.store.schema import SCHEMA_VERSION
from enclave.store.schema import SQLITE as MIGRATIONS
from enclave.store.sqlite import SqliteStore
from tests.conftest import REPO
from tests.store.conftest import draft, temporary_database
from tests.store.test_copy import populate


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with temporary_database() as url:
        yield url


def _sqlite_source(tmp_path: Path, extra_records: int) -> str:
    """A populated SQLite deployment, plus ``extra_records`` audit records appended in one
    transaction (the store's own append, minus an fsync per record)."""
    path = tmp_path / "old" / "enclave.db"

    async def many(tx: Tx) -> None:
        for i in range(extra_records):
            await chain.append_locked(tx, draft(sql=f"SELECT {i}"), utcnow())

    async def go() -> None:
        store = SqliteStore(str(path))
        await store.open()
        try:
            await populate(store, 30)
            await store.driver.write(many, "chain")
        finally:
            await store.close()

    asyncio.run(go())
    return f"sqlite:///{path}"


def test_migrate_sqlite(config_factory: Any) -> None:
    cfg = config_factory()
    result = CliRunner().invoke(main, ["store", "migrate", "--config", str(cfg.path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"store (sqlite) is at schema version {SCHEMA_VERSION}\n"
    assert (cfg.path.parent / "state" / "enclave.db").is_file()


@pytest.mark.postgres
def test_migrate_from_several_processes_at_once(config_factory: Any, pg_url: str) -> None:
    cfg = config_factory(store_url=pg_url)
    cmd = [sys.executable, "-m", "enclave", "store", "migrate", "--config", str(cfg.path)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, outputs
    assert {out for out, _ in outputs} == {
        f"store (postgresql) is at schema version {SCHEMA_VERSION}\n"
    }

    async def versions() -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(pg_url)
        try:
            return [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
        finally:
            await conn.close()

    assert sorted(asyncio.run(versions())) == [v for v, _ in MIGRATIONS]


@pytest.mark.postgres
def test_copy_sqlite_to_postgres(tmp_path: Path, pg_url: str) -> None:
    source = _sqlite_source(tmp_path, extra_records=10_000)
    runner = CliRunner()
    result = runner.invoke(main, ["store", "copy", "--from", source, "--to", pg_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "copied 10000 records so far (audit)"
    assert lines[-1].startswith("audit chain verified on the target: 10035 record(s), head ")
    # a second copy into the now non-empty database is refused, and changes nothing
    again = runner.invoke(main, ["store", "copy", "--from", source, "--to", pg_url])
    assert again.exit_code == 1
    assert "error: the target store is not empty (table audit has rows)" in again.output


def test_copy_refuses_a_missing_source(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    target = f"sqlite:///{tmp_path / 'new.db'}"
    result = CliRunner().invoke(main, ["store", "copy", "--from", missing, "--to", target])
    assert result.exit_code == 1
    assert "no SQLite database at" in result.output
    assert not (tmp_path / "nope.db").exists()

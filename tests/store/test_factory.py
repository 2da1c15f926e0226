"""``open_store(url)`` picks the adapter; ``connected_store`` opens and closes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from enclave.errors import ConfigError
from enclave.store import connected_store, open_store
from enclave.store.sqlite import SqliteStore
from tests.store.conftest import draft


async def test_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "state" / "e.db"
    path.parent.mkdir()
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SqliteStore) and store.path == str(path)
    async with connected_store(f"sqlite:///{path}") as opened:
        await opened.ping()
        assert (await opened.append(draft())).seq == 1
    assert path.exists()


def test_postgres_url() -> None:
    pytest.importorskip("asyncpg")
    from enclave.store.postgres import PostgresStore

    for url in ("postgresql://u@h:5432/db", "postgres://u@h/db"):
        assert isinstance(open_store(url), PostgresStore)


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://relative", "", "file:///x.db"])
def test_unknown_url(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


async def test_unopenable_sqlite_path_is_store_unavailable(tmp_path: Path) -> None:
    from enclave.errors import StoreUnavailable

    # A missing folder is created; a folder that cannot exist (its parent is a file) cannot.
    async with connected_store(f"sqlite:///{tmp_path}/new-dir/e.db") as opened:
        await opened.ping()
    (tmp_path / "file").write_text("x")
    store = open_store(f"sqlite:///{tmp_path}/file/e.db")
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_many_processes_opening_one_new_sqlite_file_at_once(tmp_path: Path) -> None:
    """The WAL switch on a new file can answer "database is locked" without calling the busy
    handler; opening retries, so five stores opening at once always succeed (30 rounds)."""

    for round_ in range(30):
        stores = [SqliteStore(str(tmp_path / f"r{round_}.db")) for _ in range(5)]
        try:
            results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
            assert [r for r in results if isinstance(r, BaseException)] == []
        finally:
            await asyncio.gather(*(s.close() for s in stores))

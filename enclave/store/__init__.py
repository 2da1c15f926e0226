"""The state store: ``open_store(url)`` picks the database for a ``store.url``.

``sqlite:///path`` (the default) needs nothing beyond the standard library;
``postgresql://`` needs the optional extra ``enclave-gateway[postgres]`` (asyncpg), imported
only when such a URL is used. The returned store is not open yet: ``await store.open()`` (or
use ``connected_store``, an async context manager that opens and closes it). The factory does
no I/O; opening a SQLite store creates the database file's folder if it is missing. The
package's layout, and why each rule is written once: ``docs/store-design.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from enclave.errors import ConfigError

if TYPE_CHECKING:
    from enclave.store.base import Store

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")
POSTGRES_HINT = "install the optional dependency: pip install 'enclave-gateway[postgres]'"


def open_store(url: str) -> Store:
    """The adapter for ``url`` (not yet opened). ``ConfigError`` for an unknown scheme, or a
    PostgreSQL URL without asyncpg installed (with the install hint)."""
    if url.startswith(SQLITE_PREFIX):
        from enclave.store.sqlite import SqliteStore

        return SqliteStore(url[len(SQLITE_PREFIX) :])
    if url.startswith(POSTGRES_PREFIXES):
        try:
            from enclave.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError([f"store.url: PostgreSQL needs asyncpg; {POSTGRES_HINT}"]) from exc
        return PostgresStore(url)
    raise ConfigError(["store.url: must start with sqlite:/// or postgresql://"])


@asynccontextmanager
async def connected_store(url: str) -> AsyncIterator[Store]:
    """Open the store for ``url``, yield it, close it (for ``cleanup_ctx`` and the CLI)."""
    store = open_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()

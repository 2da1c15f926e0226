"""The state store: ``open_store(url)`` picks the database for a ``store.url``.

``sqlite:///path`` (the default) needs nothing beyond the standard library;
``postgresql://`` needs the optional extra ``enclave-gateway[postgres]`` (asyncpg), imported
only when such a URL is used. The returned store is not open yet: ``await store.open()`` (or
use ``connected_store``, an async context manager that opens and closes it). The factory does
no I/O; opening a SQLite store creates the database file's folder if it is missing.

Layout (each rule written once; ``docs/store-design.md`` says why, and how to add a table):

- ``base.py``: the ``Store`` protocol (extends ``audit.log.AuditLog``);
- ``ops.py``: every transaction, as an async function of a ``driver.Tx``; ``grants.py``,
  ``proposals.py`` and ``jobs.py`` the same for their tables (their values and rules live in
  their domain: ``licence_grants.py``, ``governance/proposal.py``, ``jobs/job.py``);
- ``sql_store.py``: ``SqlStore``, the protocol once over a ``driver.Driver`` (which kind of
  transaction each method runs in, and how failures are reported);
- ``driver.py``: the driver interface (``Tx``, ``Driver``, ``Dialect``);
- ``sqlite.py`` / ``postgres.py``: a driver and its ``Dialect`` each, nothing else;
- ``schema.py``: the numbered migrations, written once for both databases (never edit one;
  append); ``ledger_migration.py``: the Python steps of migrations 3 and 8;
- ``codec.py`` (values as columns), ``bulk.py`` (whole tables, for ``enclave store copy``),
  ``sqlite_verify.py`` (the worker that verifies a SQLite file's chain on several cores).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from enclave.errors import ConfigError
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

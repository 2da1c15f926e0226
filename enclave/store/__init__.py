"""The state store: ``open_store(url)`` picks the database for a ``store.url``.

``sqlite:///path`` (the default) needs nothing beyond the standard library;
``postgresql://`` needs the optional extra ``enclave-gateway[postgres]`` (asyncpg), imported
only when such a URL is used. The returned store is not open yet: ``await store.open()`` (or
use ``connected_store``, an async context manager that opens and closes it). The factory does
no I/O; opening a SQLite store creates the database file's folder if it is missing.

Layout (each rule written once; ``docs/store-design.md`` says why):

- ``base.py``: the ``Store`` protocol (extends ``audit.log.AuditLog``) and its value types;
- ``ops.py``: every transaction, as an async function of a ``driver.Tx``;
- ``sql_store.py``: ``SqlStore``, the protocol once over a ``driver.Driver`` (which kind of
  transaction each method runs in, and how failures are reported);
- ``driver.py``: the driver interface (``Tx``, ``Driver``, ``Dialect``);
- ``sqlite.py`` / ``postgres.py``: a driver and its ``Dialect`` each, nothing else;
- ``sqlite_schema.py`` / ``postgres_schema.py``: the numbered migrations (never edit one;
  append); ``ledger_migration.py``: migration 3's conversion step;
- ``codec.py`` (values as columns), ``bulk.py`` + ``copy.py`` (``enclave store copy``),
  ``sqlite_verify.py`` (chain verification on every core, SQLite files only).

Adding a table and a few transactions:

1. Append a migration to *both* ``sqlite_schema.MIGRATIONS`` and
   ``postgres_schema.MIGRATIONS`` with the next number: ``(5, ("CREATE TABLE grants (...)",
   "CREATE INDEX ..."))``. Types differ only where the databases do (``BIGINT`` vs
   ``INTEGER``, ``BOOLEAN`` vs 0/1); a Python step is ``async def step(tx: Tx) -> None``.
2. Write each transaction once in ``ops.py`` (or a new module beside it) as
   ``async def grant_budget(tx: Tx, ..., draft: AuditDraft, now) -> AuditRecord``: plain SQL
   with ``?`` placeholders, rows read by position, ``await append_locked(tx, draft, now)``
   for its audit record. SQL that truly differs goes into a ``Dialect`` field.
3. Add the method to ``base.Store`` and implement it in ``SqlStore`` in one line:
   ``self._write(lambda tx: ops.grant_budget(tx, ..., self._clock()))`` for an audited write
   (chained: serialized with the chain, ``AuditUnavailable`` on failure), ``self._read(...)``
   for a read, ``self._write(..., "rows")`` for an unaudited upsert.
4. If ``enclave store copy`` should carry the table, add its ``TableSpec`` to ``bulk.TABLES``
   (in foreign-key order). Tests go in ``tests/store/`` (the ``store`` fixture runs each test
   on SQLite and PostgreSQL).
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

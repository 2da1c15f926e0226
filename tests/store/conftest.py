"""One suite, every adapter: the ``backend`` fixture is parametrized over ``sqlite`` and
``postgres``. PostgreSQL runs only when ``ENCLAVE_TEST_POSTGRES_DSN`` names a reachable server
(e.g. ``postgresql://postgres@127.0.0.1:5432/test``); each test then gets its own database,
created with a random name and dropped afterwards. With ``ENCLAVE_TEST_REQUIRE_POSTGRES=1``
(set by ``.ci/run``) a missing DSN, driver or server FAILS those tests instead of skipping
them, so CI cannot pass by silently leaving PostgreSQL out.

``Backend.raw(sql)`` runs SQL straight on the database, bypassing the store, as an attacker
or a failing disk would; ``guards_off()`` drops the append-only triggers first (an attacker
with database access can), and ``break_audit()`` installs a trigger that makes every audit
insert fail for real.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

from enclave.audit.record import AuditDraft
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.models import Licence

DSN_ENV = "ENCLAVE_TEST_POSTGRES_DSN"
REQUIRE_ENV = "ENCLAVE_TEST_REQUIRE_POSTGRES"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class Clock:
    """The store's clock, settable so tests can place records in budget periods."""

    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@dataclass
class Backend:
    name: str
    make: Callable[[], Any]  # a new, unopened store on the same database
    raw: Callable[[str], Awaitable[list[tuple[Any, ...]]]]
    clock: Clock
    url: str = ""  # the store URL (for ``open_store`` and ``enclave store copy``)

    async def guards_off(self) -> None:
        if self.name == "sqlite":
            await self.raw("DROP TRIGGER audit_no_update")
            await self.raw("DROP TRIGGER audit_no_delete")
        else:
            await self.raw("DROP TRIGGER audit_append_only ON audit")

    async def break_audit(self) -> None:
        if self.name == "sqlite":
            await self.raw(
                "CREATE TRIGGER audit_broken BEFORE INSERT ON audit"
                " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        else:
            await self.raw(
                "CREATE FUNCTION audit_broken() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
            )
            await self.raw(
                "CREATE TRIGGER audit_broken BEFORE INSERT ON audit"
                " FOR EACH ROW EXECUTE FUNCTION audit_broken()"
            )

    async def repair_audit(self) -> None:
        await self.raw("DROP TRIGGER audit_broken" + ("" if self.name == "sqlite" else " ON audit"))


def _sqlite_backend(tmp_path: Any) -> Backend:
    from enclave.store.sqlite import SqliteStore

    path = str(tmp_path / "enclave.db")
    clock = Clock()

    async def raw(sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    return Backend(
        "sqlite", lambda: SqliteStore(path, clock=clock), raw, clock, f"sqlite:///{path}"
    )


def postgres_missing(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``ENCLAVE_TEST_REQUIRE_POSTGRES=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1 requires PostgreSQL)", pytrace=False)
    pytest.skip(reason)


def postgres_dsn() -> str:
    """The server DSN from the environment (skip or fail as ``postgres_missing`` says)."""
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        postgres_missing(f"PostgreSQL tests need {DSN_ENV}=postgresql://user@host:port/db")
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        postgres_missing("PostgreSQL tests need asyncpg: pip install -e '.[postgres]'")
    return str(dsn)


@asynccontextmanager
async def temporary_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (random name) for one test, dropped afterwards; skips the
    test unless ``ENCLAVE_TEST_POSTGRES_DSN`` names a reachable server (fails instead when
    ``ENCLAVE_TEST_REQUIRE_POSTGRES=1``)."""
    dsn = postgres_dsn()
    import asyncpg

    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        postgres_missing(f"PostgreSQL at {DSN_ENV} is not reachable: {type(exc).__name__}")
    name = "enclave_test_" + secrets.token_hex(6)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(dsn)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with temporary_database() as url:
        yield url


def postgres_backend(url: str) -> Backend:
    import asyncpg

    from enclave.store.postgres import PostgresStore

    clock = Clock()

    async def raw(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return Backend("postgres", lambda: PostgresStore(url, clock=clock), raw, clock, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite_backend(tmp_path)
        return
    async with temporary_database() as url:
        yield postgres_backend(url)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Any]:
    s = backend.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def licence(
    id: str = "lic_1",
    subject: str = "alice",
    datasets: tuple[str, ...] = ("visits",),
    status: str = "active",
    **over: Any,
) -> Licence:
    values: dict[str, Any] = {
        "organization": "Uni",
        "tier": "standard",
        "purpose": "research",
        "jurisdiction": "GB",
        "valid_from": T0,
        "valid_until": T0 + dt.timedelta(days=365),
    }
    values.update(over)
    return Licence(id=id, subject=subject, datasets=datasets, status=status, **values)  # type: ignore[arg-type]


def draft(action: str = "query", **over: Any) -> AuditDraft:
    values: dict[str, Any] = {
        "outcome": "ok",
        "actor": "alice",
        "roles": ("researcher",),
        "request_id": "req_" + secrets.token_hex(4),
        "dataset": "visits",
    }
    values.update(over)
    return AuditDraft(action=action, **values)


def charge(
    eps: str = "0.1",
    limit: str = "1.0",
    delta: str = "0",
    limit_delta: str = "0.000001",
    since: dt.datetime | None = None,
    licence_id: str = "lic_1",
    dataset: str = "visits",
) -> Charge:
    return Charge(
        licence_id=licence_id,
        dataset=dataset,
        cost=Amount.charge(eps, delta),
        limit=Amount.limit(limit, limit_delta),
        since=since,
    )

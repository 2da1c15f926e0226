"""PostgreSQL only: replicas starting together, connection loss and recovery, a server that
is not there. Skipped unless ENCLAVE_TEST_POSTGRES_DSN is set (see conftest)."""

from __future__ import annotations

import asyncio

import pytest

from enclave.audit.chain import verify
from enclave.errors import AuditUnavailable, BudgetExhausted, StoreUnavailable
from enclave.ledger.grid import Amount
from enclave.store.schema import POSTGRES as MIGRATIONS
from tests.store.conftest import charge, draft

pytestmark = pytest.mark.postgres


async def test_replicas_migrate_and_append_concurrently(pg_url: str) -> None:
    import asyncpg

    from enclave.store.postgres import PostgresStore

    stores = [PostgresStore(pg_url, max_size=3) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("SELECT COUNT(*) FROM schema_version") == len(MIGRATIONS)
        finally:
            await conn.close()
        results = await asyncio.gather(
            *(s.debit(draft(), charge("0.1", "1.0")) for s in stores for _ in range(8)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 10
        assert all(isinstance(r, BudgetExhausted) for r in results if isinstance(r, Exception))
        records = [r async for r in stores[0].audit_iter()]
        assert [r.seq for r in records] == list(range(1, 11)) and verify(records).valid
        assert await stores[1].spent("lic_1", "visits", None) == Amount.charge("1.0", 0)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_recovers_after_connections_are_killed(pg_url: str) -> None:
    import asyncpg

    from enclave.store.postgres import PostgresStore

    store = PostgresStore(pg_url, min_size=2, max_size=2)
    await store.open()
    try:
        await store.append(draft())
        name = pg_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(pg_url.rsplit("/", 1)[0] + "/postgres")
        try:
            killed = await admin.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        finally:
            await admin.close()
        assert killed >= 1
        failures = 0
        for _ in range(5):  # each broken pooled connection fails once, then is replaced
            try:
                await store.append(draft())
                break
            except AuditUnavailable:
                failures += 1
        else:
            pytest.fail("the store did not recover")
        assert failures <= 2
        await store.ping()
        records = [r async for r in store.audit_iter()]
        assert len(records) == 2 and verify(records).valid
    finally:
        await store.close()


async def test_unreachable_server() -> None:
    from enclave.store.postgres import PostgresStore

    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", timeout_s=2, startup_wait_s=0)
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(AuditUnavailable):
        await store.append(draft())
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()

"""The budget ledger checked against the audit chain (``Store.ledger_check``, ``enclave audit
verify --ledger``) on both stores: real charged records made by the gateway (fresh releases, a
cached repeat, a charged failure, a grant) pass; each tampering with the ledger, its totals or
the grants is reported with its seq."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.audit.ledger_check import Problem
from enclave.audit.log import AuditFilter
from tests.store.conftest import Backend

SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
JOBS = {"lease_s": 6, "poll_s": 0.5, "timeout_s": 1e-6}  # every job's run times out: charged


async def _filled(make_gateway: Any, backend: Backend) -> dict[str, int]:
    """A store holding real charges; the seqs of a fresh query, its cached repeat, a charged
    failure and a grant."""
    gw = await make_gateway(store_url=backend.url, jobs=JOBS, server={"query_timeout_s": 600})
    lic = await gw.licence()
    first = await gw.query(SQL)
    assert first.status == 200, await first.text()
    repeat = await gw.query(SQL)
    assert (await repeat.json())["cached"] is True
    assert (await gw.query(SQL.replace("COUNT(*) AS n", "COUNT(*) AS k"))).status == 200
    body = {"dataset": "visits", "sql": SQL.replace("n FROM", "m FROM"), "epsilon": 0.5}
    job = await gw.client.post("/v1/queries/jobs", json=body, headers=gw.auth())
    assert job.status == 202, await job.text()
    store = gw.services.store
    failed: list[Any] = []
    for _ in range(300):
        failed = [
            r for r in await store.audit_events(AuditFilter(action="query")) if r.outcome == "error"
        ]
        if failed:
            break
        await asyncio.sleep(0.1)
    grant = {"dataset": "visits", "epsilon": "0.5", "reason": "extension for chapter 3"}
    url = f"/v1/admin/licences/{lic.id}/grants"
    granted = await gw.client.post(url, json=grant, headers=gw.auth("stella", ("admin",)))
    assert granted.status == 201, await granted.text()
    grant_seq = (await granted.json())["audit_seq"]
    records = await store.audit_events(AuditFilter(action="query"))
    fresh = [r.seq for r in records if r.outcome == "ok" and not r.cached]
    cached = [r.seq for r in records if r.cached]
    await gw.client.close()
    return {
        "fresh": fresh[0],
        "cached": cached[0],
        "failed": failed[0].seq,
        "grant": grant_seq,
    }


async def _problems(backend: Backend) -> list[Problem]:
    store = backend.make()
    await store.open()
    try:
        checked, problems = await store.ledger_check()
    finally:
        await store.close()
    assert checked > 0
    return problems


@pytest.fixture
async def filled(make_gateway: Any, backend: Backend) -> dict[str, int]:
    return await _filled(make_gateway, backend)


async def test_a_consistent_store_passes(backend: Backend, filled: dict[str, int]) -> None:
    assert await _problems(backend) == []
    rows = await backend.raw("SELECT audit_seq FROM ledger ORDER BY audit_seq")
    assert filled["failed"] in [r[0] for r in rows]  # the charged failure has its row
    assert filled["cached"] not in [r[0] for r in rows]


async def test_a_lowered_ledger_row_is_reported(backend: Backend, filled: dict[str, int]) -> None:
    seq = filled["fresh"]
    await backend.raw(f"UPDATE ledger SET epsilon_units = 1 WHERE audit_seq = {seq}")  # noqa: S608
    problems = await _problems(backend)
    assert any(p.seq == seq and "charges epsilon 0.000001" in p.text for p in problems)
    assert any(p.seq is None and "lifetime total" in p.text for p in problems)


async def test_a_backdated_row_is_reported(backend: Backend, filled: dict[str, int]) -> None:
    seq = filled["failed"]
    ts = "2000-01-01T00:00:00.000Z"
    await backend.raw(f"UPDATE ledger SET ts = '{ts}' WHERE audit_seq = {seq}")  # noqa: S608
    assert [(p.seq, "time" in p.text) for p in await _problems(backend)] == [(seq, True)]


async def test_a_deleted_ledger_row_is_reported(backend: Backend, filled: dict[str, int]) -> None:
    seq = filled["failed"]
    await backend.raw(f"DELETE FROM ledger WHERE audit_seq = {seq}")  # noqa: S608
    problems = await _problems(backend)
    assert Problem(seq, "the charged record has no ledger row") in problems


async def test_an_added_ledger_row_is_reported(backend: Backend, filled: dict[str, int]) -> None:
    for seq in (filled["cached"], filled["fresh"]):
        await backend.raw(
            "INSERT INTO ledger (licence_id, dataset, epsilon_units, delta_units, ts, audit_seq,"  # noqa: S608
            f" subject, organization) SELECT licence_id, dataset, 5, 0, ts, {seq}, subject,"
            f" organization FROM ledger WHERE audit_seq = {filled['fresh']}"
        )
    problems = await _problems(backend)
    assert (
        Problem(filled["cached"], "a ledger row for a query record that charged nothing")
        in problems
    )
    assert Problem(filled["fresh"], "the charged record has 2 ledger rows, not one") in problems


async def test_a_changed_total_is_reported(backend: Backend, filled: dict[str, int]) -> None:
    await backend.raw("UPDATE ledger_totals SET epsilon_units = 0 WHERE layer = 'subject'")
    problems = await _problems(backend)
    assert [p.seq for p in problems] == [None]
    assert "lifetime total of subject 'alice' on 'visits'" in problems[0].text


async def test_an_added_or_changed_grant_is_reported(
    backend: Backend, filled: dict[str, int]
) -> None:
    seq = filled["grant"]
    await backend.raw(f"UPDATE licence_grants SET epsilon_units = 900000 WHERE audit_seq = {seq}")  # noqa: S608
    await backend.raw(
        "INSERT INTO licence_grants (audit_seq, licence_id, dataset, epsilon_units, delta_units,"  # noqa: S608
        " reason, actor, created_at, layer, subject) SELECT"
        f" {filled['cached']}, licence_id, dataset, 5000000, 0, reason, actor, created_at,"
        f" layer, subject FROM licence_grants WHERE audit_seq = {seq}"
    )
    problems = await _problems(backend)
    assert [p.seq for p in problems] == [filled["cached"], seq]
    assert "'epsilon': '0.9'" in problems[1].text

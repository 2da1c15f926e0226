"""Rate limits that hold for refusals too, counted in the store, and capped audit text.

Limits are fixed one-minute windows on the wall clock, so each test starts early in a window
(``fresh_window``) to keep its requests in one."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from enclave.audit.log import AuditFilter
from tests.conftest import MakeGateway


async def fresh_window(needed_s: float = 20.0) -> None:
    left = 60 - time.time() % 60
    if left < needed_s:
        await asyncio.sleep(left + 0.05)


async def records_of(gw: Any, actor: str) -> list[Any]:
    found: list[Any] = await gw.services.store.audit_events(AuditFilter(actor=actor), limit=1000)
    return found


async def test_refused_requests_count_against_the_subject_limit(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limits={"per_subject_per_minute": 5})
    await gw.licence("carol")
    await fresh_window()
    statuses = [(await gw.query("SELECT COUNT(*) FROM visits", sub="bob")).status for _ in range(5)]
    assert statuses == [404] * 5  # bob holds no licence: every one refused, every one counted
    resp = await gw.query("SELECT COUNT(*) FROM visits", sub="bob")
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/rate-limited") and "subject" in body["detail"]
    for _ in range(5):  # further refusals come from memory, and are not audited
        assert (await gw.client.get("/v1/budget", headers=gw.auth("bob"))).status == 429
    outcomes = [(r.outcome, r.reason) for r in await records_of(gw, "bob")]
    assert len(outcomes) == 6  # five 404s and the one 429 that crossed the limit
    assert sum(1 for _, reason in outcomes if "per minute" in (reason or "")) == 1
    assert (await gw.query("SELECT COUNT(*) FROM visits", sub="carol")).status == 200


async def test_failed_authentications_are_limited_per_address(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limits={"unauthenticated_per_minute": 3})
    await fresh_window()
    bad = {"Authorization": "Bearer not.a.token"}
    statuses = [(await gw.client.get("/v1/budget", headers=bad)).status for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # the address is refused for the rest of the window, before any signature check
    assert (await gw.client.get("/v1/budget", headers=gw.auth())).status == 429


async def test_every_request_counts_against_the_address_limit(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limits={"per_address_per_minute": 4})
    await fresh_window()
    subjects = ["a1", "a2", "a3", "a4", "a5"]
    statuses = [(await gw.client.get("/v1/budget", headers=gw.auth(s))).status for s in subjects]
    assert statuses == [200, 200, 200, 200, 429]
    assert (await gw.client.get("/healthz")).status == 200  # public routes are not counted


async def test_the_licence_limit_comes_before_parsing(make_gateway: MakeGateway) -> None:
    """61 statements that cannot parse, on a tier allowing 60 a minute: were the SQL parsed
    first, all 61 would answer 400; the limit answers the 61st before its SQL is read."""
    gw = await make_gateway()
    lic = await gw.licence()
    tier = (await gw.services.registry.tier_map())[lic.tier]
    assert tier.rate_limit_per_minute == 60
    await fresh_window(40)
    junk = "SELEKT " + "x, " * 2300 + "x FROM visits"  # ~7 KB that the parser refuses
    answers = [await gw.query(junk) for _ in range(61)]
    assert [a.status for a in answers[:60]] == [400] * 60
    assert answers[60].status == 429
    assert "licence" in (await answers[60].json(content_type=None))["detail"]


async def test_audit_records_cap_sql_and_names_and_keep_their_hash(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway()
    sql = "SELECT COUNT(*) FROM visits WHERE " + " OR ".join(f"age = {i}" for i in range(600))  # noqa: S608
    name = "d" * 500
    resp = await gw.query(sql, dataset=name, sub="dave")
    assert resp.status == 404
    (record,) = await records_of(gw, "dave")
    assert record.sql == sql[:2000] and len(sql) > 2000
    assert record.dataset == name[:200]
    assert record.detail["sql_sha256"] == hashlib.sha256(sql.encode()).hexdigest()
    assert record.detail["sql_length"] == len(sql)
    assert record.detail["dataset_sha256"] == hashlib.sha256(name.encode()).hexdigest()
    short = await gw.query("SELECT COUNT(*) FROM visits", sub="dave")
    assert short.status == 404
    latest = (await records_of(gw, "dave"))[-1]
    assert latest.sql == "SELECT COUNT(*) FROM visits" and "sql_sha256" not in latest.detail

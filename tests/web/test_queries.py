"""The researcher's query path end to end over HTTP, on the embedded default store."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from enclave.audit.chain import verify
from enclave.audit.log import AuditFilter

SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY region"
REGIONS = {"north", "south", "east", "west", "central"}


async def test_released_query_has_contract_shape(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query(SQL, epsilon=0.5)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["query_id"].startswith("q_")
    assert body["dataset"] == "visits"
    assert body["columns"] == ["region", "n", "mean_cost"]
    assert {r[0] for r in body["rows"]} == REGIONS  # every declared group, none other
    assert all(isinstance(r[1], int) for r in body["rows"])
    assert body["epsilon_spent"] == 0.5 and body["delta_spent"] == 0.0
    assert body["cached"] is False
    assert body["accuracy"]["n"]["ci95"] > 0
    assert body["budget"]["epsilon_remaining"] == 4.5
    assert body["budget"]["renews"] is None
    assert isinstance(body["audit_seq"], int) and body["audit_seq"] > 0
    # about 20,000 rows over 5 regions, after truncation: counts are in the thousands
    total = sum(r[1] for r in body["rows"])
    assert 5_000 < total <= 20_000 + 200


async def test_epsilon_defaults_to_the_tiers_default_epsilon_not_its_cap(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query("SELECT COUNT(*) FROM visits", epsilon=None)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["epsilon_spent"] == 0.1 and body["epsilon_source"] == "tier_default"


async def test_estimate_spends_nothing_and_touches_no_data(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query(SQL, epsilon=0.8, path="/v1/queries/estimate")
    assert resp.status == 200, await resp.text()
    est = await resp.json()
    assert est["epsilon"] == 0.8 and est["delta"] == 0.0
    assert est["cached"] is False and est["within_budget"] is True
    assert est["accuracy"]["n"]["ci95"] > 0
    assert "rows" not in est
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth())).json()
    assert budget["budgets"][0]["epsilon_spent"] == 0.0
    # after the real query, the estimate says it would be a cached answer at no cost
    assert (await gw.query(SQL, epsilon=0.8)).status == 200
    again = await (await gw.query(SQL, epsilon=0.8, path="/v1/queries/estimate")).json()
    assert again["cached"] is True and again["epsilon"] == 0.0


async def test_repeat_is_cached_and_free_even_after_restart(
    make_gateway: Any, aiohttp_client: Any
) -> None:
    gw = await make_gateway()
    await gw.licence()
    first = await (await gw.query(SQL, epsilon=0.5)).json()
    second = await (await gw.query(SQL, epsilon=0.5)).json()
    assert second["cached"] is True and second["epsilon_spent"] == 0.0
    assert second["rows"] == first["rows"]
    assert second["budget"]["epsilon_remaining"] == 4.5
    # the same query with another epsilon is a new release
    third = await (await gw.query(SQL, epsilon=0.25)).json()
    assert third["cached"] is False
    await gw.client.close()
    # a new process over the same state folder: the release is still cached
    from enclave.web.app import create_app

    client2 = await aiohttp_client(create_app(gw.config))
    resp = await client2.post(
        "/v1/queries", json={"dataset": "visits", "sql": SQL, "epsilon": 0.5}, headers=gw.auth()
    )
    body = await resp.json()
    assert body["cached"] is True and body["rows"] == first["rows"]
    assert body["budget"]["epsilon_remaining"] == 4.25


async def test_cache_is_per_licence(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    await gw.licence("dora")
    await gw.query(SQL, sub="alice")
    other = await (await gw.query(SQL, sub="dora")).json()
    assert other["cached"] is False and other["epsilon_spent"] == 0.5


async def test_budget_arithmetic_is_exact(make_gateway: Any) -> None:
    """Standard tier: budget 5.0. Fifty spends of 0.1 fit; the fifty-first does not."""
    gw = await make_gateway()
    await gw.licence()
    for i in range(50):
        sql = f"SELECT COUNT(*) FROM visits WHERE age >= {i}"  # noqa: S608
        resp = await gw.query(sql, epsilon=0.1)
        assert resp.status == 200, (i, await resp.text())
    resp = await gw.query("SELECT COUNT(*) FROM visits WHERE age >= 99", epsilon=0.1)
    assert resp.status == 403
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/budget-exhausted")
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth())).json()
    assert budget["budgets"][0]["epsilon_remaining"] == 0.0


async def test_concurrent_queries_never_overspend(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    sqls = [f"SELECT COUNT(*) FROM visits WHERE age >= {i}" for i in range(30)]  # noqa: S608
    resps = await asyncio.gather(*(gw.query(s, epsilon=0.5) for s in sqls))
    statuses = sorted(r.status for r in resps)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(403) == 20
    spent = (await gw.services.store.spent(next(iter(gw.licences)), "visits", None)).epsilon_decimal
    assert spent == 5
    records = [r async for r in gw.services.store.audit_iter()]
    assert verify(records).valid


async def test_history_shows_only_own_queries(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    await gw.licence("dora")
    await gw.query(SQL, sub="alice")
    await gw.query("SELECT COUNT(*) FROM visits", sub="dora")
    await gw.query("SELECT nonsense FROM visits", sub="alice")
    resp = await gw.client.get("/v1/queries?limit=10", headers=gw.auth("alice"))
    items = (await resp.json())["queries"]
    assert [q["sql"] for q in items] == [SQL, "SELECT nonsense FROM visits"]
    assert [q["outcome"] for q in items] == ["ok", "denied"]
    page = await (await gw.client.get("/v1/queries?limit=1", headers=gw.auth("alice"))).json()
    assert len(page["queries"]) == 1 and page["next_cursor"]
    nxt = await gw.client.get(
        f"/v1/queries?limit=1&cursor={page['next_cursor']}", headers=gw.auth("alice")
    )
    assert (await nxt.json())["queries"][0]["outcome"] == "denied"
    bad = await gw.client.get("/v1/queries?cursor=abc", headers=gw.auth("alice"))
    assert bad.status == 400


async def test_datasets_and_budget_views(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    body = await (await gw.client.get("/v1/datasets", headers=gw.auth("alice"))).json()
    (visits,) = body["datasets"]
    assert visits["name"] == "visits"
    assert visits["columns"]["region"]["values"] == ["north", "south", "east", "west", "central"]
    assert visits["columns"]["cost"]["bounds"] == [0, 50000]
    assert "source" not in visits
    nobody = await (await gw.client.get("/v1/datasets", headers=gw.auth("nobody"))).json()
    assert nobody["datasets"] == []
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth("alice"))).json()
    assert budget["budgets"][0]["epsilon_remaining"] == 5.0


async def test_every_query_outcome_is_audited(make_gateway: Any) -> None:
    gw = await make_gateway(server={"query_timeout_s": 20})
    await gw.licence()
    ok = await gw.query(SQL)
    bad_sql = await gw.query("SELECT age FROM visits")
    too_much = await gw.query(SQL, epsilon=3.0)
    bad_body = await gw.client.post("/v1/queries", json={"sql": 1}, headers=gw.auth())
    est = await gw.query(SQL, path="/v1/queries/estimate")
    assert [ok.status, bad_sql.status, too_much.status, bad_body.status, est.status] == [
        200,
        400,
        403,
        400,
        200,
    ]
    store = gw.services.store
    recs = await store.audit_events(AuditFilter(actor="alice"), 0, 100)
    rows = [(r.action, r.outcome) for r in recs]
    assert rows == [
        ("query", "ok"),
        ("query", "denied"),
        ("query", "denied"),
        ("query", "denied"),
        ("query.estimate", "ok"),
    ]
    released = recs[0]
    assert released.epsilon == 0.5 and released.result_sha256
    assert released.licence_id and released.tier == "standard" and released.dataset == "visits"
    assert released.seq == (await ok.json())["audit_seq"]
    assert recs[2].reason and "epsilon" in recs[2].reason
    # no exact value and no token are ever stored
    dump = repr([r.to_json() for r in recs])
    assert "eyJ" not in dump


async def test_timed_out_query_is_504_audited_as_error_and_charged(make_gateway: Any) -> None:
    """The engine started, so the data was touched: the timeout costs what a release costs."""
    gw = await make_gateway(server={"query_timeout_s": 0.000001})
    lic = await gw.licence()
    spec = await gw.services.registry.dataset("visits")
    assert spec is not None
    await gw.services.warehouse.prepare(spec)  # a query waits for preparation at most its limit
    resp = await gw.query(SQL, epsilon=0.5)
    assert resp.status == 504
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/query-timeout")
    recs = await gw.services.store.audit_events(AuditFilter(actor="alice"), 0, 10)
    assert [(r.action, r.outcome) for r in recs] == [("query", "error")]
    assert recs[0].result_sha256 is None
    assert recs[0].epsilon == 0.5 and recs[0].reason and "charged" in recs[0].reason
    assert "charged" in body["detail"]
    spent = (await gw.services.store.spent(lic.id, "visits", None)).epsilon_decimal
    assert spent == Decimal("0.5")


async def test_cached_repeat_is_answered_without_pricing(make_gateway: Any) -> None:
    """The release cache is consulted before pricing: a repeat, run or estimated, builds no
    OpenDP measurement; the estimate reports the stored release's cost and accuracy."""
    from enclave.dp import mechanisms

    gw = await make_gateway()
    await gw.licence()
    sql = SQL.replace("GROUP BY", "WHERE age >= 18 GROUP BY")
    released = await (await gw.query(sql, epsilon=0.8)).json()
    assert released["accuracy"]["mean_cost"]["ci95"] is not None  # known once noisy values exist
    pricings = mechanisms._priced.cache_info()
    again = await (await gw.query(sql, epsilon=0.8)).json()
    est = await (await gw.query(sql, epsilon=0.8, path="/v1/queries/estimate")).json()
    info = mechanisms._priced.cache_info()
    assert (info.hits, info.misses) == (pricings.hits, pricings.misses)  # priced neither time
    assert again["cached"] is True and again["rows"] == released["rows"]
    assert est["cached"] is True and est["epsilon"] == 0.0 and est["within_budget"] is True
    assert (est["plan_epsilon"], est["plan_delta"]) == (0.8, 0.0)
    assert est["accuracy"] == released["accuracy"]
    # a fresh query is priced (and the estimate of one reports the price's accuracy)
    fresh = await (await gw.query(SQL, epsilon=0.3, path="/v1/queries/estimate")).json()
    assert fresh["cached"] is False and fresh["accuracy"]["mean_cost"] == {"ci95": None}
    assert mechanisms._priced.cache_info().misses == info.misses + 1


async def test_any_quantile_level_is_released(make_gateway: Any) -> None:
    """Levels whose float product with OpenDP's 10000 falls just below a whole number (0.043,
    0.141) are released like 0.05 (they once failed OpenDP's score check: 500)."""
    gw = await make_gateway()
    await gw.licence()
    for level in (0.043, 0.141, 0.05):
        sql = f"SELECT QUANTILE_CONT(cost, {level}) AS q FROM visits"  # noqa: S608
        resp = await gw.query(sql, epsilon=0.5)
        assert resp.status == 200, (level, await resp.text())

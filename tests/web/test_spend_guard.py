"""``max_share`` on ``POST /v1/queries``: a run that would spend more than that share of the
budget left is refused for free (409 ``spend-needs-confirmation``), before any data is read;
the guard reads the same budget as the pre-check, and the budget limit holds under races."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.audit.log import AuditFilter

COUNT = "SELECT COUNT(*) AS n FROM visits"


async def post(gw: Any, sql: str, epsilon: float, max_share: Any) -> Any:
    body = {"dataset": "visits", "sql": sql, "epsilon": epsilon, "max_share": max_share}
    return await gw.client.post("/v1/queries", json=body, headers=gw.auth())


async def spent(gw: Any) -> float:
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth())).json()
    return float(budget["budgets"][0]["epsilon_spent"])


async def test_a_spend_over_the_share_is_refused_free_with_its_numbers(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()  # standard tier: epsilon 5
    resp = await post(gw, COUNT, 1.0, 0.15)  # 20% of 5
    assert resp.status == 409
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/spend-needs-confirmation")
    assert body["cost"] == {"epsilon": 1.0, "delta": 0.0}
    assert body["remaining"]["epsilon"] == 5.0
    assert body["share"] == pytest.approx(0.2) and body["max_share"] == 0.15
    assert "without max_share" in body["detail"]
    assert await spent(gw) == 0
    records = await gw.services.store.audit_events(AuditFilter(actor="alice"), 0, 100)
    (rec,) = [r for r in records if r.action.startswith("query")]
    assert (rec.outcome, rec.reason) == ("denied", body["detail"])  # audited; spent 0
    # the same query without max_share runs and spends
    resp = await gw.query(COUNT, epsilon=1.0)
    assert resp.status == 200 and await spent(gw) == 1.0


async def test_a_spend_at_or_under_the_share_runs(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    assert (await post(gw, COUNT, 1.0, 0.2)).status == 200  # exactly 20% of 5: not more
    assert (await post(gw, COUNT + " WHERE age > 3", 0.1, 0.2)).status == 200
    assert await spent(gw) == 1.1
    # a cached repeat spends nothing, so no share is too small for it
    assert (await post(gw, COUNT, 1.0, 0)).status == 200
    assert await spent(gw) == 1.1
    # the share is of what is left (3.9), not of the budget
    resp = await post(gw, COUNT + " WHERE age > 4", 1.0, 0.25)  # 25.6% of 3.9
    assert resp.status == 409 and await spent(gw) == 1.1


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, None, [0.5]])
async def test_max_share_is_validated_with_every_other_problem(make_gateway: Any, bad: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    body = {"dataset": "visits", "sql": COUNT, "epsilon": -1, "max_share": bad}
    resp = await gw.client.post("/v1/queries", json=body, headers=gw.auth())
    assert resp.status == 400
    problems = (await resp.json(content_type=None))["problems"]
    assert any("'epsilon'" in p for p in problems)
    assert any("'max_share'" in p for p in problems) == (bad is not None)


async def test_estimate_accepts_and_ignores_max_share(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    body = {"dataset": "visits", "sql": COUNT, "epsilon": 1.0, "max_share": 0.01}
    resp = await gw.client.post("/v1/queries/estimate", json=body, headers=gw.auth())
    assert resp.status == 200 and (await resp.json())["epsilon"] == 1.0


async def test_races_never_overspend_and_a_refusal_costs_nothing(make_gateway: Any) -> None:
    """Every guard reads the budget with the pre-check; spends racing past a guard are fine,
    the limit still holds (the store re-checks in the debit's transaction)."""
    gw = await make_gateway()
    await gw.licence()
    sqls = [f"SELECT COUNT(*) FROM visits WHERE age >= {i}" for i in range(30)]  # noqa: S608
    resps = await asyncio.gather(*(post(gw, s, 0.5, 0.2) for s in sqls))
    statuses = [r.status for r in resps]
    assert set(statuses) <= {200, 403, 409}, statuses
    ok = statuses.count(200)
    assert 1 <= ok <= 10 and await spent(gw) == pytest.approx(0.5 * ok)
    for resp in resps:
        if resp.status == 409:  # the share it saw was over 20% of what that read left
            body = await resp.json(content_type=None)
            assert body["share"] > 0.2 and body["cost"]["epsilon"] == 0.5
            assert body["remaining"]["epsilon"] < 2.5
    # a guard that always passes: the budget limit alone decides, exactly as without it
    more = [f"SELECT COUNT(*) FROM visits WHERE age < {i}" for i in range(30)]  # noqa: S608
    await asyncio.gather(*(post(gw, s, 0.5, 1) for s in more))
    assert await spent(gw) == 5.0

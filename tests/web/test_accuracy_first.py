"""Accuracy-first requests, the batch estimate and the tier's default epsilon, over HTTP.

Every refusal here is free: the ledger is read after each to show nothing was charged.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from enclave.errors import PROBLEM_BASE

COUNT = "SELECT COUNT(*) AS n FROM visits"
GROUPED = (
    "SELECT region, COUNT(*) AS n, SUM(age) AS years, AVG(cost) AS mean_cost, "
    "MEDIAN(age) AS mid FROM visits GROUP BY region"
)
UNIT = Decimal("0.000001")


async def post(gw: Any, body: dict[str, Any], path: str = "/v1/queries") -> Any:
    return await gw.client.post(path, json=body, headers=gw.auth())


async def spent(gw: Any, licence_id: str) -> Decimal:
    return (await gw.services.store.spent(licence_id, "visits", None)).epsilon_decimal


async def audit_tail(gw: Any) -> Any:
    auditor = gw.auth("audra", ["auditor"])
    resp = await gw.client.get("/v1/audit/events?limit=500", headers=auditor)
    return (await resp.json())["events"][-1]


async def test_accuracy_query_spends_the_smallest_epsilon_that_meets_the_target(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    body = {"dataset": "visits", "sql": COUNT, "accuracy": {"n": {"ci95": 50}}}
    est = await (await post(gw, body, "/v1/queries/estimate")).json()
    assert est["epsilon_source"] == "accuracy"
    chosen = Decimal(repr(est["plan_epsilon"]))
    assert Decimal(0) < chosen < Decimal(1) and chosen % UNIT == 0
    achieved = est["epsilon_chosen_for"]["n"]
    assert achieved["ci95"] == 50 and achieved["achieved_ci95"] <= 50
    assert est["accuracy"]["n"]["ci95"] == achieved["achieved_ci95"]
    assert await spent(gw, lic.id) == 0  # the estimate spent nothing

    # one grid step less misses the target: the choice is the smallest on the grid
    below = {"dataset": "visits", "sql": COUNT, "epsilon": float(chosen - UNIT)}
    less = await (await post(gw, below, "/v1/queries/estimate")).json()
    assert less["accuracy"]["n"]["ci95"] > 50

    resp = await post(gw, body)
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert Decimal(repr(out["epsilon_spent"])) == chosen == await spent(gw, lic.id)
    assert out["epsilon_source"] == "accuracy" and out["epsilon_chosen_for"] == {"n": achieved}
    assert out["accuracy"]["n"]["ci95"] <= 50
    record = await audit_tail(gw)
    assert record["action"] == "query" and Decimal(repr(record["epsilon"])) == chosen
    assert record["detail"]["accuracy_targets"] == {"n": 50.0}

    again = await (await post(gw, body)).json()  # the same choice: a cached repeat, free
    assert again["cached"] is True and again["epsilon_spent"] == 0
    assert await spent(gw, lic.id) == chosen


async def test_several_targets_are_all_met(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    sql = "SELECT region, COUNT(*) AS n, SUM(age) AS years FROM visits GROUP BY region"
    targets = {"n": {"ci95": 40}, "years": {"ci95": 6000}}
    body = {"dataset": "visits", "sql": sql, "accuracy": targets}
    est = await (await post(gw, body, "/v1/queries/estimate")).json()
    for column, target in targets.items():
        assert est["accuracy"][column]["ci95"] <= target["ci95"]
    chosen = Decimal(repr(est["plan_epsilon"]))
    step = {"dataset": "visits", "sql": sql, "epsilon": float(chosen - UNIT)}
    less = await (await post(gw, step, "/v1/queries/estimate")).json()
    assert any(less["accuracy"][c]["ci95"] > t["ci95"] for c, t in targets.items())


async def test_untargetable_columns_are_refused_for_free(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    targets = {
        "mean_cost": {"ci95": 10},
        "mid": {"ci95": 1},
        "region": {"ci95": 1},
        "nope": {"ci95": 1},
    }
    resp = await post(gw, {"dataset": "visits", "sql": GROUPED, "accuracy": targets})
    assert resp.status == 400
    problem = await resp.json()
    text = " ".join(problem["problems"])
    assert len(problem["problems"]) == 4
    assert "'mean_cost': an average's ci95 is computed from the released values" in text
    assert "'mid': a quantile has no ci95" in text
    assert "'region', which is not an aggregate column" in text
    assert "'nope', which is not an aggregate column" in text
    assert await spent(gw, lic.id) == 0
    record = await audit_tail(gw)
    assert record["outcome"] == "denied" and record["epsilon"] == 0


async def test_a_target_no_epsilon_within_the_cap_meets_is_a_free_422(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    body = {"dataset": "visits", "sql": COUNT, "accuracy": {"n": {"ci95": 0.5}}}
    for path in ("/v1/queries", "/v1/queries/estimate"):
        resp = await post(gw, body, path)
        assert resp.status == 422
        problem = await resp.json()
        assert problem["type"] == PROBLEM_BASE + "accuracy-unreachable"
        assert "'n': best ci95" in problem["detail"]
        assert "max_epsilon_per_query 1.0 (target 0.5)" in problem["detail"]
    assert await spent(gw, lic.id) == 0


async def test_accuracy_body_problems_are_listed_at_once(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    bad = {
        "dataset": "visits",
        "sql": COUNT,
        "epsilon": 0.5,
        "accuracy": {"n": {"ci95": -1}, "m": 3, "k": {"ci95": 1, "extra": 2}, "b": {"ci95": True}},
    }
    resp = await post(gw, bad)
    assert resp.status == 400
    problems = (await resp.json())["problems"]
    assert "give either 'epsilon' or 'accuracy', not both" in problems
    assert "accuracy['n'].ci95 must be a positive number no larger than 1e+15" in problems
    assert "accuracy['b'].ci95 must be a positive number no larger than 1e+15" in problems
    assert "accuracy['m'] must be {\"ci95\": <positive number>}" in problems
    assert "accuracy['k'] must be {\"ci95\": <positive number>}" in problems
    long = {"dataset": "visits", "sql": COUNT, "accuracy": {"x" * 5000: {"ci95": 1}}}
    detail = (await (await post(gw, long)).json())["detail"]
    assert "a column name has at most" in detail and len(detail) < 300
    for empty in ({}, [], "n"):
        resp = await post(gw, {"dataset": "visits", "sql": COUNT, "accuracy": empty})
        assert resp.status == 400
        assert "'accuracy' must be an object" in (await resp.json())["detail"]


async def test_the_tier_default_epsilon_is_used_and_said(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    admin = gw.auth("steward", ["admin"])
    tier = await (await gw.client.get("/v1/admin/tiers/standard", headers=admin)).json()
    assert tier["default_epsilon"] == 0.1
    est = await (await post(gw, {"dataset": "visits", "sql": COUNT}, "/v1/queries/estimate")).json()
    assert est["epsilon"] == 0.1 and est["epsilon_source"] == "tier_default"

    bad = {**tier, "default_epsilon": 2.0, "reason": "t"}
    resp = await gw.client.put("/v1/admin/tiers/standard", json=bad, headers=admin)
    assert resp.status == 400
    assert any(
        "default_epsilon: must lie within [min_epsilon_per_query, max_epsilon_per_query]" in p
        for p in (await resp.json())["problems"]
    )
    good = {**tier, "default_epsilon": 0.05, "reason": "smaller default"}
    resp = await gw.client.put("/v1/admin/tiers/standard", json=good, headers=admin)
    assert resp.status == 200, await resp.text()
    out = await (await post(gw, {"dataset": "visits", "sql": COUNT})).json()
    assert out["epsilon_spent"] == 0.05 and out["epsilon_source"] == "tier_default"
    assert await spent(gw, lic.id) == Decimal("0.05")
    given = await (await post(gw, {"dataset": "visits", "sql": COUNT, "epsilon": 0.2})).json()
    assert given["epsilon_source"] == "request"


BATCH = "/v1/queries/estimate/batch"


async def test_batch_estimate_prices_queries_together(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    await post(gw, {"dataset": "visits", "sql": COUNT, "epsilon": 0.5})  # a cached repeat below
    body = {
        "dataset": "visits",
        "queries": [
            {"sql": COUNT, "epsilon": 0.5},
            {"sql": "SELECT SUM(age) AS s FROM visits", "epsilon": 1.0},
            {
                "sql": "SELECT COUNT(*) AS n FROM visits WHERE age > 40",
                "accuracy": {"n": {"ci95": 60}},
            },
            {"sql": "SELECT AVG(cost) AS c FROM visits"},
        ],
    }
    resp = await post(gw, body, BATCH)
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    items = out["queries"]
    assert [q["epsilon_source"] for q in items] == [
        "request",
        "request",
        "accuracy",
        "tier_default",
    ]
    assert (
        items[0]["cached"] is True and items[0]["epsilon"] == 0 and items[0]["plan_epsilon"] == 0.5
    )
    assert items[1]["epsilon"] == 1.0 and items[3]["epsilon"] == 0.1
    total = sum(Decimal(repr(q["epsilon"])) for q in items)
    assert Decimal(repr(out["epsilon"])) == total and out["within_budget"] is True
    assert out["budget"]["epsilon_remaining"] == 4.5 and out["split"] is None
    assert await spent(gw, lic.id) == Decimal("0.5")  # the batch spent nothing
    record = await audit_tail(gw)
    assert record["action"] == "query.estimate" and record["detail"]["batch"] == 4

    big = {"dataset": "visits", "queries": [{"sql": COUNT, "epsilon": 1.0}] * 5}
    over = await (await post(gw, big, BATCH)).json()
    assert over["epsilon"] == 5.0 and over["within_budget"] is False
    assert all(q["within_budget"] for q in over["queries"])  # each alone fits


async def test_batch_split_of_a_total_epsilon(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    sqls = [
        COUNT,
        "SELECT SUM(age) AS s FROM visits",
        "SELECT COUNT(*) AS n FROM visits WHERE age > 3",
    ]
    body = {"dataset": "visits", "queries": [{"sql": s} for s in sqls], "total_epsilon": 1.0}
    out = await (await post(gw, body, BATCH)).json()
    assert out["split"] == {"total_epsilon": 1.0, "rule": "even", "epsilon_per_query": 0.333333}
    assert [q["epsilon"] for q in out["queries"]] == [0.333333] * 3
    assert {q["epsilon_source"] for q in out["queries"]} == {"batch_split"}
    assert out["epsilon"] == 0.999999

    capped = {**body, "total_epsilon": 4.5}  # 1.5 each is above the cap of 1.0
    assert [q["epsilon"] for q in (await (await post(gw, capped, BATCH)).json())["queries"]] == [
        1.0
    ] * 3

    tiny = {**body, "total_epsilon": 0.002}
    resp = await post(gw, tiny, BATCH)
    assert resp.status == 400
    assert "below the tier's min_epsilon_per_query (0.001)" in (await resp.json())["detail"]

    both = {**body, "queries": [{"sql": COUNT, "epsilon": 0.1}]}
    resp = await post(gw, both, BATCH)
    assert resp.status == 400
    assert "queries[0]: give 'epsilon' or 'accuracy' per query" in (await resp.json())["detail"]


async def test_batch_refusals_name_the_query(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    body = {"dataset": "visits", "queries": [{"sql": COUNT}, {"sql": "SELECT * FROM visits"}]}
    resp = await post(gw, body, BATCH)
    assert resp.status == 400
    assert (await resp.json())["detail"].startswith("queries[1]: ")
    targeted = {
        "dataset": "visits",
        "queries": [{"sql": GROUPED, "accuracy": {"mid": {"ci95": 1}}}],
    }
    problem = await (await post(gw, targeted, BATCH)).json()
    assert problem["problems"] == [
        "queries[0]: accuracy for 'mid': a quantile has no ci95 (its accuracy is its grid "
        "resolution and a rank error), so it cannot be given an accuracy target; give an "
        "epsilon instead"
    ]
    for bad, expected in (
        ({"dataset": "visits", "queries": []}, "'queries' must be a list of 1 to 50"),
        ({"dataset": "visits", "queries": [{"sql": COUNT}] * 51}, "'queries' must be a list"),
        ({"dataset": "visits", "queries": [5]}, "queries[0] must be an object"),
        ({"dataset": "visits", "queries": [{"sq": 1}]}, "queries[0]: unknown field(s): sq"),
        ({"queries": [{"sql": COUNT}], "x": 1}, "unknown field(s): x"),
    ):
        resp = await post(gw, bad, BATCH)
        assert resp.status == 400
        assert expected in (await resp.json())["detail"], expected
    assert await spent(gw, lic.id) == 0
    unseen = {"dataset": "secret", "queries": [{"sql": COUNT}]}
    assert (await post(gw, unseen, BATCH)).status == 404


async def test_choosing_and_pricing_never_read_the_source(make_gateway: Any) -> None:
    """The accuracy search, estimates and batch estimates answer with the dataset's source
    file removed: they read public metadata only."""
    gw = await make_gateway()
    lic = await gw.licence()
    spec = await gw.services.registry.dataset("visits")
    Path(spec.source_path).unlink()
    body = {"dataset": "visits", "sql": GROUPED.replace(", MEDIAN(age) AS mid", ""),
            "accuracy": {"n": {"ci95": 60}, "years": {"ci95": 9000}}}  # fmt: skip
    est = await post(gw, body, "/v1/queries/estimate")
    assert est.status == 200, await est.text()
    assert (await est.json())["epsilon_source"] == "accuracy"
    batch = {"dataset": "visits", "queries": [{"sql": COUNT, "accuracy": {"n": {"ci95": 40}}}]}
    assert (await post(gw, batch, BATCH)).status == 200
    assert not Path(spec.source_path).exists() and await spent(gw, lic.id) == 0


async def test_a_very_large_epsilon_states_a_finite_ci95(make_gateway: Any) -> None:
    """At a tiny noise scale (a tier allowing epsilon in the thousands) OpenDP's discrete
    accuracy helper overflows to -inf; the stated ci95 is then 0 (the integer noise is 0 with
    probability above 95%), and every answer is valid JSON."""
    gw = await make_gateway()
    await gw.licence()
    admin = gw.auth("steward", ["admin"])
    tier = await (await gw.client.get("/v1/admin/tiers/standard", headers=admin)).json()
    budget = {**tier["budget"], "epsilon": 100000.0}
    wide = {**tier, "budget": budget, "max_epsilon_per_query": 5000.0, "reason": "t"}
    resp = await gw.client.put("/v1/admin/tiers/standard", json=wide, headers=admin)
    assert resp.status == 200, await resp.text()
    body = {"dataset": "visits", "sql": COUNT, "epsilon": 5000.0}
    for path in ("/v1/queries/estimate", "/v1/queries"):
        resp = await post(gw, body, path)
        assert resp.status == 200, await resp.text()
        text = await resp.text()
        assert "Infinity" not in text and "NaN" not in text
        assert (await resp.json())["accuracy"]["n"]["ci95"] == 0.0

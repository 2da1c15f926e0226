"""A licence can never be bricked through the budget ledger.

Before the ledger moved to a fixed grid of integer units, an epsilon below about 1e-199 was
priced, charged and committed, and then every later sum of that licence raised: the query, every
later query, estimate and ``GET /v1/budget`` of the licence (and the auditors' summary) answered
500 for good. 1e-320 and 5e-324 answered 500 from OpenDP, a 400-digit integer epsilon raised
``OverflowError``, and a tier budget of 1e200 or a ``period_days`` of 10**9 made every query of
the tier answer 500. Each case below failed on that code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enclave.ledger.grid import Amount

SQL = "SELECT COUNT(*) AS n FROM visits"
PROBLEM = "https://enclave-gateway.org/problems/"
TINY = [1e-199, 1e-250, 1e-320, 5e-324, 1e-7, 0.0009]


async def post(gw: Any, body: Any, path: str = "/v1/queries") -> tuple[int, Any]:
    resp = await gw.client.post(
        path, data=json.dumps(body), headers={**gw.auth(), "Content-Type": "application/json"}
    )
    return resp.status, await resp.json(content_type=None)


async def healthy(gw: Any, spent: float) -> None:
    """Every read of the licence answers, and agrees on what was spent."""
    status, est = await post(gw, {"dataset": "visits", "sql": SQL}, "/v1/queries/estimate")
    assert status == 200, est
    resp = await gw.client.get("/v1/budget", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    (budget,) = (await resp.json())["budgets"]
    assert budget["epsilon_spent"] == pytest.approx(spent, abs=0)
    assert budget["epsilon_remaining"] == budget["epsilon_limit"] - spent
    resp = await gw.client.get("/v1/audit/summary", headers=gw.auth("audrey", ["auditor"]))
    assert resp.status == 200, await resp.text()


def _tier_file(gw_root: Path, name: str, text: str) -> None:
    (gw_root / "policies" / "tiers" / f"{name}.yaml").write_text(text)


@pytest.mark.parametrize("eps", TINY)
async def test_an_epsilon_below_the_tier_minimum_is_refused_before_anything(
    make_gateway: Any, eps: float
) -> None:
    gw = await make_gateway()
    await gw.licence()
    for path in ("/v1/queries", "/v1/queries/estimate"):
        status, problem = await post(gw, {"dataset": "visits", "sql": SQL, "epsilon": eps}, path)
        assert status == 403, problem
        assert problem["type"] == PROBLEM + "tier-refused"
        assert "min_epsilon_per_query (0.001)" in problem["detail"]
    await healthy(gw, 0.0)
    assert (await gw.query(SQL, epsilon=0.5)).status == 200
    await healthy(gw, 0.5)


async def test_a_tier_allowing_the_grid_unit_charges_tiny_epsilons_one_unit(
    make_gateway: Any, config_factory: Any
) -> None:
    """With ``min_epsilon_per_query`` at the grid unit, 1e-199 is calibrated and charged as
    0.000001 (rounded up, never down), and the licence keeps working."""
    root = config_factory().path.parent
    _tier_file(
        root,
        "standard",
        (root / "policies" / "tiers" / "standard.yaml").read_text()
        + "min_epsilon_per_query: 0.000001\n",
    )
    gw = await make_gateway()
    await gw.licence()
    other = SQL + " WHERE age >= 30"
    # (sql, epsilon, charged, cached): 1e-320 repeats 1e-199 on the grid, so the cache answers.
    steps = [
        (SQL, 1e-199, 0.000001, False),
        (SQL, 1e-320, 0.0, True),
        (other, 5e-324, 0.000001, False),
        (other, 1.5e-6, 0.000002, False),
    ]
    for sql, eps, charged, cached in steps:
        resp = await gw.query(sql, epsilon=eps)
        body = await resp.json()
        assert resp.status == 200, body
        assert (body["epsilon_spent"], body["cached"]) == (charged, cached)
    spent = float(Amount.charge("0.000004").epsilon_decimal)
    await healthy(gw, spent)
    resp = await gw.query(SQL, epsilon=0.5)
    assert resp.status == 200
    assert (await resp.json())["budget"]["epsilon_remaining"] == 5.0 - 0.5 - spent


@pytest.mark.parametrize(
    "eps", [10**400, -(10**400), 10**6 + 1, 1e308, 1e6 + 0.5, 0, -0.1, "0.1", True, [0.1], {}]
)
async def test_a_malformed_or_huge_epsilon_is_a_400(make_gateway: Any, eps: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    for path in ("/v1/queries", "/v1/queries/estimate"):
        status, problem = await post(gw, {"dataset": "visits", "sql": SQL, "epsilon": eps}, path)
        assert status == 400, problem
        assert problem["type"] == PROBLEM + "bad-request"
        assert "'epsilon' must be a positive number no larger than 1000000" in problem["detail"]
    await healthy(gw, 0.0)


async def test_a_query_body_lists_every_problem(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    status, problem = await post(gw, {"dataset": 7, "sql": " ", "epsilon": 10**400, "x": 1})
    assert status == 400
    detail = problem["detail"]
    for part in ("unknown field(s): x", "'dataset'", "'sql'", "'epsilon'"):
        assert part in detail, detail


async def test_an_epsilon_with_many_digits_is_charged_on_the_grid(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query(SQL, epsilon=0.30000000000000004)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["epsilon_spent"] == 0.300001  # rounded up to the next millionth
    await healthy(gw, 0.300001)


async def test_admin_tier_bounds_are_400s_listing_every_problem(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    admin = {**gw.auth("root", ["admin"]), "Content-Type": "application/json"}
    current = await (await gw.client.get("/v1/admin/tiers/standard", headers=admin)).json()
    body = {k: v for k, v in current.items() if k not in ("created_at", "changed_by", "versions")}
    body.update(
        reason="test",
        max_epsilon_per_query=1e-320,
        min_epsilon_per_query=0,
        budget={"epsilon": 1e200, "delta": 1e-20, "period_days": 10**9},
    )
    resp = await gw.client.put("/v1/admin/tiers/standard", data=json.dumps(body), headers=admin)
    problem = await resp.json()
    assert resp.status == 400, problem
    for field in (
        "max_epsilon_per_query",
        "min_epsilon_per_query",
        "budget.epsilon",
        "budget.delta",
        "budget.period_days",
    ):
        assert f"{field}: " in problem["detail"], (field, problem["detail"])
    # Nothing changed: the tier still answers.
    assert (await gw.query(SQL, epsilon=0.5)).status == 200
    await healthy(gw, 0.5)


async def test_the_largest_tier_settings_still_answer(
    make_gateway: Any, config_factory: Any
) -> None:
    """At the bounds (budget 10**6, a 100-year period) queries, estimates and budgets answer."""
    root = config_factory().path.parent
    text = (root / "policies" / "tiers" / "standard.yaml").read_text()
    text = text.replace("  epsilon: 5.0", "  epsilon: 1000000\n  period_days: 36500")
    text = text.replace("max_epsilon_per_query: 1.0", "max_epsilon_per_query: 1000000")
    _tier_file(root, "standard", text)
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query(SQL, epsilon=1000)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["budget"]["epsilon_remaining"] == 1_000_000 - 1000
    assert body["budget"]["renews"] is not None
    await healthy(gw, 1000.0)


async def test_a_stored_tier_from_before_the_bounds_is_refused_not_a_500(
    make_gateway: Any,
) -> None:
    """A tier stored before the bounds existed (budget 1e200, period 10**9 days) no longer
    validates: its queries are refused and its budget reads 503 (never 500), until an admin
    PUTs a corrected version, which then answers at once."""
    from enclave.audit.record import AuditDraft

    gw = await make_gateway()
    await gw.licence()
    admin = {**gw.auth("root", ["admin"]), "Content-Type": "application/json"}
    good = await (await gw.client.get("/v1/admin/tiers/standard", headers=admin)).json()
    good = {k: v for k, v in good.items() if k not in ("created_at", "changed_by", "versions")}
    stale = {**good, "budget": {"epsilon": 1e200, "delta": 1e-6, "period_days": 10**9}}
    stale.pop("min_epsilon_per_query")
    draft = AuditDraft(action="tier.update", outcome="ok", actor="old", roles=("admin",))
    await gw.services.store.put_policy("tier", "standard", stale, "old", draft)
    status, problem = await post(gw, {"dataset": "visits", "sql": SQL, "epsilon": 0.5})
    assert status in (403, 503), problem
    assert (await gw.client.get("/v1/budget", headers=gw.auth())).status == 503
    body = {**good, "reason": "back within the bounds"}
    body.pop("version", None)
    resp = await gw.client.put("/v1/admin/tiers/standard", data=json.dumps(body), headers=admin)
    assert resp.status == 200, await resp.text()
    assert (await gw.query(SQL, epsilon=0.5)).status == 200
    await healthy(gw, 0.5)

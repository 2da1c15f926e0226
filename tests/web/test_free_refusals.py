"""Public mistakes are refused for free: before any charge, with a suggestion drawn from the
public schema (docs/researcher.md, "Refusals")."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.audit.log import AuditFilter

CASES = [
    ("SELECT COUNT(*) AS n FROM visits WHERE region = 'North'", "did you mean 'north'?"),
    (
        "SELECT COUNT(*) FROM visits WHERE region IN ('south', 'Est')",
        "did you mean 'west' or 'east'?",
    ),
    ("SELECT COUNT(*) AS n FROM visits WHERE sex != 'f'", "did you mean 'F'?"),
    ("SELECT COUNT(*) AS n FROM visits WHERE regoin = 'north'", "did you mean region?"),
    ("SELECT regoin, COUNT(*) FROM visits GROUP BY regoin", "did you mean region?"),
    ("SELECT SUM(csot) FROM visits", "did you mean cost?"),
    (
        "SELECT region AS r, COUNT(*) AS n FROM visits GROUP BY r",
        "that is an output alias, and GROUP BY takes column names; write GROUP BY region",
    ),
    ("SELECT region, COUNT(*) AS n FROM visits GROUP BY region, n", "alias of an aggregate"),
]


@pytest.mark.parametrize(("sql", "hint"), CASES)
@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/estimate"])
async def test_public_mistakes_are_refused_free_with_a_suggestion(
    make_gateway: Any, sql: str, hint: str, path: str
) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query(sql, epsilon=0.5, path=path)
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/unsupported-query")
    assert hint in body["detail"]
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth())).json()
    assert budget["budgets"][0]["epsilon_spent"] == 0
    (rec,) = [
        r
        for r in await gw.services.store.audit_events(AuditFilter(actor="alice"), 0, 100)
        if r.action.startswith("query")
    ]
    assert (rec.outcome, rec.reason) == ("denied", body["detail"])  # audited, not charged


async def test_the_literal_is_never_echoed(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query("SELECT COUNT(*) FROM visits WHERE region = 'Secret-Marker-9'")
    text = await resp.text()
    assert resp.status == 400 and "Secret-Marker-9" not in text
    assert "'north', 'south', 'east', 'west', 'central'" in text  # the declared values


async def test_declared_values_still_work(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    sql = (
        "SELECT region, COUNT(*) AS n FROM visits "
        "WHERE sex = 'F' AND region IN ('north') GROUP BY region"
    )
    resp = await gw.query(sql)
    assert resp.status == 200, await resp.text()


async def test_answers_say_they_count_bounded_rows_and_state_quantile_accuracy(
    make_gateway: Any,
) -> None:
    """Honest accuracy: query, cached repeat and estimate carry ``bounding``; a quantile
    carries its grid resolution and rank guarantee (docs/researcher.md, "Accuracy")."""
    gw = await make_gateway()
    await gw.licence()
    sql = "SELECT COUNT(*) AS n, MEDIAN(age) AS m FROM visits"
    bodies = []
    for path in ("/v1/queries/estimate", "/v1/queries", "/v1/queries"):
        resp = await gw.query(sql, epsilon=0.5, path=path)
        assert resp.status == 200, await resp.text()
        bodies.append(await resp.json())
    assert bodies[2]["cached"] is True
    for body in bodies:
        bounding = body["bounding"]
        assert (bounding["privacy_unit"], bounding["max_rows_per_unit"]) == ("person_id", 5)
        assert bounding["counts"] == "bounded rows"
        median = body["accuracy"]["m"]
        assert median["ci95"] is None and median["resolution"] == 1.0
        assert median["rank_error95"] > 0 and median["candidates"] == 111
        assert body["accuracy"]["n"]["ci95"] > 0

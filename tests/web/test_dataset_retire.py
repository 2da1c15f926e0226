"""Retiring a dataset: no new queries or estimates, history and spend kept, reason required and
audited; restoring it (with a reason) opens it again."""

from __future__ import annotations

from typing import Any

SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
ADMIN = ("admin",)


async def _put(gw: Any, change: dict[str, Any]) -> Any:
    auth = gw.auth("stella", ADMIN)
    current = await (await gw.client.get("/v1/admin/datasets/visits", headers=auth)).json()
    return await gw.client.put(
        "/v1/admin/datasets/visits", json={**current, **change}, headers=auth
    )


async def test_a_retired_dataset_answers_no_query_and_keeps_its_history(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    assert (await gw.query(SQL, epsilon=0.5)).status == 200

    refused = await _put(gw, {"retired": True})
    assert refused.status == 400
    problems = (await refused.json())["problems"]
    assert problems == ["dataset visits: reason: required when retiring or restoring"]
    bad = await _put(gw, {"retired": "yes", "reason": "x"})
    assert "dataset visits: retired: must be true or false" in (await bad.json())["problems"]

    done = await _put(gw, {"retired": True, "reason": "superseded by visits_2027"})
    assert done.status == 200, await done.text()
    body = await done.json()
    assert body["retired"] is True and body["version"] == 2

    for path in ("/v1/queries", "/v1/queries/estimate"):
        resp = await gw.query(SQL, epsilon=0.5, path=path)
        assert resp.status == 403
        problem = await resp.json()
        assert problem["type"].endswith("/forbidden") and problem["detail"] == "dataset retired"
    listed = await (await gw.client.get("/v1/datasets", headers=gw.auth("alice"))).json()
    assert listed["datasets"] == []
    budget = await (await gw.client.get("/v1/budget", headers=gw.auth("alice"))).json()
    assert budget["budgets"][0]["epsilon_spent"] == 0.5  # the spend is kept
    history = await (await gw.client.get("/v1/queries", headers=gw.auth("alice"))).json()
    assert [q["outcome"] for q in history["queries"]] == ["ok", "denied"]
    ready = await gw.client.get("/readyz")
    assert ready.status == 200

    events = await gw.client.get(
        "/v1/audit/events?action=dataset.update", headers=gw.auth("otto", ["auditor"])
    )
    records = (await events.json())["events"]
    ok = [r for r in records if r["outcome"] == "ok"]
    assert [(r["actor"], r["reason"]) for r in ok] == [("stella", "superseded by visits_2027")]

    restored = await _put(gw, {"retired": False, "reason": "visits_2027 delayed"})
    assert restored.status == 200 and "retired" not in await restored.json()
    assert (await gw.query(SQL, epsilon=0.5)).status == 200

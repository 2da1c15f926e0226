"""The steward's tools over HTTP: per-licence spend (exact decimal text), budget grants
(validated, audited with actor and reason, raising the limit a query meets) and the bulk
licence import (every problem by row and column, all or none, dry run)."""

from __future__ import annotations

from typing import Any

from enclave.audit.log import AuditFilter
from enclave.audit.record import AuditDraft

ADMIN = ("stella", ["admin"])
PROBLEM = "https://enclave-gateway.org/problems/"
HEADER = "subject,organization,tier,datasets,purpose,jurisdiction,valid_until\n"


async def call(gw: Any, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    resp = await gw.client.request(method, path, headers=gw.auth(*ADMIN), **kw)
    return resp.status, await resp.json(content_type=None)


async def records(gw: Any, action: str) -> list[Any]:
    found: list[Any] = await gw.services.store.audit_events(AuditFilter(action=action))
    return found


async def test_budget_shows_spend_and_a_grant_lets_the_next_query_run(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence("alice", tier="standard")  # budget epsilon 5, at most 1 per query
    path = f"/v1/admin/licences/{lic.id}"
    status, body = await call(gw, "GET", path + "/budget")
    assert status == 200, body
    (row,) = body["budgets"]
    assert row["dataset"] == "visits" and row["epsilon_limit"] == "5"
    assert (row["epsilon_spent"], row["epsilon_remaining"], row["epsilon_granted"]) == (
        "0", "5", "0",
    )  # fmt: skip
    assert row["delta_limit"] == "0.000001"

    for i in range(5):  # distinct questions: a repeat would be answered from the cache, free
        sql = f"SELECT COUNT(*) AS n FROM visits WHERE age > {10 + i}"  # noqa: S608
        assert (await gw.query(sql, epsilon=1.0)).status == 200
    refused = await gw.query("SELECT COUNT(*) AS n FROM visits WHERE age > 3", epsilon=0.3)
    assert refused.status == 403
    (row,) = (await call(gw, "GET", path + "/budget"))[1]["budgets"]
    assert (row["epsilon_spent"], row["epsilon_remaining"]) == ("5", "0")

    grant = {"dataset": "visits", "epsilon": 0.7, "reason": "DSA-12 extension, chapter 3"}
    status, made = await call(gw, "POST", path + "/grants", json=grant)
    assert status == 201, made
    assert (made["epsilon"], made["delta"], made["actor"]) == ("0.7", "0", "stella")
    (row,) = (await call(gw, "GET", path + "/budget"))[1]["budgets"]
    assert (row["epsilon_granted"], row["epsilon_limit"], row["epsilon_remaining"]) == (
        "0.7", "5.7", "0.7",
    )  # fmt: skip
    mine = await (await gw.client.get("/v1/budget", headers=gw.auth("alice"))).json()
    assert mine["budgets"][0]["epsilon_remaining"] == 0.7
    ok = await gw.query("SELECT COUNT(*) AS n FROM visits WHERE age > 3", epsilon=0.3)
    assert ok.status == 200, await ok.text()
    assert (await ok.json())["budget"]["epsilon_remaining"] == 0.4

    (rec,) = await records(gw, "licence.grant")
    assert (rec.actor, rec.reason, rec.licence_id, rec.dataset) == (
        "stella", grant["reason"], lic.id, "visits",
    )  # fmt: skip
    assert rec.detail["grant"] == {"epsilon": "0.7", "delta": "0", "layer": "licence"}
    status, listed = await call(gw, "GET", path + "/grants")
    assert status == 200 and [g["audit_seq"] for g in listed["grants"]] == [rec.seq]


async def test_a_grant_lists_every_problem_and_changes_nothing(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence("alice")
    path = f"/v1/admin/licences/{lic.id}/grants"
    bad = {"dataset": "labs", "epsilon": 0.0000001, "delta": 1, "colour": "red"}
    status, problem = await call(gw, "POST", path, json=bad)
    assert status == 400 and problem["type"] == PROBLEM + "bad-request"
    text = "\n".join(problem["problems"])
    for part in (
        "colour: unknown field",
        "dataset: the licence does not cover this dataset",
        "epsilon: must be a number in (0, 1000000], a multiple of 0.000001",
        "delta: must be a number in [0, 1), a multiple of 1e-15",
        "reason: required",
    ):
        assert part in text, (part, text)
    for body in (
        {"dataset": "visits", "epsilon": 0, "reason": "r"},
        {"dataset": "visits", "epsilon": -1, "reason": "r"},
        {"dataset": "visits", "epsilon": "NaN", "reason": "r"},
        {"dataset": "visits", "epsilon": True, "reason": "r"},
        {"dataset": "visits", "epsilon": 1e300, "reason": "r"},
        {"dataset": "visits", "epsilon": 999_999.999999, "reason": "r"},  # past the ledger bound
        {"dataset": "visits", "epsilon": 1, "reason": "   "},
        [1, 2],
    ):
        status, problem = await call(gw, "POST", path, json=body)
        assert status == 400, (body, problem)
    assert (await call(gw, "POST", "/v1/admin/licences/lic_nobody/grants", json={}))[0] == 404
    revoke = AuditDraft(action="licence.update", outcome="ok", actor="t", reason="test")
    await gw.services.store.update_licence(lic.id, {"status": "revoked"}, revoke)
    status, problem = await call(
        gw, "POST", path, json={"dataset": "visits", "epsilon": 1, "reason": "late"}
    )
    assert status == 409, problem
    assert await gw.services.store.grants(lic.id) == []
    assert not [r for r in await records(gw, "licence.grant") if r.outcome == "ok"]
    # a researcher cannot grant, nor read a licence's budget
    resp = await gw.client.get(f"/v1/admin/licences/{lic.id}/budget", headers=gw.auth("alice"))
    assert resp.status == 403


async def test_import_dry_run_problems_then_all_or_none(make_gateway: Any) -> None:
    gw = await make_gateway()
    url = "/v1/admin/licences/import"
    csv_headers = {"Content-Type": "text/csv"}
    bad = (
        HEADER
        + "ann,Uni A,standard,visits,study,GB,2099-01-01\n"
        + "ben,Uni B,platinum,visits;nowhere,study,gb,2099-01-01\n"
        + "cat,Uni C,open,visits,study,GB,\n"
    )
    for dry in ("true", "false"):
        resp = await gw.client.post(
            url, params={"dry_run": dry, "reason": "cohort 7"}, data=bad.encode(),
            headers={**gw.auth(*ADMIN), **csv_headers},
        )  # fmt: skip
        problem = await resp.json(content_type=None)
        assert resp.status == 400, problem
        assert problem["problems"] == [
            "row 3: jurisdiction: must be a two-letter upper-case country code",
            "row 3: tier: unknown tier 'platinum'",
            "row 3: datasets: unknown dataset 'nowhere'",
            "row 4: valid_until: required (a licence has a sunset date)",
        ]
    assert await gw.services.store.list_licences(None) == []
    # no reason and bad rows: both listed in one answer
    resp = await gw.client.post(url, data=bad.encode(), headers={**gw.auth(*ADMIN), **csv_headers})
    problems = (await resp.json(content_type=None))["problems"]
    assert resp.status == 400 and problems[0].startswith("reason: required") and len(problems) == 5

    good = HEADER + "ann,Uni A,standard,visits,study,GB,2099-01-01\n"
    good += 'ben,"Uni B, Health",open,visits,teaching,US,2099-06-30\n'
    send = {"data": good.encode(), "headers": {**gw.auth(*ADMIN), **csv_headers}}
    resp = await gw.client.post(url, params={"dry_run": "true"}, **send)
    body = await resp.json()
    assert resp.status == 200 and body["dry_run"] is True and body["count"] == 2
    assert await gw.services.store.list_licences(None) == []
    resp = await gw.client.post(url, **send)  # issuing needs a reason
    assert resp.status == 400 and "reason: required" in (await resp.json())["detail"]
    resp = await gw.client.post(url, params={"reason": "DSA-7 cohort"}, **send)
    body = await resp.json()
    assert resp.status == 201 and body["count"] == 2, body
    issued = await gw.services.store.list_licences(None)
    assert sorted(x.subject for x in issued) == ["ann", "ben"]
    created = await records(gw, "licence.create")
    assert [(r.actor, r.reason, r.detail["import"]) for r in created] == [
        ("stella", "DSA-7 cohort", "api")
    ] * 2
    # the same file again: every row now clashes with an active licence, nothing is issued
    resp = await gw.client.post(url, params={"reason": "again"}, **send)
    problem = await resp.json()
    assert resp.status == 400 and len(problem["problems"]) == 2
    refused = await records(gw, "licence.import")
    assert refused and refused[-1].outcome == "denied" and refused[-1].actor == "stella"
    resp = await gw.client.post(url, params={"reason": "x"}, json={"a": 1}, headers=gw.auth(*ADMIN))
    assert resp.status == 415

"""Layered budgets over HTTP: a query is refused (403 ``budget-exhausted`` with the member
``layer``) when any of the licence, subject, organisation and dataset layers would pass, and
nothing is charged; a reissued licence continues where the old one stopped unless a steward
grants more at the subject layer; ``GET /v1/budget`` names the binding layer (shared layers
coarsely); admins and auditors see every layer exactly; estimates count every layer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from enclave.audit.log import AuditFilter
from enclave.audit.record import AuditDraft
from tests.spend import layer_spent

ADMIN = ("stella", ["admin"])
EXHAUSTED = "https://enclave-gateway.org/problems/budget-exhausted"


async def admin(gw: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {**gw.auth(*ADMIN), "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body)
    resp = await gw.client.request(method, path, data=data, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def set_policy(gw: Any, kind: str, name: str, **fields: Any) -> Any:
    status, body = await admin(gw, "GET", f"/v1/admin/{kind}s/{name}")
    assert status == 200, body
    body = {k: v for k, v in body.items() if k not in ("created_at", "changed_by", "versions")}
    status, stored = await admin(
        gw, "PUT", f"/v1/admin/{kind}s/{name}", {**body, **fields, "reason": "layer test"}
    )
    assert status == 200, stored
    return stored


async def spend(gw: Any, sub: str, epsilon: float, n: int = 1, start: int = 0) -> None:
    """``n`` distinct queries (a repeat would be free) of ``epsilon`` by ``sub``, all released."""
    for i in range(start, start + n):
        sql = f"SELECT COUNT(*) AS n FROM visits WHERE age > {i}"  # noqa: S608
        resp = await gw.query(sql, epsilon, sub=sub)
        assert resp.status == 200, await resp.text()


async def my_budget(gw: Any, sub: str) -> list[dict[str, Any]]:
    resp = await gw.client.get("/v1/budget", headers=gw.auth(sub))
    assert resp.status == 200
    rows: list[dict[str, Any]] = (await resp.json())["budgets"]
    return rows


async def refused(gw: Any, sub: str, epsilon: float, layer: str) -> dict[str, Any]:
    """A fresh query of ``epsilon`` is refused on ``layer`` and nothing is charged."""
    ledger_before = await layer_spent(gw.services.store, "dataset", "visits", "visits", None)
    resp = await gw.query("SELECT COUNT(*) AS n FROM visits WHERE age > 99", epsilon, sub=sub)
    problem: dict[str, Any] = await resp.json()
    assert resp.status == 403, problem
    assert problem["type"] == EXHAUSTED and problem["layer"] == layer, problem
    after = await layer_spent(gw.services.store, "dataset", "visits", "visits", None)
    assert after == ledger_before
    return problem


async def revoke(gw: Any, licence_id: str) -> None:
    await gw.services.store.update_licence(
        licence_id,
        {"status": "revoked"},
        AuditDraft(
            action="licence.update", outcome="ok", actor="stella", roles=("admin",), reason="t"
        ),
    )


async def test_a_reissued_licence_continues_where_the_old_one_stopped(make_gateway: Any) -> None:
    """Issue 12 measured 5.0 remaining on the new licence after 0.5 had been spent on the
    old one; the subject layer now makes it 4.5."""
    gw = await make_gateway()
    old = await gw.licence("alice")  # standard: 5 per licence, at most 1 per query
    await spend(gw, "alice", 0.5)
    await revoke(gw, old.id)
    new = await gw.licence("alice")
    (row,) = [r for r in await my_budget(gw, "alice") if r["licence_id"] == new.id]
    assert (row["epsilon_remaining"], row["binding_layer"]) == (4.5, "subject")
    assert row["epsilon_spent"] == 0.0 and row["epsilon_limit"] == 5.0  # the licence's own

    # 4.0 more leaves 0.5 for the subject (1.0 on the new licence): 0.75 is refused there
    await spend(gw, "alice", 1.0, n=4, start=10)
    problem = await refused(gw, "alice", 0.75, "subject")
    assert "across all your licences" in problem["detail"] and "0.5" in problem["detail"]
    denied = await gw.services.store.audit_events(AuditFilter(action="query", outcome="denied"))
    assert denied[-1].licence_id == new.id  # audited; the ledger is unchanged (refused)

    # a steward grants more at the subject layer, with a reason (audited)
    grant = {"dataset": "visits", "epsilon": 0.5, "reason": "reissue", "layer": "subject"}
    status, made = await admin(gw, "POST", f"/v1/admin/licences/{new.id}/grants", grant)
    assert status == 201 and made["layer"] == "subject" and made["subject"] == "alice", made
    (rec,) = await gw.services.store.audit_events(AuditFilter(action="licence.grant"))
    assert rec.detail["grant"]["layer"] == "subject" and rec.reason == "reissue"
    (row,) = [r for r in await my_budget(gw, "alice") if r["licence_id"] == new.id]
    # 1.0 left on both layers now: a tie names the innermost
    assert (row["epsilon_remaining"], row["binding_layer"]) == (1.0, "licence")
    await spend(gw, "alice", 0.75, start=20)
    bad = {**grant, "layer": "everyone"}
    status, problem = await admin(gw, "POST", f"/v1/admin/licences/{new.id}/grants", bad)
    assert status == 400 and any(p.startswith("layer") for p in problem["problems"])


async def test_the_organisation_layer_is_shared_and_shown_coarsely(make_gateway: Any) -> None:
    gw = await make_gateway()
    await set_policy(gw, "tier", "standard", organisation_budget={"epsilon": 1.5})
    await gw.licence("alice")
    bob = await gw.licence("bob")  # the same organisation
    await gw.licence("carol", organization="Elsewhere")
    await spend(gw, "alice", 0.55)
    (row,) = await my_budget(gw, "bob")
    # 0.95 left of 1.5, shown in tenths of the limit (0.15) rounded down: 0.9
    assert (row["binding_layer"], row["epsilon_remaining"]) == ("organisation", 0.9)
    assert row["renews"] is None
    assert "alice" not in json.dumps(row) and "0.55" not in json.dumps(row)  # others unnamed
    await refused(gw, "bob", 1.0, "organisation")
    estimate = await gw.query("SELECT COUNT(*) AS n FROM visits", 1.0, "visits", "bob",
                              "/v1/queries/estimate")  # fmt: skip
    assert (await estimate.json())["within_budget"] is False
    await spend(gw, "bob", 0.5)
    await spend(gw, "carol", 1.0)  # another organisation is not affected
    status, body = await admin(gw, "GET", f"/v1/admin/licences/{bob.id}/budget")
    layers = {x["layer"]: x for x in body["budgets"][0]["layers"]}
    assert status == 200 and list(layers) == ["licence", "subject", "organisation"]
    org = layers["organisation"]
    assert (org["key"], org["epsilon_limit"], org["epsilon_spent"]) == (
        "Test University", "1.5", "1.05",
    )  # fmt: skip
    auditor = await gw.client.get(
        f"/v1/audit/licences/{bob.id}/budget", headers=gw.auth("audrey", ["auditor"])
    )
    assert auditor.status == 200 and (await auditor.json()) == body


async def test_the_dataset_layer_counts_everyone(make_gateway: Any) -> None:
    gw = await make_gateway()
    stored = await set_policy(gw, "dataset", "visits", total_budget={"epsilon": 1.0})
    assert stored["total_budget"] == {"epsilon": 1.0, "delta": 0.0}
    await gw.licence("alice")
    await gw.licence("bob", organization="Elsewhere")
    await spend(gw, "alice", 0.75)
    problem = await refused(gw, "bob", 0.5, "dataset")
    assert "remaining" not in problem["detail"]  # others' spending is not told
    (row,) = await my_budget(gw, "bob")
    assert (row["binding_layer"], row["epsilon_remaining"]) == ("dataset", 0.2)
    body = {"dataset": "visits", "sql": "SELECT COUNT(*) AS n FROM visits", "epsilon": 0.25}
    resp = await gw.client.post("/v1/queries/estimate", json=body, headers=gw.auth("bob"))
    answer = await resp.json()
    assert answer["within_budget"] is True and answer["budget"]["binding_layer"] == "dataset"
    resp = await gw.query("SELECT COUNT(*) AS n FROM visits WHERE age > 50", 0.25, sub="bob")
    assert resp.status == 200
    budget = (await resp.json())["budget"]  # after the charge, from the debit's transaction
    assert (budget["binding_layer"], budget["epsilon_remaining"]) == ("dataset", 0.0)


async def test_concurrent_queries_of_many_licences_never_overspend_the_dataset(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    await set_policy(gw, "dataset", "visits", total_budget={"epsilon": 1.0})
    subjects = [f"r{i}" for i in range(8)]
    for sub in subjects:
        await gw.licence(sub, organization=f"org-{sub}")

    async def ask(i: int) -> int:
        sub = subjects[i % len(subjects)]
        sql = f"SELECT COUNT(*) AS n FROM visits WHERE age > {i}"  # noqa: S608
        resp = await gw.query(sql, 0.1, sub=sub)
        if resp.status == 403:
            assert (await resp.json())["layer"] == "dataset"
        return int(resp.status)

    statuses = await asyncio.gather(*(ask(i) for i in range(24)))
    assert statuses.count(200) == 10 and statuses.count(403) == 14
    spent = await layer_spent(gw.services.store, "dataset", "visits", "visits", None)
    assert spent.epsilon_decimal == 1


async def test_layer_settings_are_validated(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, tier = await admin(gw, "GET", "/v1/admin/tiers/standard")
    bad_tier = {**tier, "organisation_budget": {"delta": 0.1, "extra": 1}, "reason": "r"}
    status, problem = await admin(gw, "PUT", "/v1/admin/tiers/standard", bad_tier)
    assert status == 400
    assert any("organisation_budget.extra: unknown field" in p for p in problem["problems"])
    assert any("organisation_budget.epsilon: required" in p for p in problem["problems"])
    status, dataset = await admin(gw, "GET", "/v1/admin/datasets/visits")
    for total, expected in (
        ({"epsilon": -1}, "total_budget.epsilon"),
        ({"epsilon": 1, "delta": 2}, "total_budget.delta"),
        ({"delta": 0.1}, "total_budget.epsilon: required"),
        (5, "total_budget: must be a mapping"),
    ):
        body = {**dataset, "total_budget": total, "reason": "r"}
        status, problem = await admin(gw, "PUT", "/v1/admin/datasets/visits", body)
        assert status == 400 and any(expected in p for p in problem["problems"]), problem


async def test_changing_a_shared_budget_needs_a_reason_which_is_audited(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, dataset = await admin(gw, "GET", "/v1/admin/datasets/visits")
    body = {k: v for k, v in dataset.items() if k not in ("created_at", "changed_by", "versions")}
    body["total_budget"] = {"epsilon": 10}
    status, problem = await admin(gw, "PUT", "/v1/admin/datasets/visits", body)
    assert status == 400
    assert "dataset visits: reason: required when total_budget changes" in problem["problems"]
    status, _ = await admin(gw, "PUT", "/v1/admin/datasets/visits", {**body, "reason": "DSA-9"})
    assert status == 200
    (record,) = [
        r
        for r in await gw.services.store.audit_events(AuditFilter(action="dataset.update"))
        if r.outcome == "ok"
    ]
    assert record.reason == "DSA-9"
    assert record.detail["budget_change"] == {
        "before": {"total_budget": None},
        "after": {"total_budget": {"epsilon": 10.0, "delta": 0.0}},
    }
    await set_policy(gw, "tier", "standard", organisation_budget={"epsilon": 6})
    (record,) = [
        r
        for r in await gw.services.store.audit_events(AuditFilter(action="tier.update"))
        if r.outcome == "ok"
    ]
    assert record.detail["budget_change"]["after"]["organisation_budget"] == {
        "epsilon": 6.0,
        "delta": 0.0,
    }


async def test_the_worked_example(make_gateway: Any) -> None:
    """docs/privacy.md, "Budget layers": the worked example, step by step."""
    gw = await make_gateway()
    await set_policy(gw, "dataset", "visits", total_budget={"epsilon": 10})
    await set_policy(gw, "tier", "standard", organisation_budget={"epsilon": 6})
    a = await gw.licence("alice", organization="Uni")
    await gw.licence("bob", organization="Uni")
    await gw.licence("carol", organization="Lab")

    async def view(sub: str) -> tuple[str, float]:
        (row,) = [r for r in await my_budget(gw, sub) if r["licence_status"] == "active"]
        return row["binding_layer"], row["epsilon_remaining"]

    await spend(gw, "alice", 1.0, n=3)  # 1. Alice spends 3 on licence A
    assert await view("alice") == ("licence", 2.0)
    await revoke(gw, a.id)  # 2. revoked; licence B continues from 2 left
    b = await gw.licence("alice", organization="Uni")
    assert await view("alice") == ("subject", 2.0)
    grant = {"dataset": "visits", "epsilon": 1, "reason": "reissue", "layer": "subject"}
    assert (await admin(gw, "POST", f"/v1/admin/licences/{b.id}/grants", grant))[0] == 201
    assert await view("alice") == ("subject", 3.0)  # 3. a subject grant of 1
    await spend(gw, "bob", 1.0, n=2, start=10)  # 4. Bob spends 2.5
    await spend(gw, "bob", 0.5, start=12)
    await refused(gw, "alice", 1.0, "organisation")
    assert await view("alice") == ("organisation", 0.0)  # 0.5 left, in tenths of 6
    await spend(gw, "alice", 0.5, start=20)
    await spend(gw, "carol", 1.0, n=4, start=30)  # 5. Carol spends 4: the dataset's 10
    await refused(gw, "carol", 0.1, "dataset")
    await refused(gw, "bob", 0.1, "organisation")
    spent = await layer_spent(gw.services.store, "dataset", "visits", "visits", None)
    assert spent.epsilon_decimal == 10

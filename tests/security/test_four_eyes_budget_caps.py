"""With four-eyes on, one admin cannot lift a shared budget cap alone: raising or removing a
tier's ``organisation_budget`` or a dataset's ``total_budget``, or moving a licence
to another organisation (out of an exhausted organisation budget) is a proposal (202), and
nothing changes until a second admin approves it. Narrowing applies at once."""

from __future__ import annotations

from typing import Any

STELLA = ("stella", ["admin"])
KEEP_OUT = ("versions", "created_at", "changed_by")


async def call(gw: Any, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    resp = await gw.client.request(method, path, headers=gw.auth(*STELLA), **kw)
    return resp.status, await resp.json(content_type=None)


async def current(gw: Any, path: str) -> dict[str, Any]:
    status, body = await call(gw, "GET", path)
    assert status == 200, body
    return {k: v for k, v in body.items() if k not in KEEP_OUT}


async def put(gw: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await call(gw, "PUT", path, json={**body, "reason": "DSA-9"})


async def test_a_tier_organisation_budget_is_lifted_only_by_two_admins(make_gateway: Any) -> None:
    gw = await make_gateway(governance={"four_eyes": True})
    path = "/v1/admin/tiers/standard"
    tier = await current(gw, path)
    capped = {**tier, "organisation_budget": {"epsilon": 10.0}}
    status, body = await put(gw, path, capped)
    assert status == 200, body  # a cap where there was none narrows: applies at once
    for lifted in (
        {**tier, "organisation_budget": {"epsilon": 20.0}},
        {k: v for k, v in tier.items() if k != "organisation_budget"},
    ):
        status, body = await put(gw, path, lifted)
        assert status == 202, body
        assert any("organisation_budget" in r for r in body["risks"])
    assert (await current(gw, path))["organisation_budget"]["epsilon"] == 10.0


async def test_a_dataset_total_budget_is_lifted_only_by_two_admins(
    make_gateway: Any,
) -> None:
    gw = await make_gateway(governance={"four_eyes": True})
    path = "/v1/admin/datasets/visits"
    spec = await current(gw, path)
    status, body = await put(gw, path, {**spec, "total_budget": {"epsilon": 50.0}})
    assert status == 200, body
    spec = await current(gw, path)
    for changed, risk in (
        ({**spec, "total_budget": {"epsilon": 500.0}}, "total_budget"),
        ({k: v for k, v in spec.items() if k != "total_budget"}, "total_budget"),
    ):
        status, body = await put(gw, path, changed)
        assert status == 202, body
        assert any(risk in r for r in body["risks"]), body["risks"]
    now = await current(gw, path)
    assert now["total_budget"]["epsilon"] == 50.0


async def test_moving_a_licence_to_another_organisation_needs_a_second_admin(
    make_gateway: Any,
) -> None:
    gw = await make_gateway(governance={"four_eyes": True})
    lic = await gw.licence("alice", organization="Northwind")
    path = f"/v1/admin/licences/{lic.id}"
    status, body = await call(
        gw, "PATCH", path, json={"organization": "Fresh Org", "reason": "moved"}
    )
    assert status == 202, body
    assert any("organisation changed" in r for r in body["risks"])
    assert (await gw.services.store.get_licence(lic.id)).organization == "Northwind"

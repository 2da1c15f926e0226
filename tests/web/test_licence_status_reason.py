"""Admins see why a licence is suspended or revoked: the reason, who and when, from the log."""

from __future__ import annotations

from typing import Any

ADMIN = ("admin",)


async def test_status_reason_follows_each_status_change(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence("alice")
    c, auth = gw.client, gw.auth("stella", ADMIN)
    path = f"/v1/admin/licences/{lic.id}"
    assert (await (await c.get(path, headers=auth)).json())["status_reason"] is None

    resp = await c.patch(
        path, json={"status": "suspended", "reason": "ethics review"}, headers=auth
    )
    assert resp.status == 200
    note = (await resp.json())["status_reason"]
    assert note["status"] == "suspended" and note["reason"] == "ethics review"
    assert note["by"] == "stella" and note["at"] and note["audit_seq"] > 0
    listed = await (await c.get("/v1/admin/licences", headers=auth)).json()
    assert listed["licences"][0]["status_reason"] == note

    # a later change of something else keeps the suspension's reason
    resp = await c.patch(path, json={"purpose": "renamed study"}, headers=auth)
    assert (await resp.json())["status_reason"] == note

    resp = await c.patch(path, json={"status": "active", "reason": "review passed"}, headers=auth)
    assert (await resp.json())["status_reason"] is None
    resp = await c.patch(path, json={"status": "revoked", "reason": "breach"}, headers=auth)
    revoked = (await resp.json())["status_reason"]
    assert (revoked["status"], revoked["reason"]) == ("revoked", "breach")
    # researchers never see it: their view of licences is the budget, not the admin record
    budget = await (await c.get("/v1/budget", headers=gw.auth("alice"))).json()
    assert all("status_reason" not in b for b in budget["budgets"])

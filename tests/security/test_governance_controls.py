"""Four-eyes and incident controls under attack: the same person with a second token is still
the proposer; a beneficiary is judged by their licences at approval, whatever their token
says; an approval cannot carry a change of its own; a freeze never reveals a dataset to
someone not licensed for it; hostile names, ids and reasons never reach a 500; a held licence
is not reactivated by a side door."""

from __future__ import annotations

from typing import Any

PROBLEM = "https://enclave-gateway.org/problems/"
SQL = "SELECT COUNT(*) AS n FROM visits"


async def call(gw: Any, sub: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    headers = gw.auth(sub, ["admin"], **kw.pop("claims", {}))
    resp = await gw.client.request(method, path, headers=headers, **kw)
    return resp.status, await resp.json(content_type=None)


async def proposed(gw: Any) -> str:
    lic = await gw.licence("alice", status="suspended")
    status, body = await call(gw, "stella", "PATCH", f"/v1/admin/licences/{lic.id}",
                              json={"status": "active", "reason": "appeal"})  # fmt: skip
    assert status == 202, body
    return str(body["id"])


async def test_a_second_token_of_the_proposer_is_still_the_proposer(make_gateway: Any) -> None:
    gw = await make_gateway(governance={"four_eyes": True})
    pid = await proposed(gw)
    for claims in ({"jti": "another-session"}, {"roles_extra": "auditor"}):
        status, problem = await call(gw, "stella", "POST", f"/v1/admin/proposals/{pid}/approve",
                                     json={"reason": "me again"}, claims=claims)  # fmt: skip
        assert status == 403 and problem["type"] == PROBLEM + "self-approval"
    assert (await gw.services.store.get_proposal(pid)).status == "pending"


async def test_a_beneficiary_is_judged_by_their_licences_at_approval(make_gateway: Any) -> None:
    gw = await make_gateway()  # four-eyes off: a reactivation is still a proposal
    await gw.licence("alice", organization="Northwind")
    mine = await gw.licence("omar", organization="Southwind")
    org = "/v1/admin/organisations/Northwind"
    assert (await call(gw, "stella", "POST", org + "/suspend", json={"reason": "BR-1"}))[0] == 200
    status, body = await call(gw, "stella", "POST", org + "/reactivate", json={"reason": "ok"})
    assert status == 202, body
    # after the proposal, omar's licence moves into the organisation: now he would benefit
    status, moved = await call(gw, "stella", "PATCH", f"/v1/admin/licences/{mine.id}",
                               json={"organization": "Northwind", "reason": "moved"})  # fmt: skip
    assert status == 200, moved
    for roles, claims in ((["admin"], {}), (["researcher", "admin"], {"jti": "other-session"})):
        resp = await gw.client.post(
            f"/v1/admin/proposals/{body['id']}/approve", json={"reason": "fine"},
            headers=gw.auth("omar", roles, **claims),
        )  # fmt: skip
        problem = await resp.json(content_type=None)
        assert resp.status == 403 and problem["type"] == PROBLEM + "self-approval", problem
    assert (await gw.services.store.get_proposal(body["id"])).status == "pending"
    assert await gw.services.store.held_licences("Northwind") != []


async def test_an_approval_cannot_carry_a_change_of_its_own(make_gateway: Any) -> None:
    gw = await make_gateway(governance={"four_eyes": True})
    pid = await proposed(gw)
    smuggled = {"reason": "ok", "status": "active", "body": {"tier": "accredited"}}
    status, problem = await call(gw, "omar", "POST", f"/v1/admin/proposals/{pid}/approve",
                                 json=smuggled)  # fmt: skip
    assert status == 400 and "body: unknown field" in problem["detail"]
    assert (await gw.services.store.get_proposal(pid)).status == "pending"


async def test_a_frozen_dataset_stays_unseen_to_the_unlicensed(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    await gw.licence("bob", status="revoked")
    status, _ = await call(gw, "stella", "POST", "/v1/admin/datasets/visits/freeze",
                           json={"reason": "INC-7"})  # fmt: skip
    assert status == 200
    stranger = await gw.query(SQL, sub="mallory")
    assert stranger.status == 404  # unseen answers exactly like unknown, frozen or not
    problem = await stranger.json(content_type=None)
    assert "INC-7" not in problem["detail"] and "frozen" not in problem["detail"]
    assert (await gw.query(SQL, sub="alice")).status == 423


async def test_hostile_names_ids_and_reasons_never_reach_a_500(make_gateway: Any) -> None:
    gw = await make_gateway(governance={"four_eyes": True})
    long_name = "x" * 5000
    cases = [
        ("POST", f"/v1/admin/organisations/{long_name}/suspend", {"reason": "r"}, 404),
        ("POST", f"/v1/admin/datasets/{long_name}/freeze", {"reason": "r"}, 404),
        ("POST", "/v1/admin/datasets/nope/freeze", {"reason": "r"}, 404),
        ("POST", "/v1/admin/datasets/visits/freeze", {"reason": "a\x00b"}, 400),
        ("POST", "/v1/admin/datasets/visits/freeze", {"reason": "r" * 100_000}, 413),
        ("POST", "/v1/admin/datasets/visits/freeze", {"reason": "   "}, 400),
        ("POST", "/v1/admin/datasets/visits/freeze", ["reason"], 400),
        ("POST", "/v1/admin/datasets/visits/unfreeze", {"reason": "not frozen"}, 409),
        ("POST", f"/v1/admin/proposals/{long_name}/reject", {"reason": "r"}, 404),
        ("GET", f"/v1/admin/proposals/{long_name}", None, 404),
        ("GET", "/v1/admin/proposals?status=pending&status=approved", None, 400),
        ("POST", "/v1/admin/organisations/nobody/reactivate", {"reason": "r"}, 409),
    ]
    for method, path, body, expected in cases:
        status, problem = await call(gw, "stella", method, path, json=body)
        assert status == expected, (path[:80], problem)
        assert problem["type"].startswith(PROBLEM)


async def test_a_held_licence_is_not_reactivated_by_a_side_door(make_gateway: Any) -> None:
    gw = await make_gateway()  # four-eyes off: still no single-admin way back
    lic = await gw.licence("alice", organization="Northwind")
    status, _ = await call(gw, "stella", "POST", "/v1/admin/organisations/Northwind/suspend",
                           json={"reason": "BR-1"})  # fmt: skip
    assert status == 200
    for body in ({"status": "active", "reason": "x"},
                 {"status": "active", "organization": "Other", "reason": "x"}):  # fmt: skip
        status, problem = await call(gw, "omar", "PATCH", f"/v1/admin/licences/{lic.id}", json=body)
        assert status == 409, problem
    assert (await gw.services.store.get_licence(lic.id)).status == "suspended"
    assert (await gw.query(SQL, sub="alice")).status == 403

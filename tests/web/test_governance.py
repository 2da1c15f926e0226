"""Four-eyes approval and incident controls over HTTP (``docs/governance.md``): a change that
raises risk becomes a proposal a second admin approves (applied through the same validation
and write path) or rejects; the proposer cannot approve it; proposals expire; a stale target
answers 409 with nothing applied; lowering risk applies at once. A frozen dataset refuses every
query at once (cached repeats too) and only a second admin unfreezes it; suspending an
organisation covers exactly its active licences, and only a second admin reactivates them."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from enclave.audit.log import AuditFilter
from enclave.models import utcnow

PROBLEM = "https://enclave-gateway.org/problems/"
STELLA = ("stella", ["admin"])
OMAR = ("omar", ["admin"])
SQL = "SELECT COUNT(*) AS n FROM visits"


async def call(
    gw: Any, who: tuple[str, list[str]], method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    resp = await gw.client.request(method, path, headers=gw.auth(*who), **kw)
    return resp.status, await resp.json(content_type=None)


async def records(gw: Any, action: str, outcome: str = "ok") -> list[Any]:
    flt = AuditFilter(action=action, outcome=outcome)
    found: list[Any] = await gw.services.store.audit_events(flt)
    return found


async def tier(gw: Any, name: str = "standard") -> dict[str, Any]:
    status, body = await call(gw, STELLA, "GET", f"/v1/admin/tiers/{name}")
    assert status == 200
    return {k: v for k, v in body.items() if k not in ("versions", "created_at", "changed_by")}


async def four_eyes(make_gateway: Any, **over: Any) -> Any:
    return await make_gateway(governance={"four_eyes": True, **over})


async def test_raising_a_budget_is_proposed_and_applied_only_when_a_second_admin_approves(
    make_gateway: Any,
) -> None:
    gw = await four_eyes(make_gateway)
    before = await tier(gw)
    body = {**before, "budget": {**before["budget"], "epsilon": 8.0}, "reason": "DSA-7 renewal"}
    status, proposal = await call(gw, STELLA, "PUT", "/v1/admin/tiers/standard", json=body)
    assert status == 202, proposal
    assert proposal["status"] == "pending" and proposal["kind"] == "tier.update"
    assert proposal["risks"] == ["budget.epsilon raised from 5.0 to 8.0"]
    assert proposal["proposer"] == "stella" and proposal["reason"] == "DSA-7 renewal"
    assert (await tier(gw))["budget"]["epsilon"] == 5.0  # nothing applied yet

    path = f"/v1/admin/proposals/{proposal['id']}"
    status, got = await call(gw, STELLA, "GET", path)
    assert status == 200 and got["id"] == proposal["id"]
    status, listed = await call(gw, OMAR, "GET", "/v1/admin/proposals?status=pending")
    assert [p["id"] for p in listed["proposals"]] == [proposal["id"]]

    status, refused = await call(gw, STELLA, "POST", path + "/approve", json={"reason": "mine"})
    assert status == 403 and refused["type"] == PROBLEM + "self-approval"
    assert (await tier(gw))["budget"]["epsilon"] == 5.0
    (denied,) = await records(gw, "proposal.approve", "denied")
    assert denied.actor == "stella" and denied.detail["proposal_id"] == proposal["id"]

    status, decided = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "checked"})
    assert status == 200, decided
    assert (decided["status"], decided["decided_by"], decided["decided_reason"]) == (
        "approved", "omar", "checked",
    )  # fmt: skip
    after = await tier(gw)
    assert after["budget"]["epsilon"] == 8.0 and after["version"] == before["version"] + 1

    (created,) = await records(gw, "proposal.create")
    (approved,) = await records(gw, "proposal.approve")
    (applied,) = [r for r in await records(gw, "tier.update") if r.seq == decided["applied_seq"]]
    assert created.actor == "stella" and created.reason == "DSA-7 renewal"
    assert approved.actor == "omar" and approved.reason == "checked"
    assert approved.detail["proposer"] == "stella"
    assert approved.detail["proposal_reason"] == "DSA-7 renewal"
    assert applied.actor == "omar" and applied.detail["proposed_by"] == "stella"
    assert applied.detail["budget_change"]["after"]["budget"]["epsilon"] == 8.0

    status, again = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "twice"})
    assert status == 409 and again["type"] == PROBLEM + "conflict"


async def test_a_rejected_proposal_applies_nothing_and_is_audited(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway)
    before = await tier(gw)
    body = {**before, "min_noisy_count": 2, "reason": "smaller cells"}
    status, proposal = await call(gw, STELLA, "PUT", "/v1/admin/tiers/standard", json=body)
    assert status == 202 and proposal["risks"] == ["min_noisy_count lowered from 10 to 2"]
    path = f"/v1/admin/proposals/{proposal['id']}"
    status, decided = await call(gw, OMAR, "POST", path + "/reject", json={"reason": "no"})
    assert status == 200 and decided["status"] == "rejected" and decided["applied_seq"] is None
    assert (await tier(gw))["min_noisy_count"] == 10
    (rejected,) = await records(gw, "proposal.reject")
    assert (rejected.actor, rejected.reason, rejected.detail["proposer"]) == (
        "omar",
        "no",
        "stella",
    )
    status, late = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "oops"})
    assert status == 409
    status, listed = await call(gw, OMAR, "GET", "/v1/admin/proposals?status=rejected")
    assert [p["id"] for p in listed["proposals"]] == [proposal["id"]]


async def test_lowering_risk_applies_directly_and_switch_off_applies_everything(
    make_gateway: Any,
) -> None:
    gw = await four_eyes(make_gateway)
    before = await tier(gw)
    lower = {**before, "max_epsilon_per_query": 0.5, "reason": "tighter"}
    status, body = await call(gw, STELLA, "PUT", "/v1/admin/tiers/standard", json=lower)
    assert status == 200 and body["max_epsilon_per_query"] == 0.5
    assert await records(gw, "proposal.create") == []

    off = await make_gateway()  # governance.four_eyes defaults to false
    before = await tier(off)
    higher = {**before, "budget": {**before["budget"], "epsilon": 9.0}, "reason": "renewal"}
    status, body = await call(off, STELLA, "PUT", "/v1/admin/tiers/standard", json=higher)
    assert status == 200 and body["budget"]["epsilon"] == 9.0


async def test_a_proposal_needs_a_reason(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway)
    before = await tier(gw)
    body = {**before, "rate_limit_per_minute": 600}  # no reason: a proposal needs one
    status, problem = await call(gw, STELLA, "PUT", "/v1/admin/tiers/standard", json=body)
    assert status == 400 and "rate_limit_per_minute raised" in problem["detail"]


async def test_an_expired_proposal_cannot_be_approved_and_its_expiry_is_audited(
    make_gateway: Any,
) -> None:
    gw = await four_eyes(make_gateway, proposal_ttl_hours=1)
    lic = await gw.licence("alice", status="suspended")
    status, proposal = await call(
        gw, STELLA, "PATCH", f"/v1/admin/licences/{lic.id}",
        json={"status": "active", "reason": "appeal upheld"},
    )  # fmt: skip
    assert status == 202 and proposal["risks"] == ["licence reactivated"]
    gw.services.clock = lambda: utcnow() + dt.timedelta(hours=1, seconds=1)
    path = f"/v1/admin/proposals/{proposal['id']}"
    status, problem = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "ok"})
    assert status == 409 and problem["type"] == PROBLEM + "proposal-expired"
    assert (await gw.services.store.get_licence(lic.id)).status == "suspended"
    status, got = await call(gw, OMAR, "GET", path)
    assert got["status"] == "expired"
    (expired,) = await records(gw, "proposal.expire")
    assert expired.actor == "system" and expired.detail["proposer"] == "stella"


async def test_listing_marks_due_proposals_expired(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway, proposal_ttl_hours=2)
    lic = await gw.licence("alice")
    grant = {"dataset": "visits", "epsilon": 1, "reason": "extension"}
    status, proposal = await call(gw, STELLA, "POST", f"/v1/admin/licences/{lic.id}/grants",
                                  json=grant)  # fmt: skip
    assert status == 202 and proposal["kind"] == "licence.grant"
    status, listed = await call(gw, OMAR, "GET", "/v1/admin/proposals?status=pending")
    assert len(listed["proposals"]) == 1
    gw.services.clock = lambda: utcnow() + dt.timedelta(hours=3)
    status, listed = await call(gw, OMAR, "GET", "/v1/admin/proposals?status=pending")
    assert listed["proposals"] == []
    assert len(await records(gw, "proposal.expire")) == 1
    assert await gw.services.store.grants(lic.id) == []


async def test_approval_fails_with_409_when_the_target_changed_since(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway)
    before = await tier(gw)
    raise_ = {**before, "budget": {**before["budget"], "epsilon": 8.0}, "reason": "renewal"}
    status, proposal = await call(gw, STELLA, "PUT", "/v1/admin/tiers/standard", json=raise_)
    assert status == 202
    lower = {**before, "max_epsilon_per_query": 0.5, "reason": "tighter"}
    assert (await call(gw, OMAR, "PUT", "/v1/admin/tiers/standard", json=lower))[0] == 200
    path = f"/v1/admin/proposals/{proposal['id']}"
    status, problem = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "ok"})
    assert status == 409 and problem["type"] == PROBLEM + "proposal-stale"
    now = await tier(gw)
    assert now["budget"]["epsilon"] == 5.0 and now["max_epsilon_per_query"] == 0.5
    assert (await call(gw, OMAR, "GET", path))[1]["status"] == "pending"
    assert await records(gw, "proposal.approve") == []


async def test_a_licence_change_is_stale_when_the_licence_changed(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway)
    lic = await gw.licence("alice", datasets=("visits",))
    path = f"/v1/admin/licences/{lic.id}"
    status, proposal = await call(gw, STELLA, "PATCH", path,
                                  json={"jurisdiction": "US", "reason": "moved"})  # fmt: skip
    assert status == 202 and proposal["risks"] == ["jurisdiction changed from GB to US"]
    assert (await call(gw, OMAR, "PATCH", path, json={"purpose": "renamed study"}))[0] == 200
    status, problem = await call(gw, OMAR, "POST", f"/v1/admin/proposals/{proposal['id']}/approve",
                                 json={"reason": "ok"})  # fmt: skip
    assert status == 409 and problem["type"] == PROBLEM + "proposal-stale"
    assert (await gw.services.store.get_licence(lic.id)).jurisdiction == "GB"


async def test_a_grant_and_a_new_dataset_are_proposed_and_applied_on_approval(
    make_gateway: Any,
) -> None:
    gw = await four_eyes(make_gateway)
    lic = await gw.licence("alice")
    grant = {"dataset": "visits", "epsilon": 0.5, "reason": "chapter 3"}
    status, proposal = await call(gw, STELLA, "POST", f"/v1/admin/licences/{lic.id}/grants",
                                  json=grant)  # fmt: skip
    assert status == 202
    status, decided = await call(gw, OMAR, "POST", f"/v1/admin/proposals/{proposal['id']}/approve",
                                 json={"reason": "agreed"})  # fmt: skip
    assert status == 200, decided
    (made,) = await gw.services.store.grants(lic.id)
    assert made.reason == "chapter 3" and made.audit_seq == decided["applied_seq"]

    status, visits = await call(gw, STELLA, "GET", "/v1/admin/datasets/visits")
    copy = {k: v for k, v in visits.items() if k not in ("version", "versions", "created_at",
                                                         "changed_by", "name")}  # fmt: skip
    status, proposal = await call(gw, STELLA, "PUT", "/v1/admin/datasets/visits_copy",
                                  json={**copy, "reason": "a second view"})  # fmt: skip
    assert status == 202 and proposal["risks"] == ["new dataset 'visits_copy'"]
    assert (await call(gw, STELLA, "GET", "/v1/admin/datasets/visits_copy"))[0] == 404
    status, decided = await call(gw, OMAR, "POST", f"/v1/admin/proposals/{proposal['id']}/approve",
                                 json={"reason": "fine"})  # fmt: skip
    assert status == 200, decided
    status, created = await call(gw, STELLA, "GET", "/v1/admin/datasets/visits_copy")
    assert status == 200 and created["version"] == 1


async def test_freeze_refuses_queries_at_once_including_cached_repeats(make_gateway: Any) -> None:
    gw = await make_gateway()  # incident controls do not depend on the switch
    await gw.licence("alice")
    first = await gw.query(SQL, epsilon=0.5)
    assert first.status == 200
    assert (await gw.query(SQL, epsilon=0.5)).status == 200  # a cached repeat, free

    incident = {"reason": "incident INC-42: possible re-identification"}
    status, frozen = await call(gw, STELLA, "POST", "/v1/admin/datasets/visits/freeze",
                                json=incident)  # fmt: skip
    assert status == 200 and frozen["frozen"].startswith("incident INC-42")
    for path in ("/v1/queries", "/v1/queries/estimate"):
        refused = await gw.query(SQL, epsilon=0.5, path=path)
        assert refused.status == 423, path
        problem = await refused.json(content_type=None)
        assert problem["type"] == PROBLEM + "dataset-frozen"
        assert "incident INC-42: possible re-identification" in problem["detail"]
    listed = await (await gw.client.get("/v1/datasets", headers=gw.auth("alice"))).json()
    assert listed["datasets"][0]["frozen"].startswith("incident INC-42")
    spent = await gw.services.store.spent(next(iter(gw.licences)), "visits", None)
    assert spent.epsilon_float == 0.5  # the refusals cost nothing

    status, history = await call(gw, STELLA, "GET", "/v1/admin/datasets/visits")
    assert history["versions"] == [1, 2] and history["frozen"].startswith("incident")
    (record,) = await records(gw, "dataset.freeze")
    assert record.actor == "stella" and record.reason.startswith("incident INC-42")

    put = {k: v for k, v in history.items() if k not in ("versions", "created_at", "changed_by")}
    put.pop("frozen")
    status, problem = await call(gw, STELLA, "PUT", "/v1/admin/datasets/visits",
                                 json={**put, "description": "edited while frozen"})  # fmt: skip
    assert status == 200  # a PUT keeps the freeze (only the freeze routes change it)
    assert problem["frozen"].startswith("incident")
    status, problem = await call(gw, STELLA, "PUT", "/v1/admin/datasets/visits",
                                 json={**put, "frozen": "other", "version": 3})  # fmt: skip
    assert status == 400 and "frozen" in problem["detail"]
    assert (await gw.query(SQL, epsilon=0.5)).status == 423


async def test_unfreezing_always_needs_a_second_admin(make_gateway: Any) -> None:
    gw = await make_gateway()  # four_eyes off: unfreezing still needs a second admin
    await gw.licence("alice")
    reason = {"reason": "incident INC-43"}
    assert (await call(gw, STELLA, "POST", "/v1/admin/datasets/visits/freeze", json=reason))[
        0
    ] == 200
    status, again = await call(gw, STELLA, "POST", "/v1/admin/datasets/visits/freeze", json=reason)
    assert status == 409
    status, proposal = await call(gw, STELLA, "POST", "/v1/admin/datasets/visits/unfreeze",
                                  json={"reason": "contained"})  # fmt: skip
    assert status == 202 and proposal["kind"] == "dataset.unfreeze"
    assert proposal["risks"] == ["unfrozen"]
    assert (await gw.query(SQL)).status == 423
    path = f"/v1/admin/proposals/{proposal['id']}"
    status, _ = await call(gw, STELLA, "POST", path + "/approve", json={"reason": "mine"})
    assert status == 403
    status, decided = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "verified"})
    assert status == 200, decided
    assert (await gw.query(SQL)).status == 200
    (record,) = await records(gw, "dataset.unfreeze")
    assert record.actor == "omar" and record.detail["proposed_by"] == "stella"


async def test_suspending_an_organisation_covers_exactly_its_active_licences(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    a = await gw.licence("alice", organization="Northwind Institute")
    b = await gw.licence("bob", organization="Northwind Institute")
    gone = await gw.licence("carol", organization="Northwind Institute", status="suspended")
    other = await gw.licence("dave", organization="Northwind Institute Ltd")
    org = "/v1/admin/organisations/Northwind Institute"
    status, done = await call(gw, STELLA, "POST", org + "/suspend",
                              json={"reason": "breach report BR-9"})  # fmt: skip
    assert status == 200, done
    assert sorted(done["suspended"]) == sorted([a.id, b.id])
    store = gw.services.store
    assert [(await store.get_licence(x.id)).status for x in (a, b, gone, other)] == [
        "suspended", "suspended", "suspended", "active",
    ]  # fmt: skip
    assert (await gw.query(SQL, sub="alice")).status == 403
    assert (await gw.query(SQL, sub="dave")).status == 200
    (record,) = await records(gw, "organisation.suspend")
    assert record.reason == "breach report BR-9" and sorted(record.detail["licences"]) == sorted(
        [a.id, b.id]
    )
    status, shown = await call(gw, STELLA, "GET", f"/v1/admin/licences/{a.id}")
    assert shown["status_reason"]["reason"] == "breach report BR-9"

    # one held licence cannot be reactivated alone, whatever the switch says
    status, problem = await call(gw, STELLA, "PATCH", f"/v1/admin/licences/{a.id}",
                                 json={"status": "active", "reason": "alone"})  # fmt: skip
    assert status == 409 and "organisation" in problem["detail"]
    # the individually suspended licence is not held: the switch is off, so it applies
    status, _ = await call(gw, STELLA, "PATCH", f"/v1/admin/licences/{gone.id}",
                           json={"status": "active", "reason": "unrelated"})  # fmt: skip
    assert status == 200


async def test_reactivating_an_organisation_needs_a_second_admin(make_gateway: Any) -> None:
    gw = await make_gateway()
    a = await gw.licence("alice", organization="Northwind")
    org = "/v1/admin/organisations/Northwind"
    assert (await call(gw, STELLA, "POST", org + "/suspend", json={"reason": "BR-9"}))[0] == 200
    status, proposal = await call(gw, STELLA, "POST", org + "/reactivate",
                                  json={"reason": "audit passed"})  # fmt: skip
    assert status == 202 and proposal["kind"] == "organisation.reactivate"
    path = f"/v1/admin/proposals/{proposal['id']}"
    assert (await call(gw, STELLA, "POST", path + "/approve", json={"reason": "x"}))[0] == 403
    assert (await gw.services.store.get_licence(a.id)).status == "suspended"
    status, decided = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "seen"})
    assert status == 200, decided
    assert (await gw.services.store.get_licence(a.id)).status == "active"
    assert (await gw.query(SQL, sub="alice")).status == 200
    (record,) = await records(gw, "organisation.reactivate")
    assert record.actor == "omar" and record.detail["licences"] == [a.id]
    status, _ = await call(gw, STELLA, "POST", org + "/reactivate", json={"reason": "again"})
    assert status == 409  # nothing is held any more


async def test_decisions_validate_their_input(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway)
    status, problem = await call(gw, OMAR, "POST", "/v1/admin/proposals/prop_nope/approve",
                                 json={"reason": "x"})  # fmt: skip
    assert status == 404
    status, problem = await call(gw, OMAR, "POST", "/v1/admin/proposals/prop_nope/approve",
                                 json={"why": 1})  # fmt: skip
    assert status == 400 and "reason: required" in problem["detail"]
    status, problem = await call(gw, OMAR, "GET", "/v1/admin/proposals?status=maybe")
    assert status == 400


async def test_no_new_licence_for_a_suspended_organisation(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice", organization="Northwind")
    org = "/v1/admin/organisations/Northwind"
    assert (await call(gw, STELLA, "POST", org + "/suspend", json={"reason": "BR-9"}))[0] == 200
    body = {
        "subject": "erin", "organization": "Northwind", "tier": "standard",
        "datasets": ["visits"], "purpose": "p", "jurisdiction": "GB",
        "valid_until": "2099-01-01",
    }  # fmt: skip
    status, problem = await call(gw, STELLA, "POST", "/v1/admin/licences", json=body)
    assert status == 409 and "suspended" in problem["detail"]
    csv = (
        "subject,organization,tier,datasets,purpose,jurisdiction,valid_until\n"
        "erin,Northwind,standard,visits,p,GB,2099-01-01\n"
    )
    resp = await gw.client.post(
        "/v1/admin/licences/import?reason=batch", data=csv,
        headers={**gw.auth(*STELLA), "Content-Type": "text/csv"},
    )  # fmt: skip
    assert resp.status == 400 and "row 2: organization" in (await resp.json())["detail"]
    other = {**body, "organization": "Southwind"}
    assert (await call(gw, STELLA, "POST", "/v1/admin/licences", json=other))[0] == 201


async def test_a_freeze_reaches_every_replica_at_the_next_request(make_gateway: Any) -> None:
    one = await make_gateway()
    two = await make_gateway()  # a second app on the same store, as a second replica
    await one.licence("alice")
    assert (await two.query(SQL)).status == 200
    status, _ = await call(one, STELLA, "POST", "/v1/admin/datasets/visits/freeze",
                           json={"reason": "INC-50"})  # fmt: skip
    assert status == 200
    refused = await two.query(SQL)
    assert refused.status == 423 and "INC-50" in (await refused.json())["detail"]
    status, proposal = await call(one, STELLA, "POST", "/v1/admin/datasets/visits/unfreeze",
                                  json={"reason": "contained"})  # fmt: skip
    assert status == 202
    status, _ = await call(two, OMAR, "POST", f"/v1/admin/proposals/{proposal['id']}/approve",
                           json={"reason": "verified"})  # fmt: skip
    assert status == 200
    assert (await one.query(SQL)).status == 200


async def test_two_admins_approving_at_once_over_http_apply_once(make_gateway: Any) -> None:
    gw = await four_eyes(make_gateway)
    lic = await gw.licence("alice")
    grant = {"dataset": "visits", "epsilon": 0.5, "reason": "chapter 3"}
    status, proposal = await call(gw, STELLA, "POST", f"/v1/admin/licences/{lic.id}/grants",
                                  json=grant)  # fmt: skip
    path = f"/v1/admin/proposals/{proposal['id']}/approve"
    answers = await asyncio.gather(
        *(call(gw, (f"admin{i}", ["admin"]), "POST", path, json={"reason": "ok"}) for i in range(6))
    )
    assert sorted(status for status, _ in answers) == [200] + [409] * 5
    assert len(await gw.services.store.grants(lic.id)) == 1
    assert len(await records(gw, "proposal.approve")) == 1

"""Four-eyes against a conflict of interest, over HTTP on both stores (``docs/governance.md``):
the second pair of eyes is not the beneficiary. An admin who is also a researcher cannot
approve a grant or a change to their own licence, nor the reactivation of an organisation in
which they hold a licence (held or not), nor a change to a tier or dataset a licence of theirs
uses; the refusal is 403 ``self-approval``, audited as
denied, and nothing is applied. They may still reject it, and another admin may approve it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import MakeGateway
from tests.store.conftest import temporary_database
from tests.web.test_governance import PROBLEM, STELLA, call, records

OMAR = ("omar", ["admin", "researcher"])  # a steward who also holds a licence
ADA = ("ada", ["admin"])
OWN_LICENCE = "an admin cannot approve a change to their own licence"
OWN_ORGANISATION = (
    "an admin cannot approve reactivating an organisation in which they hold a licence"
)
OWN_TIER = "an admin cannot approve a change to a tier on which they hold a licence"
OWN_DATASET = "an admin cannot approve a change to a dataset their licence covers"
#: kind -> (the licence's status, the method, the path after the licence, the body)
OWN_CHANGES = {
    "licence.grant": ("active", "POST", "/grants",
                      {"dataset": "visits", "epsilon": 1, "reason": "chapter 4"}),
    "licence.update": ("suspended", "PATCH", "", {"status": "active", "reason": "appeal"}),
}  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def governed(request: pytest.FixtureRequest, make_gateway: MakeGateway) -> AsyncIterator[Any]:
    """Four-eyes on, on each store: the decision's check runs in the store's transaction."""
    if request.param == "sqlite":
        yield await make_gateway(governance={"four_eyes": True})
        return
    async with temporary_database() as url:
        gw = await make_gateway(store_url=url, governance={"four_eyes": True})
        yield gw
        await gw.client.close()  # before the database is dropped


async def refused(gw: Any, path: str, detail: str) -> None:
    """Omar's approval of ``path`` is refused as a conflict of interest, and audited."""
    status, problem = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "fine"})
    assert status == 403, problem
    assert problem["type"] == PROBLEM + "self-approval" and problem["detail"] == detail
    (denied,) = await records(gw, "proposal.approve", "denied")
    assert denied.actor == "omar" and list(denied.roles) == OMAR[1]
    assert denied.detail["proposal_id"] == path.rsplit("/", 1)[1]
    assert await records(gw, "proposal.approve") == []


@pytest.mark.parametrize("kind", sorted(OWN_CHANGES))
async def test_an_admin_cannot_approve_a_change_to_their_own_licence(
    governed: Any, kind: str
) -> None:
    gw = governed
    status_now, method, suffix, body = OWN_CHANGES[kind]
    lic = await gw.licence("omar", status=status_now)
    store = gw.services.store

    async def propose() -> str:
        status, proposal = await call(gw, STELLA, method, f"/v1/admin/licences/{lic.id}{suffix}",
                                      json=body)  # fmt: skip
        assert status == 202 and proposal["kind"] == kind, proposal
        return f"/v1/admin/proposals/{proposal['id']}"

    path = await propose()
    before = await store.get_licence(lic.id)
    await refused(gw, path, OWN_LICENCE)
    assert await store.get_licence(lic.id) == before and await store.grants(lic.id) == []
    assert (await store.get_proposal(path.rsplit("/", 1)[1])).status == "pending"

    status, withdrawn = await call(gw, OMAR, "POST", path + "/reject", json={"reason": "mine"})
    assert status == 200 and withdrawn["status"] == "rejected" and withdrawn["decided_by"] == "omar"

    path = await propose()
    status, decided = await call(gw, ADA, "POST", path + "/approve", json={"reason": "checked"})
    assert status == 200, decided
    assert decided["status"] == "approved" and decided["applied_seq"] is not None
    after = await store.get_licence(lic.id)
    assert after.status == "active" and len(await store.grants(lic.id)) == (kind == "licence.grant")


async def test_an_admin_cannot_reactivate_an_organisation_they_hold_a_licence_in(
    governed: Any,
) -> None:
    gw = governed
    alice = await gw.licence("alice", organization="Northwind")
    await gw.licence("omar", organization="Northwind", status="revoked")  # not held: still his
    org = "/v1/admin/organisations/Northwind"
    assert (await call(gw, STELLA, "POST", org + "/suspend", json={"reason": "BR-9"}))[0] == 200
    status, proposal = await call(gw, STELLA, "POST", org + "/reactivate",
                                  json={"reason": "audit passed"})  # fmt: skip
    assert status == 202, proposal
    path = f"/v1/admin/proposals/{proposal['id']}"

    await refused(gw, path, OWN_ORGANISATION)
    store = gw.services.store
    assert (await store.get_licence(alice.id)).status == "suspended"
    assert await store.held_licences("Northwind") == [alice.id]

    status, decided = await call(gw, ADA, "POST", path + "/approve", json={"reason": "seen"})
    assert status == 200, decided
    assert (await store.get_licence(alice.id)).status == "active"
    assert await store.held_licences("Northwind") == []


async def test_an_admin_cannot_approve_a_change_to_their_own_tier_or_dataset(
    governed: Any,
) -> None:
    """A tier's raised budget or an unfrozen dataset benefits every licence on them: their
    subjects are not the second pair of eyes (a revoked licence no longer benefits)."""
    gw = governed
    own = await gw.licence("omar", organization="Northwind")  # he queries on standard, visits

    async def tier_proposal(epsilon: float) -> str:
        tier = (await call(gw, STELLA, "GET", "/v1/admin/tiers/standard"))[1]
        raised = {**tier, "budget": {**tier["budget"], "epsilon": epsilon}, "reason": "renewal"}
        status, proposal = await call(gw, STELLA, "PUT", "/v1/admin/tiers/standard", json=raised)
        assert status == 202 and proposal["kind"] == "tier.update", proposal
        return f"/v1/admin/proposals/{proposal['id']}"

    path = await tier_proposal(8.0)
    await refused(gw, path, OWN_TIER)
    status, decided = await call(gw, ADA, "POST", path + "/approve", json={"reason": "seen"})
    assert status == 200, decided

    freeze = {"reason": "incident 12"}
    assert (await call(gw, STELLA, "POST", "/v1/admin/datasets/visits/freeze", json=freeze))[
        0
    ] == 200
    status, proposal = await call(gw, STELLA, "POST", "/v1/admin/datasets/visits/unfreeze",
                                  json={"reason": "contained"})  # fmt: skip
    assert status == 202 and proposal["kind"] == "dataset.unfreeze", proposal
    path = f"/v1/admin/proposals/{proposal['id']}"
    status, problem = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "fine"})
    assert status == 403 and problem["detail"] == OWN_DATASET, problem
    status, decided = await call(gw, ADA, "POST", path + "/approve", json={"reason": "seen"})
    assert status == 200, decided

    revoke = {"status": "revoked", "reason": "left the project"}
    assert (await call(gw, STELLA, "PATCH", f"/v1/admin/licences/{own.id}", json=revoke))[0] == 200
    path = await tier_proposal(9.0)  # his licence is revoked: he no longer benefits
    status, decided = await call(gw, OMAR, "POST", path + "/approve", json={"reason": "ok"})
    assert status == 200, decided

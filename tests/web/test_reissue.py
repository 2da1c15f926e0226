"""A licence reissue meets four-eyes, over HTTP on both stores (``docs/governance.md``): one
admin cannot revoke a researcher's licence and issue a new one (a higher tier, more datasets,
a fresh licence-layer budget) alone. A subject's first licence on a dataset is issued at once;
a licence for a subject who holds or held one on its datasets (any status) is a
``licence.create`` proposal, applied only when a second admin, not its subject, approves it,
and only if the subject's licences are unchanged since. The CSV import refuses a reissue."""

from __future__ import annotations

from typing import Any

from tests.conftest import MakeGateway
from tests.web.test_conflict_of_interest import ADA, governed, refused
from tests.web.test_governance import PROBLEM, STELLA, call, records

__all__ = ["governed"]  # the fixture, parametrized over both stores
LICENCES = "/v1/admin/licences"
SQL = "SELECT COUNT(*) AS n FROM visits"
CSV_HEADER = "subject,organization,tier,datasets,purpose,jurisdiction,valid_until\n"


def request(subject: str, **over: Any) -> dict[str, Any]:
    return {
        "subject": subject, "organization": "Test University", "tier": "standard",
        "datasets": ["visits"], "purpose": "study", "jurisdiction": "GB",
        "valid_until": "2099-01-01", **over,
    }  # fmt: skip


async def propose(gw: Any, body: dict[str, Any]) -> dict[str, Any]:
    status, proposal = await call(gw, STELLA, "POST", LICENCES, json=body)
    assert status == 202, proposal
    assert proposal["kind"] == "licence.create" and proposal["status"] == "pending"
    return dict(proposal)


async def test_a_reissue_after_revoking_waits_for_a_second_admin(governed: Any) -> None:
    gw = governed
    store = gw.services.store
    # a first licence (even with another subject's licence on the dataset) is issued at once
    alice = await gw.licence("alice")
    status, dora = await call(gw, STELLA, "POST", LICENCES, json=request("dora"))
    assert status == 201 and dora["status"] == "active", dora
    assert await records(gw, "proposal.create") == []

    # revoking lowers risk (direct); issuing alice a new licence on a higher tier does not
    path = f"{LICENCES}/{alice.id}"
    revoke = {"status": "revoked", "reason": "end of study"}
    assert (await call(gw, STELLA, "PATCH", path, json=revoke))[0] == 200
    wider = request("alice", tier="accredited")
    status, problem = await call(gw, STELLA, "POST", LICENCES, json=wider)
    assert status == 400 and "reason: required" in problem["detail"], problem
    assert "licence reissued" in problem["detail"]
    proposal = await propose(gw, {**wider, "reason": "new study DSA-9"})
    risk = f"licence reissued: 'alice' has held {alice.id} on visits (revoked)"
    assert proposal["risks"] == [risk] and proposal["reason"] == "new study DSA-9"
    new_id = proposal["target"]
    assert proposal["body"]["id"] == new_id and proposal["body"]["tier"] == "accredited"
    assert await store.get_licence(new_id) is None
    assert [lic.id for lic in await store.list_licences("alice")] == [alice.id]
    assert (await gw.query(SQL, sub="alice")).status == 403

    decision = f"/v1/admin/proposals/{proposal['id']}/approve"
    status, own = await call(gw, STELLA, "POST", decision, json={"reason": "mine"})
    assert status == 403 and own["type"] == PROBLEM + "self-approval"
    assert await store.get_licence(new_id) is None

    status, decided = await call(gw, ADA, "POST", decision, json={"reason": "DSA-9 checked"})
    assert status == 200, decided
    assert decided["status"] == "approved" and decided["decided_by"] == "ada"
    issued = await store.get_licence(new_id)
    assert (issued.subject, issued.tier, issued.status) == ("alice", "accredited", "active")
    assert (await gw.query(SQL, sub="alice")).status == 200

    (created,) = await records(gw, "proposal.create")
    assert created.actor == "stella" and created.detail["kind"] == "licence.create"
    assert created.detail["risks"] == [risk]
    (approved,) = await records(gw, "proposal.approve")
    assert approved.actor == "ada" and approved.detail["applied_seq"] == decided["applied_seq"]
    assert approved.detail["proposer"] == "stella"
    (applied,) = [r for r in await records(gw, "licence.create") if r.seq == decided["applied_seq"]]
    assert (applied.actor, applied.reason, applied.licence_id) == ("ada", "new study DSA-9", new_id)
    assert applied.detail["proposed_by"] == "stella"
    assert applied.detail["after"]["tier"] == "accredited"

    status, again = await call(gw, ADA, "POST", decision, json={"reason": "twice"})
    assert status == 409 and again["type"] == PROBLEM + "conflict"


async def test_the_subject_cannot_approve_their_own_reissue(governed: Any) -> None:
    gw = governed
    old = await gw.licence("omar", status="revoked")  # omar: an admin who is also a researcher
    proposal = await propose(gw, request("omar", reason="renewal"))
    path = f"/v1/admin/proposals/{proposal['id']}"
    await refused(gw, path, "an admin cannot approve a licence issued to them")
    store = gw.services.store
    assert [lic.id for lic in await store.list_licences("omar")] == [old.id]
    assert (await store.get_proposal(proposal["id"])).status == "pending"

    status, decided = await call(gw, ADA, "POST", path + "/approve", json={"reason": "seen"})
    assert status == 200, decided
    assert (await store.get_licence(proposal["target"])).subject == "omar"


async def test_a_reissue_is_stale_when_the_subjects_licences_changed(governed: Any) -> None:
    gw = governed
    old = await gw.licence("alice", status="suspended")
    proposal = await propose(gw, request("alice", reason="a second licence"))
    status, _ = await call(gw, ADA, "PATCH", f"{LICENCES}/{old.id}", json={"purpose": "renamed"})
    assert status == 200  # a change that raises nothing applies at once
    status, problem = await call(gw, ADA, "POST", f"/v1/admin/proposals/{proposal['id']}/approve",
                                 json={"reason": "ok"})  # fmt: skip
    assert status == 409 and problem["type"] == PROBLEM + "proposal-stale", problem
    store = gw.services.store
    assert await store.get_licence(proposal["target"]) is None
    assert (await store.get_proposal(proposal["id"])).status == "pending"
    assert await records(gw, "proposal.approve") == []


async def _import(gw: Any, csv: str) -> tuple[int, Any]:
    resp = await gw.client.post(
        f"{LICENCES}/import?reason=intake", data=csv,
        headers={**gw.auth(*STELLA), "Content-Type": "text/csv"},
    )  # fmt: skip
    return resp.status, await resp.json(content_type=None)


async def test_the_csv_import_refuses_a_reissue_under_four_eyes(
    governed: Any, make_gateway: MakeGateway
) -> None:
    gw = governed
    old = await gw.licence("alice", status="revoked")
    csv = (
        CSV_HEADER
        + "dora,Test University,standard,visits,study,GB,2099-01-01\n"
        + "alice,Test University,accredited,visits,study,GB,2099-01-01\n"
    )
    status, problem = await _import(gw, csv)
    assert status == 400, problem
    assert problem["problems"] == [
        f"row 3: licence reissued: 'alice' has held {old.id} on visits (revoked): with "
        "governance.four_eyes on, propose it through POST /v1/admin/licences for a second admin"
    ]
    store = gw.services.store
    assert await store.list_licences("dora") == []
    assert [lic.id for lic in await store.list_licences("alice")] == [old.id]
    assert await records(gw, "proposal.create") == []

    off = await make_gateway()  # governance.four_eyes off: a reissue is issued as before
    await off.licence("erin", status="revoked")
    status, done = await _import(off, csv.replace("alice", "erin"))
    assert status == 201 and done["count"] == 2, done

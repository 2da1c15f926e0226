"""Four-eyes proposals and organisation holds on both stores (``store/proposals.py``): a
proposal is stored with its audit record; a decision re-reads it in one transaction, refuses
the proposer or a beneficiary as approver, applies the change through the same store
operation a direct change uses, guarded by the state it was proposed on, and marks it decided,
so two admins approving at once (also from two store instances, as two replicas) apply it
exactly once. Expiry is committed and audited even though the approval fails."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.audit.log import AuditFilter
from enclave.errors import Conflict, NotFound, ProposalExpired, ProposalStale, SelfApproval
from enclave.governance.proposal import (
    Decision,
    GrantWrite,
    LicenceWrite,
    NewLicence,
    PolicyWrite,
    Proposal,
    Reactivation,
    held_state,
    licence_state,
)
from enclave.ledger.grid import Amount
from enclave.licence_grants import Grant
from enclave.models import iso
from tests.store.conftest import Backend, draft, licence

LATER = dt.timedelta(hours=72)


def proposal(
    pid: str = "prop_1", kind: str = "tier.update", base: str = "1", **over: Any
) -> Proposal:
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "id": pid, "kind": kind, "target": "standard", "body": {"budget": {"epsilon": 8}},
        "base": base, "risks": ("budget.epsilon raised from 5 to 8",), "reason": "renewal",
        "proposer": "stella", "expires_at": iso(now + LATER),
    }  # fmt: skip
    values.update(over)
    return Proposal(**values)


def decision(
    pid: str = "prop_1", approve: bool = True, actor: str = "omar", **over: Any
) -> Decision:
    values: dict[str, Any] = {
        "proposal_id": pid, "approve": approve, "actor": actor, "reason": "checked",
        "now": dt.datetime.now(dt.UTC),
        "draft": draft("proposal.approve" if approve else "proposal.reject", actor=actor),
        "expire_draft": draft("proposal.expire", actor="system"),
    }  # fmt: skip
    values.update(over)
    return Decision(**values)


def tier_write(expected: int = 1, actor: str = "omar") -> PolicyWrite:
    body = {"name": "standard", "budget": {"epsilon": 8}}
    return PolicyWrite("tier", "standard", body, actor, draft("tier.update", actor=actor), expected)


async def seeded(store: Any) -> Proposal:
    await store.put_policy("tier", "standard", {"name": "standard"}, "seed", None)
    return await store.add_proposal(proposal(), draft("proposal.create", actor="stella"))


async def test_a_proposal_is_stored_with_its_record_and_listed(store: Any) -> None:
    stored = await seeded(store)
    assert stored.status == "pending" and stored.audit_seq == 1 and stored.created_at
    assert await store.get_proposal("prop_1") == stored
    assert await store.list_proposals() == [stored]
    assert await store.list_proposals("pending") == [stored]
    assert await store.list_proposals("approved") == []
    (record,) = [r async for r in store.audit_iter()]
    assert (record.action, record.actor, record.reason) == ("proposal.create", "stella", "renewal")
    assert record.detail["proposal_id"] == "prop_1" and record.detail["risks"] == list(stored.risks)


async def test_approval_applies_the_change_and_the_decision_in_one_transaction(store: Any) -> None:
    await seeded(store)
    with pytest.raises(SelfApproval):
        await store.decide_proposal(decision(actor="stella"), tier_write(actor="stella"))
    done = await store.decide_proposal(decision(), tier_write())
    assert done.proposal.status == "approved" and done.proposal.decided_by == "omar"
    assert done.applied is not None and done.applied.action == "tier.update"
    assert done.record.detail["applied_seq"] == done.applied.seq
    assert done.record.detail["proposer"] == "stella"
    current = await store.get_policy("tier", "standard")
    assert current.version == 2 and current.body["budget"] == {"epsilon": 8}
    assert await store.get_proposal("prop_1") == done.proposal
    with pytest.raises(Conflict):
        await store.decide_proposal(decision(), tier_write())
    records = [r async for r in store.audit_iter()]
    assert [r.action for r in records] == ["proposal.create", "tier.update", "proposal.approve"]
    assert verify(records).valid


async def test_a_stale_target_applies_nothing_and_leaves_the_proposal_pending(store: Any) -> None:
    await seeded(store)
    await store.put_policy("tier", "standard", {"name": "standard", "x": 1}, "omar", draft())
    with pytest.raises(ProposalStale):
        await store.decide_proposal(decision(), tier_write(expected=1))
    assert (await store.get_policy("tier", "standard")).version == 2
    assert (await store.get_proposal("prop_1")).status == "pending"
    assert await store.audit_events(AuditFilter(action="proposal.approve")) == []


async def test_rejection_applies_nothing(store: Any) -> None:
    await seeded(store)
    done = await store.decide_proposal(decision(approve=False, actor="stella"), None)
    assert done.proposal.status == "rejected" and done.applied is None  # withdrawn by its proposer
    assert (await store.get_policy("tier", "standard")).version == 1


async def test_an_expired_proposal_is_marked_and_audited_though_approval_fails(store: Any) -> None:
    await seeded(store)
    late = dt.datetime.now(dt.UTC) + LATER + dt.timedelta(seconds=1)
    with pytest.raises(ProposalExpired):
        await store.decide_proposal(decision(now=late), tier_write())
    assert (await store.get_proposal("prop_1")).status == "expired"
    assert (await store.get_policy("tier", "standard")).version == 1
    (record,) = await store.audit_events(AuditFilter(action="proposal.expire"))
    assert record.actor == "system" and record.detail["proposer"] == "stella"
    with pytest.raises(NotFound):
        await store.decide_proposal(decision("prop_none"), None)


async def test_expire_due_marks_only_proposals_past_their_expiry(store: Any) -> None:
    await seeded(store)
    soon = iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    await store.add_proposal(proposal("prop_2", expires_at=soon), draft("proposal.create"))
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    marked = await store.expire_proposals(draft("proposal.expire", actor="system"), at)
    assert [p.id for p in marked] == ["prop_2"]
    assert [p.id for p in await store.list_proposals("expired")] == ["prop_2"]
    assert [p.id for p in await store.list_proposals("pending")] == ["prop_1"]
    assert await store.expire_proposals(draft("proposal.expire"), at) == []


async def test_licence_and_grant_writes_are_guarded_by_the_licence_state(store: Any) -> None:
    lic = licence(status="suspended")
    await store.insert_licence(lic, draft("licence.create"))
    current = await store.get_licence(lic.id)
    base = licence_state(current)
    await store.add_proposal(proposal(kind="licence.update", base=base), draft())
    await store.add_proposal(proposal("prop_2", kind="licence.grant", base=base), draft())
    grant = Grant(lic.id, "visits", Amount.limit("0.5"), "chapter 3", "omar")
    grant_write = GrantWrite(grant, Amount.limit("100"), draft("licence.grant"), base)
    reactivate = LicenceWrite(lic.id, {"status": "active"}, draft("licence.update"), base)
    done = await store.decide_proposal(decision(), reactivate)
    assert done.applied is not None and (await store.get_licence(lic.id)).status == "active"
    with pytest.raises(ProposalStale):  # the licence changed since the grant was proposed
        await store.decide_proposal(decision("prop_2"), grant_write)
    assert await store.grants(lic.id) == []
    fresh = replace(grant_write, base=licence_state(await store.get_licence(lic.id)))
    await store.decide_proposal(decision("prop_2"), fresh)
    assert [g.reason for g in await store.grants(lic.id)] == ["chapter 3"]


async def test_suspending_an_organisation_holds_exactly_its_active_licences(store: Any) -> None:
    await store.insert_licence(licence("lic_a", "alice", organization="Northwind"), draft())
    await store.insert_licence(licence("lic_b", "bob", organization="Northwind"), draft())
    await store.insert_licence(licence("lic_c", "carol", organization="Northwind Ltd"), draft())
    await store.insert_licence(licence("lic_d", "dave", organization="Northwind",
                                       status="suspended"), draft())  # fmt: skip
    org = draft("organisation.suspend", actor="stella", reason="BR-9")
    per = draft("licence.update", actor="stella", reason="BR-9",
                detail={"changes": {"status": "suspended"}})  # fmt: skip
    done = await store.suspend_organisation("Northwind", "BR-9", org, per)
    assert done.licence_ids == ("lic_a", "lic_b")
    assert done.record.detail["licences"] == ["lic_a", "lic_b"]
    statuses = [(await store.get_licence(i)).status for i in ("lic_a", "lic_b", "lic_c", "lic_d")]
    assert statuses == ["suspended", "suspended", "active", "suspended"]
    assert await store.held_licences("Northwind") == ["lic_a", "lic_b"]
    assert await store.hold_of("lic_a") == "Northwind" and await store.hold_of("lic_d") is None
    updates = await store.audit_events(AuditFilter(action="licence.update"))
    assert sorted(r.licence_id for r in updates) == ["lic_a", "lic_b"]

    base = held_state([await store.get_licence(i) for i in ("lic_a", "lic_b")])
    await store.add_proposal(proposal(kind="organisation.reactivate", base=base), draft())
    write = Reactivation("Northwind", draft("organisation.reactivate", actor="omar"),
                         draft("licence.update", actor="omar"), base)  # fmt: skip
    await store.decide_proposal(decision(), write)
    assert [(await store.get_licence(i)).status for i in ("lic_a", "lic_b", "lic_d")] == [
        "active", "active", "suspended",
    ]  # fmt: skip
    assert await store.held_licences("Northwind") == []
    assert verify([r async for r in store.audit_iter()]).valid


async def test_two_admins_approving_at_once_apply_the_change_exactly_once(
    store: Any, backend: Backend
) -> None:
    """The race: ten approvals of one proposal, from two store instances (two replicas)."""
    await seeded(store)
    other = backend.make()
    await other.open()
    try:
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).decide_proposal(
                    decision(actor=f"admin{i}"), tier_write(actor=f"admin{i}")
                )
                for i in range(10)
            ),
            return_exceptions=True,
        )
    finally:
        await other.close()
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(e, Conflict) for e in lost), results
    assert [p.version for p in await store.policy_history("tier", "standard")] == [1, 2]
    applied = await store.audit_events(AuditFilter(action="tier.update"))
    approved = await store.audit_events(AuditFilter(action="proposal.approve"))
    assert len(applied) == 1 and len(approved) == 1
    assert approved[0].actor == won[0].proposal.decided_by == applied[0].actor


async def test_proposals_survive_a_reopen(store: Any, backend: Backend) -> None:
    stored = await seeded(store)
    await store.close()
    again = backend.make()
    await again.open()
    try:
        assert await again.get_proposal(stored.id) == stored
    finally:
        await again.close()
    await store.open()


async def test_proposals_and_holds_travel_with_store_copy(
    backend: Backend, store: Any, tmp_path: Any
) -> None:
    from enclave.store import open_store
    from enclave.store_copy import copy_store

    stored = await seeded(store)
    await store.insert_licence(licence("lic_a", organization="Northwind"), draft())
    await store.suspend_organisation("Northwind", "BR-9", draft("organisation.suspend"),
                                     draft("licence.update"))  # fmt: skip
    await store.close()
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    report = await copy_store(backend.url, target)
    assert report.ok and report.counts["proposals"] == 1 and report.counts["licence_holds"] == 1
    copied = open_store(target)
    await copied.open()
    try:
        assert await copied.get_proposal(stored.id) == stored
        assert await copied.held_licences("Northwind") == ["lic_a"]
    finally:
        await copied.close()
    await store.open()


async def test_a_beneficiary_is_refused_inside_the_decision(store: Any) -> None:
    """The approver's licences are read in the decision's transaction: whatever a caller
    checked before, the subject of a changed licence, or of any licence (held or not) of a
    reactivated organisation, cannot approve it; they can reject it."""
    await store.insert_licence(licence("lic_a", "alice", organization="Northwind"), draft())
    own = licence("lic_o", "omar", organization="Northwind", status="suspended")
    await store.insert_licence(own, draft())
    base = licence_state(await store.get_licence("lic_o"))
    await store.add_proposal(proposal(kind="licence.update", target="lic_o", base=base), draft())
    await store.add_proposal(
        proposal("prop_2", kind="licence.grant", target="lic_o", base=base), draft()
    )
    reactivate = LicenceWrite("lic_o", {"status": "active"}, draft("licence.update"), base)
    grant = Grant("lic_o", "visits", Amount.limit("0.5"), "chapter 3", "stella")
    grant_write = GrantWrite(grant, Amount.limit("100"), draft("licence.grant"), base)
    for pid, write in (("prop_1", reactivate), ("prop_2", grant_write)):
        with pytest.raises(SelfApproval, match="their own licence"):
            await store.decide_proposal(decision(pid, actor="omar"), write)
    assert (await store.get_licence("lic_o")).status == "suspended"
    assert await store.grants("lic_o") == []

    await store.suspend_organisation("Northwind", "BR-9", draft(), draft("licence.update"))
    held = held_state([await store.get_licence("lic_a")])  # lic_o was suspended already
    await store.add_proposal(
        proposal("prop_3", kind="organisation.reactivate", target="Northwind", base=held), draft()
    )
    write = Reactivation("Northwind", draft("organisation.reactivate"),
                         draft("licence.update"), held)  # fmt: skip
    with pytest.raises(SelfApproval, match="organisation in which they hold a licence"):
        await store.decide_proposal(decision("prop_3", actor="omar"), write)
    assert await store.held_licences("Northwind") == ["lic_a"]

    done = await store.decide_proposal(decision("prop_1", approve=False, actor="omar"), None)
    assert done.proposal.status == "rejected"
    await store.decide_proposal(decision("prop_3", actor="ada"), write)
    assert (await store.get_licence("lic_a")).status == "active"
    statuses = {p.id: p.status for p in await store.list_proposals()}
    assert statuses == {"prop_1": "rejected", "prop_2": "pending", "prop_3": "approved"}


async def test_a_licence_is_issued_only_against_the_licences_it_was_checked_with(
    store: Any,
) -> None:
    """Whether a new licence is a reissue (four-eyes) is decided from the subject's licences;
    ``issue_licence`` writes it only while they are unchanged, in its own transaction, so a
    licence issued and revoked meanwhile cannot turn a reissue into a first licence."""
    checked = held_state(await store.licences_for("alice"))  # none yet: a first licence
    await store.insert_licence(licence("lic_0"), draft("licence.create"))
    await store.update_licence("lic_0", {"status": "revoked"}, draft("licence.update"))
    new = NewLicence(licence("lic_1"), draft("licence.create"), checked)
    head = (await store.audit_head())[0]
    with pytest.raises(Conflict, match="licences changed") as refused:
        await store.issue_licence(new)
    assert not isinstance(refused.value, ProposalStale)  # a direct issue: a plain conflict
    assert await store.get_licence("lic_1") is None and (await store.audit_head())[0] == head
    fresh = replace(new, base=held_state(await store.licences_for("alice")))
    record = await store.issue_licence(fresh)
    assert record.action == "licence.create" and record.licence_id == "lic_1"
    assert (await store.get_licence("lic_1")) is not None

"""Licences, revocations and versioned policies: every write lands with its audit record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.errors import BadRequest, Conflict, NotFound
from tests.store.conftest import T0, draft, licence


async def _records(store: Any) -> list[Any]:
    return [r async for r in store.audit_iter()]


async def test_insert_get_list_roundtrip(store: Any) -> None:
    lic = licence(valid_from=T0 + dt.timedelta(microseconds=123456), datasets=("visits", "labs"))
    record = await store.insert_licence(lic, draft("licence.create", actor="root"))
    assert record.seq == 1 and record.action == "licence.create"
    assert record.licence_id == "lic_1"  # filled in from the licence when the draft has none
    got = await store.get_licence("lic_1")
    assert got is not None
    assert got.valid_from == lic.valid_from  # full precision survives
    assert got.datasets == ("visits", "labs")
    assert got.created_at is not None and got.updated_at is not None
    assert [x.id for x in await store.list_licences()] == ["lic_1"]
    assert await store.list_licences("bob") == []
    assert await store.get_licence("missing") is None


async def test_licences_for_newest_first(store: Any, backend: Any) -> None:
    for i, ds in enumerate(["a", "b", "c"]):
        await store.insert_licence(licence(f"lic_{i}", datasets=(ds,)), draft("licence.create"))
        backend.clock.advance(seconds=1)
    assert [x.id for x in await store.licences_for("alice")] == ["lic_2", "lic_1", "lic_0"]


async def test_second_active_licence_for_a_dataset_conflicts(store: Any) -> None:
    await store.insert_licence(licence("lic_1", datasets=("visits", "labs")), draft())
    with pytest.raises(Conflict):
        await store.insert_licence(licence("lic_2", datasets=("labs",)), draft())
    with pytest.raises(Conflict):  # same id
        await store.insert_licence(licence("lic_1", datasets=("other",)), draft())
    # Nothing was written by the refused inserts, not even an audit record.
    assert await store.audit_head() == (1, (await _records(store))[0].hash)
    # A suspended one, another subject, or another dataset is fine.
    await store.insert_licence(licence("lic_3", datasets=("labs",), status="suspended"), draft())
    await store.insert_licence(licence("lic_4", subject="bob", datasets=("labs",)), draft())
    await store.insert_licence(licence("lic_5", datasets=("claims",)), draft())
    # Re-activating the suspended one would make two active licences for "labs".
    with pytest.raises(Conflict):
        await store.update_licence("lic_3", {"status": "active"}, draft("licence.update"))
    assert (await store.get_licence("lic_3")).status == "suspended"


async def test_a_bulk_insert_is_all_or_none(store: Any) -> None:
    await store.insert_licence(licence("lic_1", datasets=("visits",)), draft())
    head = await store.audit_head()
    batch = [
        (licence("lic_2", subject="bob", datasets=("visits",)), draft()),
        (licence("lic_3", subject="carol", datasets=("visits",)), draft()),
        (licence("lic_4", datasets=("visits",)), draft()),  # overlaps alice's lic_1
    ]
    with pytest.raises(Conflict):
        await store.insert_licences(batch)
    # the first two rows were written in the same transaction, and rolled back with it
    assert await store.get_licence("lic_2") is None and await store.get_licence("lic_3") is None
    assert await store.audit_head() == head
    records = await store.insert_licences(batch[:2])
    assert [r.licence_id for r in records] == ["lic_2", "lic_3"]
    assert [r.seq for r in records] == [head[0] + 1, head[0] + 2]
    assert verify(await _records(store)).valid


async def test_update_changes_fields_and_audits(store: Any, backend: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    backend.clock.advance(minutes=5)
    until = T0 + dt.timedelta(days=30)
    updated, record = await store.update_licence(
        "lic_1",
        {"tier": "restricted", "valid_until": until, "datasets": ["visits", "labs"]},
        draft("licence.update", detail={"reason": "renewal"}),
    )
    assert updated.tier == "restricted" and updated.valid_until == until
    assert updated.datasets == ("visits", "labs")
    assert (await store.get_licence("lic_1")) == updated
    assert record.seq == 2 and record.detail == {"reason": "renewal"}
    assert updated.updated_at is not None and updated.created_at is not None
    assert updated.updated_at > updated.created_at
    with pytest.raises(NotFound):
        await store.update_licence("nope", {"tier": "x"}, draft())
    with pytest.raises(BadRequest):
        await store.update_licence("lic_1", {"id": "other"}, draft())
    with pytest.raises(BadRequest):
        await store.update_licence("lic_1", {"status": "paused"}, draft())
    assert (await store.audit_head())[0] == 2


async def test_revoked_is_final(store: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    await store.update_licence("lic_1", {"status": "revoked"}, draft("licence.update"))
    for changes in ({"status": "active"}, {"status": "revoked"}, {"purpose": "x"}):
        with pytest.raises(Conflict):
            await store.update_licence("lic_1", changes, draft("licence.update"))
    assert (await store.get_licence("lic_1")).status == "revoked"
    # A revoked licence no longer blocks a new active one for the same dataset.
    await store.insert_licence(licence("lic_2"), draft("licence.create"))
    assert verify(await _records(store)).count == 3


async def test_revocations(store: Any) -> None:
    assert not await store.is_revoked("jti-1")
    record = await store.add_revocation("jti-1", "stolen laptop", draft("revocation.create"))
    assert record.action == "revocation.create"
    assert await store.is_revoked("jti-1")
    assert not await store.is_revoked("jti-2")
    again = await store.add_revocation("jti-1", "again", draft("revocation.create"))
    assert again.seq == record.seq + 1 and await store.is_revoked("jti-1")


async def test_policy_versions_are_kept(store: Any) -> None:
    seeded, none = await store.put_policy("tier", "standard", {"name": "standard"}, "seed", None)
    assert none is None and seeded.version == 1 and seeded.body["version"] == 1
    v2, record = await store.put_policy(
        "tier", "standard", {"name": "standard", "filters": False}, "root", draft("tier.update")
    )
    assert v2.version == 2 and record is not None and record.action == "tier.update"
    await store.put_policy("tier", "open", {"name": "open"}, "root", draft("tier.update"))
    await store.put_policy("dataset", "visits", {"name": "visits"}, "root", draft())
    latest = await store.get_policy("tier", "standard")
    assert latest.version == 2 and latest.body == {
        "name": "standard",
        "filters": False,
        "version": 2,
    }
    assert latest.actor == "root"
    old = await store.get_policy("tier", "standard", 1)
    assert old.body == {"name": "standard", "version": 1} and old.actor == "seed"
    assert await store.get_policy("tier", "standard", 3) is None
    assert await store.get_policy("dataset", "standard") is None
    assert [(p.name, p.version) for p in await store.list_policies("tier")] == [
        ("open", 1),
        ("standard", 2),
    ]
    assert [p.version for p in await store.policy_history("tier", "standard")] == [1, 2]
    assert [p.name for p in await store.list_policies("dataset")] == ["visits"]
    assert (await store.audit_head())[0] == 3  # the seed wrote no audit record

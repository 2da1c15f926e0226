"""Layered budgets on both stores: the debit re-checks the licence, subject, organisation and
dataset layers inside its chained write, names the layer it refuses on and writes nothing
then; concurrent debits of different licences never overspend a shared layer; migration 8
fills the new ledger and grant columns from the licences."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Charge, Layer, LayerName
from enclave.ledger.grid import TOTAL_CAP, Amount
from enclave.licence_grants import LEDGER_BOUND, Grant
from enclave.store import schema
from tests.spend import layer_spent
from tests.store.conftest import draft, licence

ONE = Amount.limit("1.0", "0.000001")


def layered(
    eps: str,
    licence_id: str = "lic_1",
    subject: str = "alice",
    organization: str = "Uni",
    licence_limit: str = "5",
    shared: dict[str, str] | None = None,
) -> Charge:
    """A charge of ``eps`` with the licence layer at ``licence_limit`` and every ``shared``
    layer (subject, organisation, dataset) at its given epsilon, lifetime."""
    layers = tuple(
        Layer(name, Amount.limit(limit, "0.000001"), None)  # type: ignore[arg-type]
        for name, limit in (shared or {}).items()
    )
    return Charge(
        licence_id=licence_id,
        dataset="visits",
        cost=Amount.charge(eps),
        limit=Amount.limit(licence_limit, "0.000001"),
        since=None,
        layers=layers,
        subject=subject,
        organization=organization,
    )


async def spent(store: Any, layer: LayerName, key: str) -> Amount:
    return await layer_spent(store, layer, key, "visits", None)


async def test_each_layer_sums_its_own_rows(store: Any) -> None:
    await store.debit(draft(), layered("0.5", "lic_a", "alice", "Uni"))
    await store.debit(draft(), layered("0.25", "lic_b", "alice", "Uni"))
    await store.debit(draft(), layered("0.125", "lic_c", "bob", "Uni"))
    await store.debit(draft(), layered("0.0625", "lic_d", "carol", "Other"))
    assert await spent(store, "licence", "lic_a") == Amount.charge("0.5")
    assert await spent(store, "subject", "alice") == Amount.charge("0.75")
    assert await spent(store, "organisation", "Uni") == Amount.charge("0.875")
    assert await spent(store, "dataset", "visits") == Amount.charge("0.9375")
    assert await spent(store, "subject", "nobody") == Amount()


@pytest.mark.parametrize(
    ("layer", "shared"),
    [
        ("licence", {}),
        ("subject", {"subject": "1"}),
        ("organisation", {"organisation": "1"}),
        ("dataset", {"dataset": "1"}),
    ],
)
async def test_a_refusal_names_the_layer_and_writes_nothing(
    store: Any, layer: str, shared: dict[str, str]
) -> None:
    """0.75 spent by another licence of the same subject and organisation; 0.5 more passes
    1.0 on exactly the layer under test (the licence layer's own limit is 1 there)."""
    await store.debit(draft(), layered("0.75", "lic_old"))
    if layer == "licence":
        await store.debit(draft(), layered("0.75", "lic_1"))
    head = await store.audit_head()
    before = await spent(store, "dataset", "visits")
    limit = "1" if layer == "licence" else "5"
    with pytest.raises(BudgetExhausted) as caught:
        await store.debit(draft(), layered("0.5", "lic_1", licence_limit=limit, shared=shared))
    assert caught.value.layer == layer
    assert await store.audit_head() == head
    assert await spent(store, "dataset", "visits") == before
    # a charge that fits every layer still passes
    await store.debit(draft(), layered("0.25", "lic_1", licence_limit="5", shared=shared))


async def test_the_dataset_layer_counts_everyone(store: Any) -> None:
    for i in range(4):
        await store.debit(
            draft(), layered("0.25", f"lic_{i}", f"s{i}", f"org{i}", shared={"dataset": "1"})
        )
    with pytest.raises(BudgetExhausted) as caught:
        await store.debit(
            draft(), layered("0.000001", "lic_9", "s9", "org9", shared={"dataset": "1"})
        )
    assert caught.value.layer == "dataset"


async def test_cached_totals_follow_every_layer(store: Any) -> None:
    """The SQLite store caches lifetime totals; each layer's total moves with each debit."""
    for layer, key in (("subject", "alice"), ("organisation", "Uni"), ("dataset", "visits")):
        assert await spent(store, layer, key) == Amount()  # type: ignore[arg-type]
    await store.debit(draft(), layered("0.5", "lic_a"))
    await store.debit(draft(), layered("0.25", "lic_b", "bob"))
    assert await spent(store, "subject", "alice") == Amount.charge("0.5")
    assert await spent(store, "organisation", "Uni") == Amount.charge("0.75")
    assert await spent(store, "dataset", "visits") == Amount.charge("0.75")


async def test_concurrent_licences_never_overspend_a_shared_layer(store: Any) -> None:
    """Twenty licences of twenty subjects of one organisation race for an organisation
    budget of 1.0 and a dataset budget of 1.5, 0.1 at a time, three times each: exactly ten
    charges pass; the ledger holds exactly 1.0."""

    async def one(i: int) -> bool:
        try:
            await store.debit(
                draft(),
                layered(
                    "0.1",
                    f"lic_{i % 20}",
                    f"s{i % 20}",
                    "Uni",
                    shared={"organisation": "1", "dataset": "1.5"},
                ),
            )
        except BudgetExhausted as exc:
            assert exc.layer == "organisation"
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(60)))
    assert sum(results) == 10
    assert await spent(store, "organisation", "Uni") == Amount.limit("1.0")
    assert await spent(store, "dataset", "visits") == Amount.limit("1.0")


async def test_subject_grants_follow_the_subject(store: Any) -> None:
    await store.insert_licence(licence("lic_1"), draft("licence.create"))
    actor = draft("licence.grant", actor="stella", roles=("admin",), reason="reissue")
    given = Grant("lic_1", "visits", Amount.limit("0.5"), "reissue", "stella", layer="subject")
    record = await store.add_grant(given, LEDGER_BOUND, actor)
    await store.add_grant(
        Grant("lic_1", "visits", Amount.limit("0.25"), "chapter", "stella"), LEDGER_BOUND, actor
    )
    (stored,) = await store.subject_grants("alice")
    assert stored.layer == "subject" and stored.subject == "alice"
    assert stored.audit_seq == record.seq and stored.amount == Amount.limit("0.5")
    assert [g.layer for g in await store.grants("lic_1")] == ["subject", "licence"]
    assert await store.subject_grants("bob") == []


async def test_migration_8_fills_subject_and_organisation(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ledger rows and grants written before migration 8 are keyed by their licence's
    subject and organisation afterwards."""
    name = "SQLITE" if backend.name == "sqlite" else "POSTGRES"
    with monkeypatch.context() as m:
        m.setattr(schema, name, [x for x in getattr(schema, name) if x[0] < 8])
        old = backend.make()
        await old.open()
        try:
            await old.insert_licence(licence("lic_1"), draft("licence.create"))
            record = await old.append(draft(licence_id="lic_1"))
            await backend.raw(
                "INSERT INTO ledger (licence_id, dataset, epsilon_units, delta_units, ts,"  # noqa: S608
                f" audit_seq) VALUES ('lic_1', 'visits', 500000, 0, '{record.ts}', {record.seq})"
            )
            await backend.raw(
                "INSERT INTO licence_grants (audit_seq, licence_id, dataset, epsilon_units,"  # noqa: S608
                " delta_units, reason, actor, created_at) VALUES"
                f" ({record.seq}, 'lic_1', 'visits', 1, 0, 'r', 'stella', '{record.ts}')"
            )
        finally:
            await old.close()
    store = backend.make()
    await store.open()
    try:
        assert await store.schema_version() >= 8
        assert await spent(store, "subject", "alice") == Amount.limit("0.5")
        assert await spent(store, "organisation", "Uni") == Amount.limit("0.5")
        (grant,) = await store.grants("lic_1")
        assert grant.layer == "licence" and grant.subject == "alice"
    finally:
        await store.close()


async def test_running_totals_agree_with_the_rows(store: Any) -> None:
    """A lifetime total is read from ``ledger_totals``; a window from the rows: both agree."""
    for i in range(12):
        await store.debit(draft(), layered(f"0.0{i + 1}", f"lic_{i % 3}", f"s{i % 2}", "Uni"))
    old = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    for layer, key in (("licence", "lic_1"), ("subject", "s0"), ("organisation", "Uni")):
        total = await layer_spent(store, layer, key, "visits", None)
        assert total == await layer_spent(store, layer, key, "visits", old) != Amount()
    assert await spent(store, "dataset", "visits") == Amount.charge("0.483")


async def test_a_total_near_the_cap_stops_growing(backend: Any, store: Any) -> None:
    await store.debit(draft(), layered("0.5"))
    await backend.raw(
        f"UPDATE ledger_totals SET epsilon_units = {TOTAL_CAP + 5} WHERE layer = 'dataset'"  # noqa: S608
    )
    fresh = backend.make()  # no cached totals
    await fresh.open()
    try:
        await fresh.debit(draft(), layered("0.5", "lic_2", "bob"))  # no dataset layer: passes
        assert (await spent(fresh, "dataset", "visits")).epsilon == TOTAL_CAP + 5
        with pytest.raises(BudgetExhausted):
            await fresh.debit(draft(), layered("0.5", "lic_3", "carol", shared={"dataset": "9"}))
    finally:
        await fresh.close()

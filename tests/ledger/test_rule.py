"""``ledger/rule.py``: the budget rule the reservation and the debit share."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Charge, Layer
from enclave.ledger.grid import Amount
from enclave.ledger.rule import Reserved, Slot, SpentKey, fit, held_on, layer_keys, reserved

ONE = Amount.charge("1")


def charge(cost: str = "1", org_limit: str = "10") -> Charge:
    return Charge(
        licence_id="lic_a",
        dataset="visits",
        cost=Amount.charge(cost),
        limit=Amount.charge("5"),
        since=None,
        layers=(
            Layer("subject", Amount.charge("5"), None),
            Layer("organisation", Amount.charge(org_limit), None),
        ),
        subject="alice",
        organization="Org A",
    )


def spent(licence: str = "0", subject: str = "0", org: str = "0") -> dict[SpentKey, Amount]:
    return {
        ("licence", "lic_a", "visits", None): Amount.charge(licence),
        ("subject", "alice", "visits", None): Amount.charge(subject),
        ("organisation", "Org A", "visits", None): Amount.charge(org),
    }


NOTHING_HELD = {"licence": Amount(), "subject": Amount(), "organisation": Amount()}


def test_layer_keys_name_every_layer_of_every_charge() -> None:
    assert layer_keys([charge()]) == set(spent())


def test_a_charge_that_fits_returns_each_layers_spend_after_it() -> None:
    assert fit(charge(), spent("1", "2", "3"), dict(NOTHING_HELD)) == [
        Amount.charge("2"),
        Amount.charge("3"),
        Amount.charge("4"),
    ]


def test_exactly_at_the_limit_fits_and_one_unit_more_does_not() -> None:
    assert not isinstance(fit(charge(), spent("4"), dict(NOTHING_HELD)), BudgetExhausted)
    over = spent(licence="4.000001")
    refused = fit(charge(), over, dict(NOTHING_HELD))
    assert isinstance(refused, BudgetExhausted) and refused.layer == "licence"


def test_what_others_hold_counts_and_the_first_layer_that_fails_is_named() -> None:
    held = dict(NOTHING_HELD, organisation=Amount.charge("9.5"))
    refused = fit(charge(), spent(), held)
    assert isinstance(refused, BudgetExhausted) and refused.layer == "organisation"


def test_earlier_charges_of_a_batch_count_and_only_fitting_ones_are_added() -> None:
    added: dict[Slot, Amount] = {}
    for _ in range(5):
        assert not isinstance(fit(charge(), spent(), dict(NOTHING_HELD), added), BudgetExhausted)
    assert added[("licence", "lic_a", "visits")] == Amount.charge("5")
    refused = fit(charge(), spent(), dict(NOTHING_HELD), added)
    assert isinstance(refused, BudgetExhausted)
    assert added[("licence", "lic_a", "visits")] == Amount.charge("5")  # unchanged


def test_reservations_count_on_the_layers_whose_key_they_share() -> None:
    mine = charge()
    other_subject: Reserved = ("lic_b", "bob", "Org A", "visits", ONE)
    other_dataset: Reserved = ("lic_c", "alice", "Org A", "pairs", ONE)
    held = held_on(mine, [reserved(mine), other_subject, other_dataset])
    assert held == {
        "licence": ONE,  # only its own
        "subject": ONE,  # alice on visits
        "organisation": Amount.charge("2"),  # both on visits
    }


@given(
    costs=st.lists(st.integers(min_value=1, max_value=3_000_000), min_size=1, max_size=20),
    held=st.integers(min_value=0, max_value=10),  # whole epsilons held on the organisation
)
def test_no_sequence_of_fitting_charges_passes_a_limit(costs: list[int], held: int) -> None:
    added: dict[Slot, Amount] = {}
    holding = dict(NOTHING_HELD, organisation=Amount.charge(held))
    accepted = Amount()
    for units in costs:
        c = replace(charge(), cost=Amount(units, 0))
        if not isinstance(fit(c, spent(), holding, added), BudgetExhausted):
            accepted = accepted.plus(c.cost)
    for layer in charge().all_layers():
        assert accepted.plus(holding[layer.name]).within(layer.limit), layer.name

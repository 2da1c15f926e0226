"""What a researcher is told about the budget layers: the binding layer, own layers exactly,
shared layers rounded down to a tenth of their limit; refusals name the first short layer."""

from __future__ import annotations

import pytest

from enclave.budget_layers import LayerBudget, binding, check, coarse, fits, researcher_json
from enclave.errors import BudgetExhausted
from enclave.ledger.charge import Layer, LayerName
from enclave.ledger.grid import Amount


def layer(name: LayerName, limit: str, spent: str) -> LayerBudget:
    return LayerBudget(Layer(name, Amount.limit(limit), None), name, Amount.charge(spent))


BUDGETS = (
    layer("licence", "5", "1"),  # 4 left
    layer("subject", "5", "2"),  # 3 left
    layer("organisation", "6", "3.1"),  # 2.9 left: shown as 2.4 (tenths of 6)
    layer("dataset", "10", "6"),  # 4 left
)


def test_coarse_rounds_down_to_a_tenth_of_the_limit() -> None:
    assert coarse(Amount.limit("2.9"), Amount.limit("6")) == Amount.limit("2.4")
    assert coarse(Amount.limit("0.5"), Amount.limit("6")) == Amount()
    assert coarse(Amount.limit("6"), Amount.limit("6")) == Amount.limit("6")
    assert coarse(Amount(7, 3), Amount(9, 5)) == Amount(7, 3)  # a limit below ten units: exact


def test_the_binding_layer_is_the_least_left_shared_ones_coarsely() -> None:
    assert binding(BUDGETS).name == "organisation"
    shown = researcher_json(BUDGETS)
    assert (shown["binding_layer"], shown["epsilon_remaining"]) == ("organisation", 2.4)
    assert shown["renews"] is None
    # after 1.5 more: subject 1.5 left, organisation 1.4 (shown 1.2)
    assert researcher_json(BUDGETS, Amount.charge("1.5"))["epsilon_remaining"] == 1.2
    own = researcher_json(BUDGETS[:2], renews=None)
    assert (own["binding_layer"], own["epsilon_remaining"]) == ("subject", 3.0)
    tie = (layer("licence", "5", "2"), layer("subject", "5", "2"))
    assert binding(tie).name == "licence"


@pytest.mark.parametrize(
    ("cost", "layer_name"), [("3.5", "subject"), ("2.95", "organisation"), ("4.5", "licence")]
)
def test_check_names_the_first_short_layer(cost: str, layer_name: str) -> None:
    with pytest.raises(BudgetExhausted) as caught:
        check(BUDGETS, Amount.charge(cost))
    assert caught.value.layer == layer_name
    assert ("remaining" in caught.value.detail) is (layer_name != "organisation")
    assert not fits(BUDGETS, Amount.charge(cost))
    assert fits(BUDGETS, Amount.charge("2.9"))
    check(BUDGETS, Amount.charge("2.9"))

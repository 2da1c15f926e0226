"""The budget rule, once, for the reservation and the debit (``store/reserve.py``,
``store/chain.py``): on every layer of a charge, what is spent + what others hold + the cost
must fit the layer's limit. Pure functions of what the store read; no SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence

from enclave.errors import BudgetExhausted
from enclave.ledger.charge import EXHAUSTED, LAYER_COLUMNS, Charge, LayerName
from enclave.ledger.grid import Amount

#: a spent total asked for: (layer, key, dataset, since)
SpentKey = tuple[LayerName, str, str, dt.datetime | None]
#: a layer's ledger key: (layer, key, dataset)
Slot = tuple[LayerName, str, str]
#: what others hold (live budget reservations) on each layer of a charge
Held = dict[LayerName, Amount]
#: a live reservation: (licence, subject, organisation, dataset, amount)
Reserved = tuple[str, str | None, str | None, str, Amount]
#: running sums of ledger rows per (layer, key, dataset): [epsilon units, delta units]
Sums = dict[tuple[str, str, str], list[int]]
#: the position in ``Reserved`` that each layer matches (the dataset layer: every one)
_POSITION: dict[LayerName, int] = {"licence": 0, "subject": 1, "organisation": 2}


def layer_keys(charges: Iterable[Charge]) -> set[SpentKey]:
    """Every spent total ``fit`` reads for ``charges``."""
    return {
        (layer.name, key, charge.dataset, layer.since)
        for charge in charges
        for layer in charge.all_layers()
        if (key := charge.key(layer.name)) is not None
    }


def reserved(charge: Charge) -> Reserved:
    """``charge`` as the reservation it holds."""
    return (charge.licence_id, charge.subject, charge.organization, charge.dataset, charge.cost)


def held_on(charge: Charge, rows: Sequence[Reserved]) -> Held:
    """The reservations ``rows`` summed per layer of ``charge``: those on its dataset whose
    key matches the layer's (every one for the dataset layer)."""
    held: Held = {}
    for layer in charge.all_layers():
        key = charge.key(layer.name)
        position = _POSITION.get(layer.name)
        total = Amount()
        for row in rows:
            ours = position is None or row[position] == key
            if key is not None and row[3] == charge.dataset and ours:
                total = total.plus(row[4])
        held[layer.name] = total
    return held


def fit(
    charge: Charge,
    spent: dict[SpentKey, Amount],
    held: Held,
    added: dict[Slot, Amount] | None = None,
) -> list[Amount] | BudgetExhausted:
    """On every layer of ``charge``: spent + ``added`` (the earlier charges of the same batch)
    + what others hold + its cost must fit the limit. Returns each layer's spent total after
    the charge, or the refusal naming the first layer it would pass; ``added`` grows only if
    it fits."""
    after: list[Amount] = []
    slots: list[Slot] = []
    extra = {} if added is None else added
    for layer in charge.all_layers():
        key = charge.key(layer.name)
        if key is None:
            after.append(charge.cost)
            continue
        slot = (layer.name, key, charge.dataset)
        before = spent[(*slot, layer.since)].plus(extra.get(slot, Amount()))
        after.append(before.plus(charge.cost))
        if not after[-1].plus(held[layer.name]).within(layer.limit):
            return BudgetExhausted(EXHAUSTED[layer.name], layer.name)
        slots.append(slot)
    for slot in slots:
        extra[slot] = extra.get(slot, Amount()).plus(charge.cost)
    return after


def add_row(sums: Sums, column: Callable[[str], object], epsilon: int, delta: int) -> None:
    """Add one ledger row (``column(name)``: its value in that column) to the running sum of
    every layer key it names on its dataset, as the lifetime totals (``ledger_totals``) are."""
    dataset = str(column("dataset"))
    for layer, name in LAYER_COLUMNS.items():
        key = column(name)
        if key is not None:
            found = sums.setdefault((layer, str(key), dataset), [0, 0])
            found[0] += epsilon
            found[1] += delta

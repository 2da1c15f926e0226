"""Layered budgets: every query is charged against each layer and refused if any would pass.

The layers, innermost first, each a sum of ledger rows on the query's dataset:

1. ``licence``: the licence's rows; limit = the tier's budget plus the licence's grants;
   window = the tier's period (``ledger/budget.py``: lifetime without ``period_days``).
2. ``subject``: the rows of every licence of the subject, past and present; limit = the
   licence layer's limit plus the subject's grants (``store/grants.py``, layer ``subject``);
   same window as the licence. A reissued licence therefore continues where the old one
   stopped, unless a steward grants more at the subject layer.
3. ``organisation`` (when the licence's tier sets ``organisation_budget``): the rows of
   every licence of the licence's organisation; lifetime.
4. ``dataset`` (when the dataset sets ``total_budget``): everyone's rows; lifetime.

The pipeline checks them early and for free (``check``); then, as the last step before any
data is read, the store reserves the cost on every one (``store/reserve.py``: the ledger plus
everyone's live reservations must leave room), and the debit turns that reservation into the
charge, re-checking every layer inside its chained write (``store/chain.py: debit_batch``). So
concurrent queries of different licences, on any number of replicas, never overspend a shared
layer, and the ones that do not fit are refused before they read the data. Reservations are
not shown in any budget figure below (they last seconds; others' are not the caller's to see).

What a researcher sees (``researcher_json``): the binding layer (the smallest remaining) and
that remaining. The licence and subject layers are the researcher's own spending and are
shown exactly; the organisation and dataset layers also reflect other people's spending, so
their remaining is shown rounded *down* to a tenth of the layer's limit (``coarse``). The
exact figures are for admins and auditors (``layers_json``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from enclave.audit.log import decimal_text
from enclave.errors import BudgetExhausted
from enclave.ledger.budget import period_window
from enclave.ledger.charge import EXHAUSTED, Charge, Layer, LayerName
from enclave.ledger.grid import Amount
from enclave.licence_grants import granted, licence_limit
from enclave.models import DatasetSpec, Licence, Tier, iso
from enclave.store.base import Store

#: layers whose spend includes other people's (shown coarsely to researchers)
SHARED: frozenset[LayerName] = frozenset({"organisation", "dataset"})
COARSE_STEPS = 10  # shared layers are shown to researchers in tenths of their limit


NOTHING = Amount()


@dataclass(frozen=True)
class LayerBudget:
    """One layer of a licence's budget for a dataset: its limit, window and spend so far."""

    layer: Layer
    key: str  # what the ledger rows share: licence id, subject, organisation or dataset
    spent: Amount

    @property
    def name(self) -> LayerName:
        return self.layer.name

    def left(self, extra: Amount = NOTHING) -> Amount:
        """What remains after the spend so far plus ``extra``."""
        return self.spent.plus(extra).left_of(self.layer.limit)

    def fits(self, cost: Amount) -> bool:
        return self.spent.plus(cost).within(self.layer.limit)


async def budget_layers(
    store: Store, licence: Licence, tier: Tier, spec: DatasetSpec | str, now: dt.datetime
) -> tuple[LayerBudget, ...]:
    """Every layer that applies to ``licence`` on ``spec`` now, with its spend (licence first).
    ``spec`` may be only a name (a dataset no longer defined: no dataset layer)."""
    name = spec if isinstance(spec, str) else spec.name
    total = None if isinstance(spec, str) else spec.total_budget
    since, _ = period_window(licence.valid_from, tier.period_days, now)
    own = await licence_limit(store, licence, tier, name, since)
    extra = granted(await store.subject_grants(licence.subject), name, since, "subject")
    layers = [
        (Layer("licence", own, since), licence.id),
        (Layer("subject", own.plus(extra), since), licence.subject),
    ]
    if (org := tier.organisation_budget) is not None:
        layers.append((Layer("organisation", org, None), licence.organization))
    if total is not None:
        layers.append((Layer("dataset", total, None), name))
    keys = [(layer.name, key, name, layer.since) for layer, key in layers]
    spent = await store.spent_many(keys)
    return tuple(
        LayerBudget(layer, key, spent[k]) for (layer, key), k in zip(layers, keys, strict=True)
    )


def charge_for(
    licence: Licence, dataset: str, budgets: tuple[LayerBudget, ...], cost: Amount
) -> Charge:
    """The charge of ``cost``: the store reserves it and re-checks every layer of ``budgets``."""
    first = budgets[0].layer
    return Charge(
        licence_id=licence.id,
        dataset=dataset,
        cost=cost,
        limit=first.limit,
        since=first.since,
        layers=tuple(b.layer for b in budgets[1:]),
        subject=licence.subject,
        organization=licence.organization,
    )


def fits(budgets: tuple[LayerBudget, ...], cost: Amount) -> bool:
    """Whether ``cost`` fits every layer."""
    return all(b.fits(cost) for b in budgets)


def check(budgets: tuple[LayerBudget, ...], cost: Amount) -> None:
    """The pre-check before any data is read: ``BudgetExhausted`` naming the first layer
    ``cost`` would pass (the store re-checks them all in the debit). The remaining amount is
    named only for the researcher's own layers (licence, subject)."""
    for b in budgets:
        if b.fits(cost):
            continue
        what = f"this query costs epsilon {cost.epsilon_decimal} and delta {cost.delta_decimal}"
        if b.name in SHARED:
            raise BudgetExhausted(f"{what}; {EXHAUSTED[b.name]}", b.name)
        left = b.left()
        raise BudgetExhausted(
            f"{what}; {EXHAUSTED[b.name]}: remaining epsilon {left.epsilon_decimal}, "
            f"delta {left.delta_decimal}",
            b.name,
        )


def coarse(left: Amount, limit: Amount) -> Amount:
    """``left`` rounded down to a multiple of a tenth of ``limit`` (each dimension)."""
    return Amount(_down(left.epsilon, limit.epsilon), _down(left.delta, limit.delta))


def _down(left: int, limit: int) -> int:
    step = limit // COARSE_STEPS
    return left if step == 0 else left // step * step


def binding(budgets: tuple[LayerBudget, ...], extra: Amount = NOTHING) -> LayerBudget:
    """The layer with the least epsilon left (the innermost on a tie)."""
    return min(budgets, key=lambda b: b.left(extra).epsilon)


def researcher_json(
    budgets: tuple[LayerBudget, ...], extra: Amount = NOTHING, renews: Any = None
) -> dict[str, Any]:
    """What the researcher is told of the budget left after ``extra`` more spend: the
    binding layer and its remaining (a shared layer coarsely, see the module docstring);
    ``renews`` only when the binding layer renews (the lifetime shared layers never do)."""
    b = binding(budgets, extra)
    left = b.left(extra)
    if b.name in SHARED:
        left = coarse(left, b.layer.limit)
    return {
        "epsilon_remaining": left.epsilon_float,
        "delta_remaining": left.delta_float,
        "binding_layer": b.name,
        "renews": iso(renews) if renews is not None and b.name not in SHARED else None,
    }


def layers_json(budgets: tuple[LayerBudget, ...]) -> list[dict[str, Any]]:
    """Every layer exactly (admins and auditors): limit, spent, remaining, window."""
    out = []
    for b in budgets:
        row: dict[str, Any] = {"layer": b.name, "key": b.key}
        for name, amount in (("limit", b.layer.limit), ("spent", b.spent), ("remaining", b.left())):
            row[f"epsilon_{name}"] = decimal_text(amount.epsilon_decimal)
            row[f"delta_{name}"] = decimal_text(amount.delta_decimal)
        row["period_start"] = iso(b.layer.since) if b.layer.since is not None else None
        out.append(row)
    return out

"""What a debit carries and returns: the ``Charge`` re-checked against every budget layer,
the release stored for the cache beside it (``CacheEntry``), and what was committed
(``Debited``). ``Store.debit`` writes them in one transaction (``store/chain.py``); the layers
are ``budget_layers.py``'s (``docs/privacy.md``, "Budget layers").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from enclave.audit.record import AuditRecord
from enclave.ledger.grid import Amount

#: the budget layers, innermost first (``budget_layers.py``); a ledger column sums each
LayerName = Literal["licence", "subject", "organisation", "dataset"]
LAYER_NAMES: tuple[LayerName, ...] = ("licence", "subject", "organisation", "dataset")
#: the ledger column each layer sums over (fixed names: safe in SQL text)
LAYER_COLUMNS: dict[LayerName, str] = {
    "licence": "licence_id",
    "subject": "subject",
    "organisation": "organization",
    "dataset": "dataset",
}
#: a refusal's detail per layer: which budget is short, never how much others spent
EXHAUSTED: dict[LayerName, str] = {
    "licence": "not enough is left of the licence's privacy budget for this dataset",
    "subject": "not enough is left of your privacy budget for this dataset across all your"
    " licences",
    "organisation": "not enough is left of your organisation's privacy budget for this dataset",
    "dataset": "not enough is left of the dataset's total privacy budget",
}


@dataclass(frozen=True)
class Layer:
    """One budget a charge must fit: ``limit`` for the ledger rows of the layer's key (the
    licence, subject or organisation of the charge, or everyone) on the charge's dataset,
    counted from ``since`` (None: lifetime)."""

    name: LayerName
    limit: Amount
    since: dt.datetime | None


@dataclass(frozen=True)
class Charge:
    """A budget debit, re-checked against its limit inside the transaction.

    ``limit``/``since`` are the licence layer; ``layers`` the shared ones (subject,
    organisation, dataset), each re-checked in the same transaction. ``subject`` and
    ``organization`` (the licence's) are written on the ledger row, keying those layers."""

    licence_id: str
    dataset: str
    cost: Amount  # grid units, rounded up from the priced epsilon and delta
    limit: Amount  # the licence's limit (tier's budget plus grants) in grid units
    since: dt.datetime | None  # start of the current budget period (None: lifetime)
    layers: tuple[Layer, ...] = ()
    subject: str | None = None
    organization: str | None = None
    reservation: str | None = None  # its budget reservation (``store/reserve.py``), if any

    def all_layers(self) -> tuple[Layer, ...]:
        """Every layer to re-check, the licence first."""
        return (Layer("licence", self.limit, self.since), *self.layers)

    def key(self, layer: LayerName) -> str | None:
        """The ledger value ``layer`` sums over (None: the charge has none)."""
        return {
            "licence": self.licence_id,
            "subject": self.subject,
            "organisation": self.organization,
            "dataset": self.dataset,
        }[layer]


@dataclass(frozen=True)
class Debited:
    """What ``Store.debit`` committed: the audit record, and the spent total *after* the
    charge (the ledger's sum, read inside the same transaction)."""

    record: AuditRecord
    spent: Amount
    #: every re-checked layer's spent total after the charge, in ``Charge.all_layers`` order
    layers: tuple[Amount, ...] = ()


@dataclass(frozen=True)
class CacheEntry:
    """A release kept for the release cache: a repeat of the query returns it at no cost."""

    licence_id: str
    cache_key: str
    release: dict[str, Any]  # the released (noisy) JSON body, without audit_seq/budget

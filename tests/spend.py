"""One budget layer's spend, for tests (the store reads layers together: ``spent_many``)."""

from __future__ import annotations

import datetime as dt

from enclave.ledger.charge import LayerName
from enclave.ledger.grid import Amount
from enclave.ledger.rule import SpentKey
from enclave.store.base import Store


async def layer_spent(
    store: Store, layer: LayerName, key: str, dataset: str, since: dt.datetime | None
) -> Amount:
    wanted: SpentKey = (layer, key, dataset, since)
    return (await store.spent_many([wanted]))[wanted]

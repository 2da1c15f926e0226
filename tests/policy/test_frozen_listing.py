"""Listing a frozen dataset: its licensees still see it (with the freeze's reason), nobody
else does, and a suspended licence does not bring it back."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from enclave.policy.decide import visible_datasets
from tests.governance.test_risk import DATASET, LICENCE, TIER


def test_a_frozen_dataset_stays_listed_for_its_licensees_only() -> None:
    frozen = replace(DATASET, frozen="INC-1")
    active = replace(LICENCE, status="active", valid_until=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    tiers = {"standard": TIER}
    assert visible_datasets([active], tiers, [frozen], now) == [frozen]
    assert visible_datasets([LICENCE], tiers, [frozen], now) == []  # a suspended licence

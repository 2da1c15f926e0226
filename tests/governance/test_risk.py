"""The risk classifier (``governance/risk.py``): one row per rule that raises risk, and the
changes that keep or lower it (which apply directly, even with four-eyes on)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from enclave.governance.risk import reissued, risks
from enclave.ledger.grid import Amount
from enclave.models import ColumnSpec, DatasetSpec, Licence, Tier

TIER = Tier(
    organisation_budget_epsilon=Decimal("10"),
    name="standard",
    description="",
    aggregates=frozenset({"count", "sum"}),
    max_epsilon_per_query=Decimal("1"),
    budget_epsilon=Decimal("5"),
    budget_delta=Decimal("0.000001"),
    period_days=30,
    min_noisy_count=10,
    filters=False,
    rate_limit_per_minute=60,
    allowed_jurisdictions=("GB", "IE"),
    level=1,
)
AGE = ColumnSpec(name="age", type="int", bounds=(0, 120))
DATASET = DatasetSpec(
    name="visits", description="", source="visits.parquet", source_path="/d/visits.parquet",
    privacy_unit="pid", max_rows_per_unit=5, min_tier=("standard",),
    allowed_jurisdictions=("GB",), columns=(AGE,), total_budget=Amount.limit(Decimal("20")),
)  # fmt: skip
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LICENCE = Licence(
    id="lic_1", subject="alice", organization="Uni", tier="standard", datasets=("visits",),
    purpose="p", jurisdiction="GB", valid_from=T0, valid_until=T0 + dt.timedelta(days=365),
    status="suspended",
)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"budget_epsilon": Decimal("6")}, "budget.epsilon raised from 5 to 6"),
        ({"budget_delta": Decimal("0.00001")}, "budget.delta raised from 0.000001 to 0.00001"),
        (
            {"period_days": 7},
            "budget.period_days shortened from 30 to 7 (the budget renews sooner)",
        ),
        ({"max_epsilon_per_query": Decimal("2")}, "max_epsilon_per_query raised from 1 to 2"),
        ({"rate_limit_per_minute": 61}, "rate_limit_per_minute raised from 60 to 61"),
        ({"group_by_max_columns": 3}, "group_by.max_columns raised from 2 to 3"),
        ({"group_by_max_groups": 501}, "group_by.max_groups raised from 500 to 501"),
        ({"min_noisy_count": 9}, "min_noisy_count lowered from 10 to 9"),
        ({"allow_undeclared_keys": True}, "group_by.allow_undeclared_keys turned on"),
        ({"filters": True}, "filters turned on"),
        ({"aggregates": frozenset({"count", "sum", "avg"})}, "aggregates added: avg"),
        ({"allowed_jurisdictions": ("GB", "IE", "US")}, "allowed_jurisdictions opened to US"),
        ({"allowed_jurisdictions": ()}, "allowed_jurisdictions opened to any jurisdiction"),
        ({"level": 2}, "level raised from 1 to 2"),
        ({"synthetic_allowed": True}, "synthetic.allowed turned on"),
        ({"synthetic_max_epsilon": Decimal("1")}, "synthetic.max_epsilon raised from 0 to 1"),
        ({"organisation_budget_epsilon": None}, "organisation_budget removed (no limit)"),
        (
            {"organisation_budget_epsilon": Decimal("11")},
            "organisation_budget raised from epsilon 10, delta 0 to epsilon 11, delta 0",
        ),
    ],
)
def test_each_tier_rule_that_raises_risk(change: dict[str, Any], reason: str) -> None:
    assert risks(TIER, replace(TIER, **change)) == [reason]


def test_a_lifetime_budget_that_starts_renewing_raises_risk() -> None:
    lifetime = replace(TIER, period_days=None)
    assert risks(lifetime, TIER) == [
        "budget.period_days shortened from lifetime to 30 (the budget renews sooner)"
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"budget_epsilon": Decimal("4")},
        {"max_epsilon_per_query": Decimal("0.5")},
        {"period_days": 60},
        {"period_days": None},
        {"min_noisy_count": 20},
        {"rate_limit_per_minute": 10},
        {"aggregates": frozenset({"count"})},
        {"allowed_jurisdictions": ("GB",)},
        {"level": 0},
        {"description": "reworded"},
        {"min_epsilon_per_query": Decimal("0.01")},
        {"organisation_budget_epsilon": Decimal("9")},
    ],
)
def test_tier_changes_that_keep_or_lower_risk(change: dict[str, Any]) -> None:
    assert risks(TIER, replace(TIER, **change)) == []


def test_a_new_tier_or_dataset_raises_risk_and_reasons_accumulate() -> None:
    assert risks(None, TIER) == ["new tier 'standard'"]
    assert risks(None, DATASET) == ["new dataset 'visits'"]
    both = replace(TIER, budget_epsilon=Decimal("6"), min_noisy_count=0)
    assert len(risks(TIER, both)) == 2
    assert risks(replace(TIER, allowed_jurisdictions=()), TIER) == []  # any → some: narrower


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"allowed_jurisdictions": ("GB", "FR")}, "allowed_jurisdictions opened to FR"),
        ({"allowed_jurisdictions": None}, "allowed_jurisdictions opened to any jurisdiction"),
        ({"min_tier": ("open",)}, "min_tier changed (who may query the dataset)"),
        ({"columns": (AGE, ColumnSpec(name="sex", type="category", values=("f", "m")))},
         "columns added: sex"),
        ({"source": "other.parquet"}, "source changed"),
        ({"total_budget": None}, "total_budget removed (no limit)"),
        (
            {"total_budget": Amount.limit(Decimal("30"))},
            "total_budget raised from epsilon 20, delta 0 to epsilon 30, delta 0",
        ),
    ],
)  # fmt: skip
def test_each_dataset_rule_that_raises_risk(change: dict[str, Any], reason: str) -> None:
    assert risks(DATASET, replace(DATASET, **change)) == [reason]


def test_restoring_and_unfreezing_a_dataset_raise_risk_retiring_and_freezing_do_not() -> None:
    retired, frozen = replace(DATASET, retired=True), replace(DATASET, frozen="INC-1")
    assert risks(retired, DATASET) == ["restored from retired"]
    assert risks(frozen, DATASET) == ["unfrozen"]
    assert risks(DATASET, retired) == [] and risks(DATASET, frozen) == []
    assert risks(DATASET, replace(DATASET, columns=())) == []  # a column removed
    assert risks(DATASET, replace(DATASET, description="x", max_rows_per_unit=3)) == []
    assert risks(DATASET, replace(DATASET, total_budget=Amount.limit(Decimal("5")))) == []
    assert risks(replace(DATASET, total_budget=None), DATASET) == []  # a cap set: narrower


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "active"}, "licence reactivated"),
        ({"datasets": ("visits", "claims")}, "datasets added: claims"),
        ({"tier": "accredited"}, "tier changed from 'standard' to 'accredited'"),
        ({"jurisdiction": "US"}, "jurisdiction changed from GB to US"),
        ({"valid_until": T0 + dt.timedelta(days=400)}, "validity window widened"),
        ({"valid_from": T0 - dt.timedelta(days=1)}, "validity window widened"),
        ({"organization": "Other"}, "organisation changed from 'Uni' to 'Other'"),
    ],
)
def test_each_licence_rule_that_raises_risk(change: dict[str, Any], reason: str) -> None:
    assert risks(LICENCE, replace(LICENCE, **change)) == [reason]


@pytest.mark.parametrize(
    "change",
    [
        {"status": "revoked"},
        {"datasets": ()},
        {"valid_until": T0 + dt.timedelta(days=30)},
        {"purpose": "renamed"},
    ],
)
def test_licence_changes_that_keep_or_lower_risk(change: dict[str, Any]) -> None:
    assert risks(LICENCE, replace(LICENCE, **change)) == []
    active = replace(LICENCE, status="active")
    assert risks(active, replace(active, status="suspended")) == []


def test_a_reissue_raises_risk_a_first_licence_does_not() -> None:
    new = replace(LICENCE, id="lic_new", tier="accredited", datasets=("visits", "clinics"))
    other = replace(LICENCE, id="lic_bob", subject="bob")  # another subject's: not alice's
    elsewhere = replace(LICENCE, id="lic_2", datasets=("claims",))  # alice, another dataset
    assert reissued(new, []) == []
    assert reissued(new, [other, elsewhere]) == []
    revoked = replace(LICENCE, id="lic_3", status="revoked", datasets=("clinics", "visits"))
    assert reissued(new, [other, revoked, LICENCE]) == [
        "licence reissued: 'alice' has held lic_1 on visits (suspended) and "
        "lic_3 on clinics, visits (revoked)"
    ]

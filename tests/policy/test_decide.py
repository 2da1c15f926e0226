"""The policy decision: one row per rule, the evaluation order, licence choice, visibility."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from enclave.errors import (
    EnclaveError,
    JurisdictionRefused,
    LicenceExpired,
    LicenceNotYetValid,
    LicenceRevoked,
    LicenceSuspended,
    NotFound,
    RoleRequired,
    TierRefused,
)
from enclave.models import ColumnSpec, DatasetSpec, Licence, Principal, Tier
from enclave.policy.decide import (
    Decision,
    admits,
    authorize,
    licence_for,
    require,
    visible_datasets,
)
from enclave.query.plan import Aggregate, Comparison, GroupColumn, Not, Plan

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ALL_AGGS = frozenset({"count", "count_distinct_units", "sum", "avg", "quantile"})


def make_tier(name: str, level: int, **over: Any) -> Tier:
    base = Tier(
        name=name,
        description="",
        aggregates=ALL_AGGS,
        max_epsilon_per_query=Decimal("1.0"),
        budget_epsilon=Decimal("5"),
        budget_delta=Decimal("1e-6"),
        group_by_max_columns=2,
        group_by_max_groups=500,
        allowed_jurisdictions=("GB", "IE", "FR"),
        level=level,
    )
    return replace(base, **over)


TIERS = {
    "open": make_tier(
        "open", 0, aggregates=frozenset({"count", "count_distinct_units"}), filters=False,
        max_epsilon_per_query=Decimal("0.5"), group_by_max_columns=1, group_by_max_groups=50,
        allowed_jurisdictions=(),
    ),
    "standard": make_tier("standard", 1, aggregates=ALL_AGGS - {"quantile"}),
    "accredited": make_tier("accredited", 2, allow_undeclared_keys=True, group_by_max_columns=3),
}  # fmt: skip

SPEC = DatasetSpec(
    name="visits",
    description="",
    source="../data/visits.parquet",
    source_path="/nonexistent/visits.parquet",
    privacy_unit="person_id",
    max_rows_per_unit=5,
    min_tier=("standard",),
    allowed_jurisdictions=("GB", "IE"),
    columns=(
        ColumnSpec("person_id", "identifier"),
        ColumnSpec("age", "int", bounds=(0, 110)),
        ColumnSpec("sex", "category", values=("F", "M")),
        ColumnSpec("region", "category", values=tuple(f"r{i}" for i in range(30))),
        ColumnSpec("ward", "category", values=tuple(f"w{i}" for i in range(20))),
    ),
)

LICENCE = Licence(
    id="lic_1",
    subject="alice",
    organization="Uni",
    tier="standard",
    datasets=("visits",),
    purpose="research",
    jurisdiction="GB",
    valid_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    valid_until=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
)

ALICE = Principal(subject="alice", roles=frozenset({"researcher"}))

PLAN = Plan(
    dataset="visits",
    select=(GroupColumn("sex", "sex"), Aggregate("count", "n"), Aggregate("avg", "m", "age")),
    group_by=("sex",),
    where=Comparison("age", ">=", 65),
)


def decide(
    *,
    principal: Principal = ALICE,
    licence: Licence | None = LICENCE,
    tier: Tier | None | str = "from-licence",
    spec: DatasetSpec | None = SPEC,
    plan: Plan | None = PLAN,
    epsilon: Decimal | float | None = Decimal("0.5"),
    now: dt.datetime = NOW,
) -> Decision:
    if tier == "from-licence":
        tier = TIERS.get(licence.tier) if licence is not None else None
    assert not isinstance(tier, str)
    return authorize(principal, licence, tier, spec, plan, epsilon, now, tiers=TIERS)


def plan_with(**over: Any) -> Plan:
    return replace(PLAN, **over)


def test_the_baseline_is_allowed() -> None:
    decision = decide()
    assert decision == Decision(True, "allowed", None)
    require(decision)  # does not raise


# One row per rule: (case, keyword overrides for decide(), error class, reason fragment).
RULES: list[tuple[str, dict[str, Any], type[EnclaveError], str]] = [
    ("no researcher role",
     {"principal": Principal("alice", frozenset({"admin", "auditor"}))},
     RoleRequired, "researcher role"),
    ("unknown dataset", {"spec": None}, NotFound, "unknown dataset"),
    ("no licence", {"licence": None}, NotFound, "unknown dataset"),
    ("licence does not list the dataset",
     {"licence": replace(LICENCE, datasets=("other",))}, NotFound, "unknown dataset"),
    ("someone else's licence",
     {"licence": replace(LICENCE, subject="bob")}, NotFound, "unknown dataset"),
    ("suspended", {"licence": replace(LICENCE, status="suspended")},
     LicenceSuspended, "licence suspended"),
    ("revoked", {"licence": replace(LICENCE, status="revoked")},
     LicenceRevoked, "licence revoked"),
    ("not yet valid", {"now": LICENCE.valid_from - dt.timedelta(seconds=1)},
     LicenceNotYetValid, "licence not yet valid"),
    ("expired at valid_until", {"now": LICENCE.valid_until},
     LicenceExpired, "licence expired"),
    ("tier not defined", {"tier": None}, TierRefused, "tier is not defined"),
    ("tier object for another name", {"tier": TIERS["accredited"]},
     TierRefused, "tier is not defined"),
    ("dataset needs a higher tier",
     {"licence": replace(LICENCE, tier="open"), "plan": None, "epsilon": None},
     TierRefused, "tier 'open' may not query this dataset"),
    ("a min_tier list admits only those listed",
     {"spec": replace(SPEC, min_tier=("standard", "open")),
      "licence": replace(LICENCE, tier="accredited")},
     TierRefused, "tier 'accredited' may not query"),
    ("jurisdiction not in the tier", {"licence": replace(LICENCE, jurisdiction="US")},
     JurisdictionRefused, "not allowed by the tier"),
    ("jurisdiction not in the dataset", {"licence": replace(LICENCE, jurisdiction="FR")},
     JurisdictionRefused, "not allowed for this dataset"),
    ("aggregate kind not in the tier",
     {"plan": plan_with(select=(Aggregate("quantile", "q", "age", 0.5),), group_by=())},
     TierRefused, "aggregate quantile is not allowed"),
    ("aggregate over the privacy unit",
     {"plan": plan_with(select=(Aggregate("sum", "s", "person_id"),), group_by=())},
     TierRefused, "privacy unit cannot be aggregated"),
    ("WHERE without filters",
     {"licence": replace(LICENCE, tier="open"), "spec": replace(SPEC, min_tier=("open",)),
      "plan": plan_with(select=(Aggregate("count", "n"),), group_by=()),
      "epsilon": Decimal("0.1")},
     TierRefused, "filters (WHERE) are not allowed"),
    ("WHERE on the privacy unit", {"plan": plan_with(where=Not(Comparison("person_id", "=", 7)))},
     TierRefused, "privacy unit cannot be filtered"),
    ("too many group columns",
     {"plan": plan_with(group_by=("sex", "region", "ward"))},
     TierRefused, "at most 2 column(s)"),
    ("group by a non-category", {"plan": plan_with(group_by=("age",))},
     TierRefused, "GROUP BY age: only declared category columns"),
    ("group by the privacy unit",
     {"licence": replace(LICENCE, tier="accredited"), "plan": plan_with(group_by=("person_id",))},
     TierRefused, "GROUP BY person_id: not a groupable column"),
    ("group by an undeclared column", {"plan": plan_with(group_by=("postcode",))},
     TierRefused, "GROUP BY postcode: not a groupable column"),
    ("too many declared groups", {"plan": plan_with(group_by=("region", "ward"))},
     TierRefused, "600 groups; the tier allows 500"),
    ("zero epsilon", {"epsilon": Decimal(0)}, TierRefused, "epsilon must be a finite positive"),
    ("negative epsilon", {"epsilon": -0.5}, TierRefused, "epsilon must be a finite positive"),
    ("NaN epsilon", {"epsilon": float("nan")}, TierRefused, "epsilon must be a finite positive"),
    ("epsilon above the tier maximum", {"epsilon": Decimal("1.01")},
     TierRefused, "exceeds the tier's max_epsilon_per_query (1.0)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "over", "error", "reason"), RULES, ids=[r[0] for r in RULES])
def test_rule(case: str, over: dict[str, Any], error: type[EnclaveError], reason: str) -> None:
    decision = decide(**over)
    assert not decision.allowed
    assert decision.error is error
    assert reason in decision.reason
    with pytest.raises(error, match=None) as info:
        require(decision)
    assert info.value.detail == decision.reason


def test_unseen_and_unknown_datasets_answer_alike() -> None:
    unseen = decide(licence=replace(LICENCE, datasets=("other",)))
    unknown = decide(spec=None)
    assert unseen == unknown


@pytest.mark.parametrize(
    ("over", "allowed"),
    [
        ({"licence": replace(LICENCE, tier="accredited")}, True),  # higher level than standard
        ({"licence": replace(LICENCE, tier="accredited"), "plan": plan_with(group_by=("age",))},
         True),  # undeclared keys allowed in accredited
        ({"epsilon": Decimal("1.0")}, True),  # the maximum itself is allowed
        ({"epsilon": None}, True),  # None = the tier default
        ({"plan": None}, True),
        ({"now": LICENCE.valid_from}, True),  # valid_from is inclusive
        ({"spec": replace(SPEC, allowed_jurisdictions=None),
          "licence": replace(LICENCE, jurisdiction="FR")}, True),  # tier's rule alone
        ({"plan": plan_with(group_by=("region", "sex"))}, True),  # 60 groups
    ],
)  # fmt: skip
def test_allowed_edges(over: dict[str, Any], allowed: bool) -> None:
    assert decide(**over).allowed is allowed, decide(**over).reason


def test_the_first_failing_rule_wins() -> None:
    everything_wrong: dict[str, Any] = {
        "licence": replace(LICENCE, status="suspended", jurisdiction="US", tier="open"),
        "now": LICENCE.valid_until + dt.timedelta(days=1),
        "epsilon": Decimal(100),
    }
    order = [
        ({"principal": Principal("alice", frozenset())}, RoleRequired),
        ({}, LicenceSuspended),  # suspended beats expired, tier, jurisdiction, plan, epsilon
    ]
    for extra, error in order:
        assert decide(**{**everything_wrong, **extra}).error is error
    lic = everything_wrong["licence"]
    assert decide(**{**everything_wrong, "licence": replace(lic, status="active")}).reason == (
        "licence expired"
    )
    active_valid = {"licence": replace(lic, status="active"), "now": NOW, "epsilon": Decimal(100)}
    assert "may not query" in decide(**active_valid).reason  # tier admission before jurisdiction
    assert decide(**{**active_valid, "spec": replace(SPEC, min_tier=("open",))}).reason == (
        "jurisdiction US is not allowed for this dataset"  # open allows any; the dataset doesn't
    )
    # plan rules before epsilon, and the first plan rule in docstring order
    bad_plan = plan_with(
        select=(Aggregate("quantile", "q", "age", 0.5),), group_by=("age", "sex", "ward")
    )
    assert "aggregate quantile" in decide(plan=bad_plan, epsilon=Decimal(100)).reason
    assert "at most 2" in decide(plan=replace(bad_plan, select=()), epsilon=Decimal(100)).reason


def test_admits_by_level_and_by_list() -> None:
    assert admits(SPEC, TIERS["standard"], TIERS)
    assert admits(SPEC, TIERS["accredited"], TIERS)
    assert not admits(SPEC, TIERS["open"], TIERS)
    # a single min_tier that is not defined admits only itself (fails closed for the rest)
    ghost = replace(SPEC, min_tier=("ghost",))
    assert not admits(ghost, TIERS["accredited"], TIERS)
    assert admits(replace(SPEC, min_tier=("open", "accredited")), TIERS["open"], TIERS)


def lic(
    id_: str, status: str, created_day: int, datasets: tuple[str, ...] = ("visits",)
) -> Licence:
    return replace(
        LICENCE,
        id=id_,
        status=status,  # type: ignore[arg-type]
        datasets=datasets,
        created_at=dt.datetime(2026, 1, created_day, tzinfo=dt.UTC),
    )


def test_licence_for_prefers_active_then_newest() -> None:
    old_revoked = lic("a", "revoked", 1)
    new_suspended = lic("b", "suspended", 5)
    active = lic("c", "active", 2)
    other = lic("d", "active", 9, datasets=("other",))
    assert licence_for([old_revoked, new_suspended, active, other], "visits") == active
    assert licence_for([old_revoked, new_suspended, other], "visits") == new_suspended
    assert licence_for([other], "visits") is None
    assert licence_for([], "visits") is None


def test_visible_datasets() -> None:
    specs = [
        SPEC,
        replace(SPEC, name="open_data", min_tier=("open",)),
        replace(SPEC, name="gated", min_tier=("accredited",)),
        replace(SPEC, name="unlicensed", min_tier=("open",)),
        replace(SPEC, name="us_only", allowed_jurisdictions=("US",)),
    ]
    held = [replace(LICENCE, datasets=("visits", "open_data", "gated", "us_only"))]
    names = [s.name for s in visible_datasets(held, TIERS, specs, NOW)]
    assert names == ["open_data", "visits"]
    assert visible_datasets(held, TIERS, specs, LICENCE.valid_until) == []
    suspended = [replace(held[0], status="suspended")]
    assert visible_datasets(suspended, TIERS, specs, NOW) == []

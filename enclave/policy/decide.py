"""The one policy decision: may this principal, under this licence, ask this of this dataset?

``authorize`` evaluates the rules in this order; the first failure wins and is the reason:

1. the principal holds the ``researcher`` role                          (RoleRequired)
2. the dataset exists and a licence of the principal covers it          (NotFound)
   -- an unseen dataset answers exactly like an unknown one: "unknown dataset"
   -- a covered dataset that is retired answers "dataset retired"         (Forbidden)
   -- a covered dataset that is frozen answers "dataset frozen: <reason>" (DatasetFrozen)
      (an incident control; before the release cache, so a repeat is refused too)
      (no new queries or estimates; its history and the spend on it are kept)
3. the licence is active                      (LicenceSuspended / LicenceRevoked)
   -- "licence suspended" / "licence revoked"
4. ``now`` lies in [valid_from, valid_until)   (LicenceNotYetValid / LicenceExpired)
   -- "licence not yet valid" / "licence expired"
   (each a ``LicenceRefused`` with its own problem type: the caller holds a licence for the
   dataset, so saying which rule failed reveals nothing it could not know)
5. the licence's tier is defined                                        (TierRefused)
6. the dataset admits the tier: a single ``min_tier`` admits that tier and every tier of
   a higher ``level``; a list admits exactly the tiers listed           (TierRefused)
7. the licence jurisdiction is allowed by the tier (empty list = any), then by the dataset
   (absent = the tier's rule alone)                                     (JurisdictionRefused)
8. when a plan is given: every aggregate kind is in ``tier.aggregates``; WHERE only if
   ``tier.filters``; the privacy unit is never aggregated, filtered or grouped; at most
   ``max_columns`` group columns; group columns are declared categories unless
   ``allow_undeclared_keys``; the product of declared group sizes is at most ``max_groups``
                                                                        (TierRefused)
9. when an epsilon is given: ``min_epsilon_per_query`` <= epsilon <= ``max_epsilon_per_query``
   (TierRefused)

Budget is not decided here: ``ledger/budget.py`` prices the plan and checks what remains.
Reasons name the rule, never a data value; they feed both the problem ``detail`` and audit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from enclave.errors import (
    DatasetFrozen,
    EnclaveError,
    Forbidden,
    JurisdictionRefused,
    LicenceExpired,
    LicenceNotYetValid,
    LicenceRevoked,
    LicenceSuspended,
    NotFound,
    RoleRequired,
    TierRefused,
)
from enclave.models import DatasetSpec, Licence, Principal, Tier
from enclave.query.plan import Plan

UNKNOWN_DATASET = "unknown dataset"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    error: type[EnclaveError] | None = None


ALLOWED = Decision(True, "allowed")


def _deny(error: type[EnclaveError], reason: str) -> Decision:
    return Decision(False, reason, error)


def require(decision: Decision) -> None:
    """Raise the decision's error with its reason unless it allows."""
    if not decision.allowed:
        raise (decision.error or EnclaveError)(decision.reason)


def licence_for(licences: Iterable[Licence], dataset: str) -> Licence | None:
    """The active licence covering ``dataset``; else the newest other one covering it; else None.

    Returning a suspended or revoked licence (rather than None) lets the caller say
    "licence suspended" instead of pretending the dataset does not exist.
    """
    covering = [lic for lic in licences if dataset in lic.datasets]
    for lic in covering:
        if lic.status == "active":
            return lic
    if not covering:
        return None
    return max(covering, key=lambda lic: lic.created_at or lic.valid_from)


def admits(spec: DatasetSpec, tier: Tier, tiers: Mapping[str, Tier]) -> bool:
    """Whether the dataset's ``min_tier`` admits ``tier`` (see rule 6)."""
    if len(spec.min_tier) > 1:
        return tier.name in spec.min_tier
    floor = tiers.get(spec.min_tier[0])
    if tier.name == spec.min_tier[0]:
        return True
    return floor is not None and tier.level > floor.level


def authorize(
    principal: Principal,
    licence: Licence | None,
    tier: Tier | None,
    spec: DatasetSpec | None,
    plan: Plan | None,
    epsilon: Decimal | float | None,
    now: dt.datetime,
    *,
    tiers: Mapping[str, Tier],
) -> Decision:
    """Decide a request (order in the module docstring). ``tiers`` gives the levels of rule 6.

    ``licence`` is what ``licence_for`` picked for the dataset; ``tier`` the licence's tier
    from the registry; ``epsilon`` None: not known yet (an accuracy request, whose chosen
    epsilon lies within the tier's bounds by construction), so the epsilon rule is skipped.
    """
    if not principal.has("researcher"):
        return _deny(RoleRequired, "the researcher role is required")
    if spec is None or licence is None:
        return _deny(NotFound, UNKNOWN_DATASET)
    if licence.subject != principal.subject:
        return _deny(NotFound, UNKNOWN_DATASET)
    decision = _licence_rules(licence, tier, spec, now, tiers)
    if not decision.allowed:
        return decision
    assert tier is not None  # noqa: S101 - checked by _licence_rules
    if plan is not None:
        decision = _plan_rules(plan, tier, spec)
        if not decision.allowed:
            return decision
    if epsilon is not None:
        return _epsilon_rule(epsilon, tier)
    return ALLOWED


def _licence_rules(
    licence: Licence,
    tier: Tier | None,
    spec: DatasetSpec,
    now: dt.datetime,
    tiers: Mapping[str, Tier],
) -> Decision:
    if spec.name not in licence.datasets:
        return _deny(NotFound, UNKNOWN_DATASET)
    if spec.retired:
        return _deny(Forbidden, "dataset retired")
    if spec.frozen is not None:
        return _deny(DatasetFrozen, f"dataset frozen: {spec.frozen}")
    if licence.status != "active":
        refused = LicenceRevoked if licence.status == "revoked" else LicenceSuspended
        return _deny(refused, f"licence {licence.status}")
    if now < licence.valid_from:
        return _deny(LicenceNotYetValid, "licence not yet valid")
    if now >= licence.valid_until:
        return _deny(LicenceExpired, "licence expired")
    if tier is None or tier.name != licence.tier:
        return _deny(TierRefused, "the licence's tier is not defined")
    if not admits(spec, tier, tiers):
        return _deny(TierRefused, f"tier '{tier.name}' may not query this dataset")
    juris = licence.jurisdiction
    if not tier_allows(tier, juris):
        return _deny(JurisdictionRefused, f"jurisdiction {juris} is not allowed by the tier")
    if not dataset_allows(spec, juris):
        return _deny(JurisdictionRefused, f"jurisdiction {juris} is not allowed for this dataset")
    return ALLOWED


def tier_allows(tier: Tier, jurisdiction: str) -> bool:
    """Rule 7, the tier's half: an empty ``allowed_jurisdictions`` allows any."""
    return not tier.allowed_jurisdictions or jurisdiction in tier.allowed_jurisdictions


def dataset_allows(spec: DatasetSpec, jurisdiction: str) -> bool:
    """Rule 7, the dataset's half: absent ``allowed_jurisdictions`` leaves the tier's rule."""
    return spec.allowed_jurisdictions is None or jurisdiction in spec.allowed_jurisdictions


def _plan_rules(plan: Plan, tier: Tier, spec: DatasetSpec) -> Decision:
    unit = spec.privacy_unit.lower()
    for agg in plan.aggregates:
        if agg.kind not in tier.aggregates:
            return _deny(TierRefused, f"aggregate {agg.kind} is not allowed by the tier")
        if agg.column is not None and agg.column.lower() == unit:
            return _deny(TierRefused, "the privacy unit cannot be aggregated")
    if plan.where is not None:
        if not tier.filters:
            return _deny(TierRefused, "filters (WHERE) are not allowed by the tier")
        if any(c.lower() == unit for c in plan.filter_columns()):
            return _deny(TierRefused, "the privacy unit cannot be filtered on")
    max_columns = tier.group_by_max_columns
    if len(plan.group_by) > max_columns:
        return _deny(TierRefused, f"GROUP BY allows at most {max_columns} column(s) in this tier")
    groups = 1
    for name in plan.group_by:
        col = spec.column(name)
        if col is None or col.type == "identifier":
            return _deny(TierRefused, f"GROUP BY {name}: not a groupable column")
        if col.type == "category" and col.values:
            groups *= len(col.values)
        elif not tier.allow_undeclared_keys:
            return _deny(
                TierRefused, f"GROUP BY {name}: only declared category columns in this tier"
            )
    if groups > tier.group_by_max_groups:
        return _deny(
            TierRefused,
            f"GROUP BY would release {groups} groups; the tier allows {tier.group_by_max_groups}",
        )
    return ALLOWED


def _epsilon_rule(epsilon: Decimal | float, tier: Tier) -> Decision:
    value = epsilon if isinstance(epsilon, Decimal) else Decimal(repr(float(epsilon)))
    if not value.is_finite() or not math.isfinite(float(value)) or value <= 0:
        return _deny(TierRefused, "epsilon must be a finite positive number")
    if value < tier.min_epsilon_per_query:
        return _deny(
            TierRefused,
            f"epsilon is below the tier's min_epsilon_per_query ({tier.min_epsilon_per_query})",
        )
    if value > tier.max_epsilon_per_query:
        return _deny(
            TierRefused,
            f"epsilon exceeds the tier's max_epsilon_per_query ({tier.max_epsilon_per_query})",
        )
    return ALLOWED


def visible_datasets(
    licences: Iterable[Licence],
    tiers: Mapping[str, Tier],
    specs: Iterable[DatasetSpec],
    now: dt.datetime,
) -> list[DatasetSpec]:
    """Datasets an active, valid licence covers and whose tier and jurisdiction rules admit
    (rules 2-7), sorted by name: what ``GET /v1/datasets`` lists. A frozen dataset stays
    listed (with its ``frozen`` reason), so its researchers see why their queries are refused."""
    held = list(licences)
    out: list[DatasetSpec] = []
    for spec in sorted(specs, key=lambda s: s.name):
        licence = licence_for(held, spec.name)
        if licence is None:
            continue
        tier = tiers.get(licence.tier)
        unfrozen = replace(spec, frozen=None)  # listed as it would be, with its reason shown
        if _licence_rules(licence, tier, unfrozen, now, tiers).allowed:
            out.append(spec)
    return out

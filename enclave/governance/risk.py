"""What counts as raising risk: one pure classification of a change, old object against new.

``risks(before, after)`` returns the reasons a change raises risk, one short text per rule
that fires (empty: the change keeps or lowers risk and applies directly). With
``governance.four_eyes`` on, a change with any reason becomes a proposal that a second admin
must approve; unfreezing a dataset and reactivating an organisation always do.

The rules, by object (``before`` None: the object is new):

Tier
- a new tier;
- ``budget.epsilon`` or ``budget.delta`` raised, or ``budget.period_days`` set shorter (or
  set where the budget was for the licence's lifetime: it renews);
- ``max_epsilon_per_query`` raised; ``rate_limit_per_minute`` raised;
- ``group_by.max_columns`` or ``group_by.max_groups`` raised;
- ``min_noisy_count`` lowered;
- ``group_by.allow_undeclared_keys`` turned on; ``filters`` turned on; an aggregate kind added;
- a jurisdiction opened (``allowed_jurisdictions`` gains a code, or becomes empty = any);
- ``level`` raised (the tier then reaches datasets whose ``min_tier`` is a lower tier);
- DP synthetic releases allowed (``synthetic.allowed`` turned on) or their cap raised;
- ``organisation_budget`` raised, or removed (no limit on an organisation's spend).

Dataset
- a new dataset;
- a jurisdiction opened (``allowed_jurisdictions`` gains a code, or is removed = the tier's
  rule alone);
- ``min_tier`` changed (who may query it: any change is treated as opening it);
- a column added, or the ``source`` changed (new data exposed);
- ``total_budget`` raised, or removed (no limit on everyone's spend);
- restored from ``retired``; unfrozen.

Licence
- reactivated (``suspended`` → ``active``);
- a dataset added; the tier, the jurisdiction or the organisation changed (its spend then
  counts against another organisation's budget);
- the validity window widened (``valid_from`` earlier or ``valid_until`` later).

New licence (``reissued``: the subject's licences are the caller's to read)
- reissued: its subject holds or has held a licence (any status) on one of its datasets, so
  a revoke-and-reissue cannot raise a tier, add a dataset or renew a licence-layer budget
  alone. A subject's first licence on those datasets is the steward's everyday work and
  applies directly.

A budget grant always raises risk (``GRANT_RISK``). Nothing here reads the store or the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from enclave.ledger.grid import Amount
from enclave.models import DatasetSpec, Licence, Tier

GRANT_RISK = "a budget grant raises the licence's limit"


def risks(
    before: Tier | DatasetSpec | Licence | None, after: Tier | DatasetSpec | Licence
) -> list[str]:
    """Every reason the change from ``before`` to ``after`` raises risk (empty: it does not)."""
    if isinstance(after, Tier):
        assert before is None or isinstance(before, Tier)  # noqa: S101 (same kind)
        return _tier(before, after)
    if isinstance(after, DatasetSpec):
        assert before is None or isinstance(before, DatasetSpec)  # noqa: S101
        return _dataset(before, after)
    assert isinstance(before, Licence)  # noqa: S101 (a new licence: ``reissued``)
    return _licence(before, after)


def reissued(new: Licence, held: Sequence[Licence]) -> list[str]:
    """Why issuing ``new`` raises risk: ``held`` (the subject's licences, any status) covers
    one of its datasets. Empty: a first licence on these datasets."""
    wanted = set(new.datasets)
    earlier = [
        f"{lic.id} on {', '.join(sorted(wanted.intersection(lic.datasets)))} ({lic.status})"
        for lic in sorted(held, key=lambda lic: lic.id)
        if lic.subject == new.subject and lic.id != new.id and wanted.intersection(lic.datasets)
    ]
    if not earlier:
        return []
    return [f"licence reissued: {new.subject!r} has held {' and '.join(earlier)}"]


def _raised(name: str, old: int | Decimal, new: int | Decimal) -> list[str]:
    return [f"{name} raised from {old} to {new}"] if new > old else []


def _budget_raised(name: str, old: Amount | None, new: Amount | None) -> list[str]:
    """A shared budget (``None``: no limit) raised on either part, or removed."""
    if old is None:
        return []  # no limit already
    if new is None:
        return [f"{name} removed (no limit)"]
    if new.epsilon > old.epsilon or new.delta > old.delta:
        return [
            f"{name} raised from epsilon {old.epsilon_decimal}, delta {old.delta_decimal} "
            f"to epsilon {new.epsilon_decimal}, delta {new.delta_decimal}"
        ]
    return []


def _opened(name: str, old: tuple[str, ...] | None, new: tuple[str, ...] | None) -> list[str]:
    """Jurisdictions: ``None`` or ``()`` means any (no restriction of its own)."""
    if not old:
        return []  # any already
    if not new:
        return [f"{name} opened to any jurisdiction"]
    added = sorted(set(new) - set(old))
    return [f"{name} opened to {', '.join(added)}"] if added else []


def _tier(before: Tier | None, after: Tier) -> list[str]:
    if before is None:
        return [f"new tier {after.name!r}"]
    out = _raised("budget.epsilon", before.budget_epsilon, after.budget_epsilon)
    out += _raised("budget.delta", before.budget_delta, after.budget_delta)
    if after.period_days is not None and (
        before.period_days is None or after.period_days < before.period_days
    ):
        out.append(
            f"budget.period_days shortened from {before.period_days or 'lifetime'} "
            f"to {after.period_days} (the budget renews sooner)"
        )
    out += _raised(
        "max_epsilon_per_query", before.max_epsilon_per_query, after.max_epsilon_per_query
    )
    out += _raised(
        "rate_limit_per_minute", before.rate_limit_per_minute, after.rate_limit_per_minute
    )
    out += _raised("group_by.max_columns", before.group_by_max_columns, after.group_by_max_columns)
    out += _raised("group_by.max_groups", before.group_by_max_groups, after.group_by_max_groups)
    if after.min_noisy_count < before.min_noisy_count:
        out.append(
            f"min_noisy_count lowered from {before.min_noisy_count} to {after.min_noisy_count}"
        )
    if after.allow_undeclared_keys and not before.allow_undeclared_keys:
        out.append("group_by.allow_undeclared_keys turned on")
    if after.filters and not before.filters:
        out.append("filters turned on")
    if added := sorted(after.aggregates - before.aggregates):
        out.append(f"aggregates added: {', '.join(added)}")
    out += _opened(
        "allowed_jurisdictions", before.allowed_jurisdictions, after.allowed_jurisdictions
    )
    out += _raised("level", before.level, after.level)
    if after.synthetic_allowed and not before.synthetic_allowed:
        out.append("synthetic.allowed turned on")
    out += _raised(
        "synthetic.max_epsilon", before.synthetic_max_epsilon, after.synthetic_max_epsilon
    )
    out += _budget_raised(
        "organisation_budget", before.organisation_budget, after.organisation_budget
    )
    return out


def _dataset(before: DatasetSpec | None, after: DatasetSpec) -> list[str]:
    if before is None:
        return [f"new dataset {after.name!r}"]
    out = _opened(
        "allowed_jurisdictions", before.allowed_jurisdictions, after.allowed_jurisdictions
    )
    if after.min_tier != before.min_tier:
        out.append("min_tier changed (who may query the dataset)")
    old_cols = {c.name for c in before.columns}
    if added := sorted(c.name for c in after.columns if c.name not in old_cols):
        out.append(f"columns added: {', '.join(added)}")
    if after.source != before.source:
        out.append("source changed")
    out += _budget_raised("total_budget", before.total_budget, after.total_budget)
    if before.retired and not after.retired:
        out.append("restored from retired")
    if before.frozen is not None and after.frozen is None:
        out.append("unfrozen")
    return out


def _licence(before: Licence, after: Licence) -> list[str]:
    out: list[str] = []
    if before.status == "suspended" and after.status == "active":
        out.append("licence reactivated")
    if added := sorted(set(after.datasets) - set(before.datasets)):
        out.append(f"datasets added: {', '.join(added)}")
    if after.tier != before.tier:
        out.append(f"tier changed from {before.tier!r} to {after.tier!r}")
    if after.jurisdiction != before.jurisdiction:
        out.append(f"jurisdiction changed from {before.jurisdiction} to {after.jurisdiction}")
    if after.organization != before.organization:
        out.append(f"organisation changed from {before.organization!r} to {after.organization!r}")
    if after.valid_from < before.valid_from or after.valid_until > before.valid_until:
        out.append("validity window widened")
    return out

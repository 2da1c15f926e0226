"""A licence's budget per dataset: the tier's budget plus its grants (top-ups), and what is
spent and left of it. Shared by the query pipeline, ``GET /v1/budget`` and the admin routes.

Rules:
- the limit of a licence for a dataset is the tier's budget plus the grants given for that
  licence and dataset in the current budget period (``ledger/budget.py``: the whole lifetime
  when the tier has no ``period_days``; with a period, a grant tops up the period it is given
  in and lapses with it, as the spend does);
- a grant has a layer: ``licence`` (default) tops up this licence; ``subject`` tops up the
  subject's limit across all their licences (``budget_layers.py``), e.g. for a reissue;
- a grant is positive, on the ledger's grid, within its bounds, for a dataset the licence
  covers, and carries a reason;
- a grant only ever *raises* a limit, which is what makes grants safe to read outside the
  debit's transaction: a query reads the grants before its debit, and the debit re-checks the
  spend against that limit inside its own transaction. A grant committed in between is simply
  not counted yet (the limit read is lower than the true one, never higher), so no concurrent
  interleaving can overspend. The store keeps each grant with its audit record
  (``store/grants.py``);
- amounts in admin answers are exact decimal text, as in the audit summary.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from enclave.audit.log import decimal_text
from enclave.errors import BadRequest, Conflict, NotFound
from enclave.inputs import MAX_TEXT_CHARS, invalid, read_string
from enclave.ledger.budget import period_window, tier_limit
from enclave.ledger.grid import MAX_DELTA_UNITS, MAX_EPSILON_UNITS, Amount
from enclave.models import Licence, Tier, iso
from enclave.policy.fields import Problems, read_delta, read_epsilon

if TYPE_CHECKING:
    from enclave.store.base import Store

GrantLayer = Literal["licence", "subject"]
GRANT_LAYERS: tuple[GrantLayer, ...] = ("licence", "subject")
GRANT_FIELDS = frozenset({"dataset", "epsilon", "delta", "reason", "layer"})
#: what the ledger can hold as a limit: epsilon at most 10**6, delta below 1
LEDGER_BOUND = Amount(MAX_EPSILON_UNITS, MAX_DELTA_UNITS - 1)


@dataclass(frozen=True)
class Grant:
    """One top-up for ``dataset``, by ``actor``, for ``reason``, given through
    ``licence_id``: of that licence's limit (``layer`` licence) or of its subject's across
    all their licences (``layer`` subject; ``subject`` is set from the licence when stored).
    ``audit_seq`` and ``created_at`` come from its audit record (0 and "" before storing)."""

    licence_id: str
    dataset: str
    amount: Amount
    reason: str
    actor: str
    audit_seq: int = 0
    created_at: str = ""
    layer: GrantLayer = "licence"
    subject: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "licence_id": self.licence_id,
            "dataset": self.dataset,
            "epsilon": decimal_text(self.amount.epsilon_decimal),
            "delta": decimal_text(self.amount.delta_decimal),
            "layer": self.layer,
            "subject": self.subject,
            "reason": self.reason,
            "actor": self.actor,
            "created_at": self.created_at,
            "audit_seq": self.audit_seq,
        }


def granted(
    grants: Iterable[Grant],
    dataset: str,
    since: dt.datetime | None,
    layer: GrantLayer = "licence",
) -> Amount:
    """The sum of ``dataset``'s ``layer`` grants given at or after ``since`` (None: all)."""
    start = None if since is None else iso(since)  # compared as text, as the ledger's ``ts``
    total = Amount()
    for g in grants:
        if g.layer != layer:
            continue
        if g.dataset == dataset and (start is None or g.created_at >= start):
            total = total.plus(g.amount)
    return total


def check_grant(
    licence: Licence | None, grant: Grant, existing: Sequence[Grant], ceiling: Amount
) -> None:
    """The rules the store re-checks inside the grant's transaction, against the licence and
    the grants read there (the handler checked them first)."""
    if licence is None:
        raise NotFound("no such licence")
    if licence.status == "revoked":
        raise Conflict("a revoked licence cannot be granted budget")
    if grant.dataset not in licence.datasets:
        raise BadRequest(
            f"dataset: the licence does not cover {grant.dataset!r}",
            [f"dataset: the licence does not cover {grant.dataset!r}"],
        )
    total = granted(existing, grant.dataset, None, grant.layer).plus(grant.amount)
    if not total.within(ceiling):
        what = "the licence's limit would pass the ledger's bounds (epsilon 1000000, delta < 1)"
        raise BadRequest(f"epsilon: {what}", [f"epsilon: {what}"])


def grant_from_json(body: Any, licence: Licence, actor: str) -> Grant:
    """Validate a grant request for ``licence``; ``BadRequest`` listing every problem."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    p = Problems("")
    for key in sorted(str(k) for k in set(body) - GRANT_FIELDS):
        p.add(key, "unknown field")
    dataset = body.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        p.add("dataset", "required, the name of a dataset the licence covers")
    elif dataset not in licence.datasets:
        p.add("dataset", "the licence does not cover this dataset")
    epsilon = read_epsilon(p, body.get("epsilon"), "epsilon") if "epsilon" in body else None
    if "epsilon" not in body:
        p.add("epsilon", "required")
    delta = read_delta(p, body["delta"], "delta") if body.get("delta") is not None else None
    layer = body.get("layer", "licence")
    if layer not in GRANT_LAYERS:
        p.add("layer", "must be licence (this licence's limit) or subject (the subject's limit)")
    problems = list(p.items)
    reason = read_string(problems, body.get("reason"), "reason", MAX_TEXT_CHARS)
    if problems:
        raise invalid(problems)
    assert isinstance(dataset, str) and epsilon is not None and reason is not None  # noqa: S101
    return Grant(
        licence_id=licence.id,
        dataset=dataset,
        amount=Amount.limit(epsilon, delta or 0),
        reason=reason,
        actor=actor,
        layer="subject" if layer == "subject" else "licence",
        subject=licence.subject,
    )


def ceiling(tier: Tier | None) -> Amount:
    """How much may be granted in all for one dataset of a licence on ``tier``."""
    base = tier_limit(tier) if tier is not None else Amount()
    return Amount(LEDGER_BOUND.epsilon - base.epsilon, max(0, LEDGER_BOUND.delta - base.delta))


async def licence_limit(
    store: Store, licence: Licence, tier: Tier, dataset: str, since: dt.datetime | None
) -> Amount:
    """The licence's limit for ``dataset`` in the period starting ``since``."""
    return tier_limit(tier).plus(granted(await store.grants(licence.id), dataset, since))


@dataclass(frozen=True)
class DatasetBudget:
    dataset: str
    tier_budget: Amount
    granted: Amount
    spent: Amount
    since: dt.datetime | None
    renews: dt.datetime | None

    @property
    def limit(self) -> Amount:
        return self.tier_budget.plus(self.granted)

    def to_json(self) -> dict[str, Any]:
        left = self.spent.left_of(self.limit)
        out: dict[str, Any] = {"dataset": self.dataset}
        for name, amount in (
            ("tier_budget", self.tier_budget),
            ("granted", self.granted),
            ("limit", self.limit),
            ("spent", self.spent),
            ("remaining", left),
        ):
            out[f"epsilon_{name}"] = decimal_text(amount.epsilon_decimal)
            out[f"delta_{name}"] = decimal_text(amount.delta_decimal)
        out["period_start"] = iso(self.since) if self.since is not None else None
        out["renews"] = iso(self.renews) if self.renews is not None else None
        return out


async def licence_budget(
    store: Store, licence: Licence, tier: Tier | None, now: dt.datetime
) -> list[DatasetBudget]:
    """Spent, granted and remaining per dataset of ``licence`` (a missing tier: budget 0)."""
    since, renews = period_window(licence.valid_from, tier.period_days if tier else None, now)
    base = tier_limit(tier) if tier is not None else Amount()
    grants = await store.grants(licence.id)
    return [
        DatasetBudget(
            dataset=name,
            tier_budget=base,
            granted=granted(grants, name, since),
            spent=await store.spent(licence.id, name, since),
            since=since,
            renews=renews,
        )
        for name in licence.datasets
    ]

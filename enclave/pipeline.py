"""The query flow, top to bottom: the only module that knows the order of the stages.

``run_query`` and ``estimate_query`` share every step up to the release cache:

1. resolve: the dataset (registry), the caller's licence for it (store), its tier (registry)
2. authorize the licence (role, validity, tier, jurisdiction) and count it against the
   licence's rate limit, before the SQL is parsed
3. parse the SQL into a Plan off the event loop (user SQL is never executed; cached per SQL
   text and spec), then authorize the plan (plan rules, epsilon cap)
4. (the per-address and per-subject limits were counted by the web middleware)
5. ``check_plan``: every refusal pricing could raise (so a cached repeat meets them too)
6. release cache: a repeat of the same plan, dataset version and epsilon costs nothing; it is
   answered from the stored release and is never priced (its cost and accuracy are in it)
7. otherwise price the plan with OpenDP (cost known before any data is touched; cached per
   plan, spec, tier, epsilon: public inputs only)
8. budget pre-check (refuse before touching data)
--- estimate stops here; run_query goes on ---
9. prepare the dataset version (bounding: the same for every query), compile the plan
--- after this line data has been read: ``charged.read_and_release`` ---
10. run the SQL off the loop (timeout), add noise, suppress small groups, order/limit
11. one store transaction: re-check and debit the budget, keep the release, append the audit
    record; only then is the result returned. A failure anywhere in 10 is charged the same
    epsilon and delta, in the same kind of transaction, and answers a fixed, data-free error.

Every refusal raised here is audited by ``web/problem.py`` with what ``actx`` knows by then.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from enclave.audit.context import AuditContext
from enclave.charged import ChargedQuery, read_and_release
from enclave.dp.accuracy import bounding_note
from enclave.dp.mechanisms import PricedPlan, check_plan, price_plan
from enclave.dummy import DummyRequest, dummy_detail, render_dummy
from enclave.errors import BadRequest, BudgetExhausted, EnclaveError, NotFound
from enclave.ids import new_id
from enclave.ledger.budget import period_window, tier_limit
from enclave.ledger.grid import MAX_EPSILON, Amount, epsilon_up, epsilon_value
from enclave.models import DatasetSpec, Licence, Principal, Release, Tier, iso
from enclave.policy.decide import authorize, licence_for, require
from enclave.query.compile import compile_plan
from enclave.query.parse import parse_query
from enclave.query.plan import Plan
from enclave.services import Services
from enclave.store.base import Charge


@dataclass(frozen=True)
class QueryRequest:
    dataset: str
    sql: str
    epsilon: Decimal | None = None

    @classmethod
    def from_json(cls, body: Any) -> QueryRequest:
        """Validate a query body; one 400 lists every problem. ``epsilon`` is rounded *up* to
        the ledger's grid (``ledger/grid.py``): what is charged is what is calibrated."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        problems: list[str] = []
        unknown = sorted(set(body) - {"dataset", "sql", "epsilon"})
        if unknown:
            problems.append(f"unknown field(s): {', '.join(map(str, unknown))}")
        dataset, sql, eps = body.get("dataset"), body.get("sql"), body.get("epsilon")
        if not isinstance(dataset, str) or not dataset:
            problems.append("'dataset' must be a non-empty string")
        if not isinstance(sql, str) or not sql.strip():
            problems.append("'sql' must be a non-empty string")
        if any(isinstance(t, str) and not _is_utf8(t) for t in (sql, dataset)):
            problems.append("the body holds a lone surrogate, which is not valid Unicode text")
        epsilon = None if eps is None else _grid_epsilon(eps, problems)
        if problems:
            raise BadRequest("; ".join(problems))
        assert isinstance(dataset, str) and isinstance(sql, str)  # noqa: S101 (checked above)
        return cls(dataset=dataset, sql=sql, epsilon=epsilon)


def _grid_epsilon(eps: Any, problems: list[str]) -> Decimal | None:
    """A requested epsilon on the grid, rounded up; bounded *before* any conversion (a huge
    integer never becomes a float or a long Decimal)."""
    what = f"'epsilon' must be a positive number no larger than {MAX_EPSILON}"
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        problems.append(what)
        return None
    if (isinstance(eps, float) and not math.isfinite(eps)) or not 0 < eps <= MAX_EPSILON:
        problems.append(what)
        return None
    return epsilon_value(epsilon_up(Decimal(repr(eps) if isinstance(eps, float) else eps)))


@dataclass(frozen=True)
class Admitted:
    """Everything decided before any data is touched. ``priced`` is None for a cached repeat."""

    licence: Licence
    tier: Tier
    spec: DatasetSpec
    plan: Plan
    epsilon: Decimal
    priced: PricedPlan | None
    cache_key: str
    cached: dict[str, Any] | None
    since: Any
    renews: Any
    spent: Amount  # before this query, in grid units
    limit: Amount  # the tier's budget, in grid units


async def estimate_query(
    svc: Services, principal: Principal, req: QueryRequest, actx: AuditContext
) -> dict[str, Any]:
    adm = await _admit(svc, principal, req, actx)
    plan_eps, plan_delta, accuracy = _plan_cost(adm)
    cost = Amount.charge(plan_eps, plan_delta)
    fits = adm.cached is not None or adm.spent.plus(cost).within(adm.limit)
    record = await svc.store.append(
        actx.draft("ok", epsilon=0.0, detail={"estimated_epsilon": float(plan_eps)})
    )
    actx.audited = True
    return {
        "dataset": adm.spec.name,
        "epsilon": cost.epsilon_float if adm.cached is None else 0.0,
        "delta": cost.delta_float if adm.cached is None else 0.0,
        "plan_epsilon": cost.epsilon_float,
        "plan_delta": cost.delta_float,
        "accuracy": accuracy,
        "cached": adm.cached is not None,
        "within_budget": fits,
        "budget": _budget_json(adm.spent.left_of(adm.limit), adm.renews),
        "audit_seq": record.seq,
        "bounding": bounding_note(adm.spec),
    }


async def run_query(
    svc: Services, principal: Principal, req: QueryRequest, actx: AuditContext
) -> Release:
    adm = await _admit(svc, principal, req, actx)
    query_id = new_id("q")
    actx.detail["query_id"] = query_id
    if adm.cached is not None:
        return await _replay(svc, adm, actx, query_id)
    if adm.priced is None:  # _admit prices whatever the cache does not answer
        raise EnclaveError("the query was not priced")  # pragma: no cover
    priced = adm.priced
    cost = Amount.charge(priced.epsilon, priced.delta)  # rounded up: the charge >= OpenDP's
    _require_budget(adm, cost)
    # bounding: the same for every query
    table = await svc.warehouse.prepare(adm.spec, wait_s=svc.config.server.query_timeout_s)
    charged = ChargedQuery(
        plan=adm.plan,
        spec=adm.spec,
        tier=adm.tier,
        priced=priced,
        compiled=compile_plan(adm.plan, adm.spec, table),
        charge=Charge(adm.licence.id, adm.spec.name, cost, adm.limit, adm.since),
        cache_key=adm.cache_key,
        query_id=query_id,
    )
    # ---- after this line data has been read: every outcome is charged (charged.py) ----
    stored, debited = await read_and_release(svc, charged, actx)
    # From here on nothing can raise: the new total came out of the transaction.
    left = debited.spent.left_of(adm.limit)
    return _answer(adm, stored, query_id, False, left, debited.record.seq, {})


def _require_budget(adm: Admitted, cost: Amount) -> None:
    """The budget pre-check: refuse before any data is read (the store re-checks)."""
    if not adm.spent.plus(cost).within(adm.limit):
        left = adm.spent.left_of(adm.limit)
        raise BudgetExhausted(
            f"this query costs epsilon {cost.epsilon_decimal} and delta {cost.delta_decimal}; "
            f"remaining epsilon {left.epsilon_decimal}, delta {left.delta_decimal}"
        )


async def _admit(
    svc: Services, principal: Principal, req: QueryRequest, actx: AuditContext
) -> Admitted:
    now = svc.clock()
    actx.sql = req.sql
    spec, licence, tier, tiers = await resolve_dataset(svc, principal, req.dataset, actx)
    # the licence's limit comes before parsing: a flood of long SQL is refused cheaply
    await svc.limiter.hit({f"lic:{licence.id}": tier.rate_limit_per_minute})
    epsilon = req.epsilon if req.epsilon is not None else tier.max_epsilon_per_query
    actx.epsilon = float(epsilon)
    plan = await asyncio.to_thread(parse_query, req.sql, spec)  # parsing long SQL takes ms
    require(authorize(principal, licence, tier, spec, plan, epsilon, now, tiers=tiers))
    n_groups = declared_group_count(plan, spec)
    check_plan(plan, spec, tier, epsilon, n_groups)
    cache_key = _cache_key(plan, spec, epsilon)
    cached = await svc.store.get_cached(licence.id, cache_key)
    priced = None if cached is not None else price_plan(plan, spec, tier, epsilon, n_groups)
    since, renews = period_window(licence.valid_from, tier.period_days, now)
    spent = await svc.store.spent(licence.id, spec.name, since)
    return Admitted(
        licence=licence,
        tier=tier,
        spec=spec,
        plan=plan,
        epsilon=epsilon,
        priced=priced,
        cache_key=cache_key,
        cached=cached,
        since=since,
        renews=renews,
        spent=spent,
        limit=tier_limit(tier),
    )


async def resolve_dataset(
    svc: Services, principal: Principal, name: str, actx: AuditContext
) -> tuple[DatasetSpec, Licence, Tier, dict[str, Tier]]:
    """The dataset, the caller's licence for it and its tier, or the refusal (stage 1).

    A dataset no licence of the caller covers answers 404 exactly as an unknown one; a
    licence that covers it but cannot be used now says why (``policy/decide.py``).
    """
    actx.dataset = name
    spec = await svc.registry.dataset(name)
    licences = await svc.store.licences_for(principal.subject)
    licence = licence_for(licences, spec.name if spec else name)
    if spec is None or licence is None:
        raise NotFound(f"unknown dataset '{name}'")
    actx.dataset = spec.name
    actx.licence_id = licence.id
    actx.tier = licence.tier
    tiers = await svc.registry.tier_map()
    tier = tiers.get(licence.tier)
    require(authorize(principal, licence, tier, spec, None, None, svc.clock(), tiers=tiers))
    if tier is None:  # authorize refuses a missing tier; this keeps the types honest
        raise NotFound(f"unknown dataset '{name}'")
    return spec, licence, tier, tiers


async def dummy_data(
    svc: Services,
    principal: Principal,
    name: str,
    read_request: Callable[[], DummyRequest],
    actx: AuditContext,
) -> tuple[DatasetSpec, DummyRequest, bytes]:
    """Dummy rows for a dataset the caller may query (access first, so an unseen dataset is
    404 whatever the parameters): from its public metadata only (the source is never
    opened), free, rate limited with the licence's queries, and audited with outcome ok and
    no charge."""
    spec, licence, tier, _ = await resolve_dataset(svc, principal, name, actx)
    req = read_request()  # after the access check: an unseen dataset is 404 whatever else
    # it costs CPU, if no budget: counted with the licence's queries
    await svc.limiter.hit({f"lic:{licence.id}": tier.rate_limit_per_minute})
    actx.detail.update(dummy_detail(req))
    body = await asyncio.to_thread(render_dummy, spec, req)
    await svc.store.append(actx.draft("ok", epsilon=0.0))
    actx.audited = True
    return spec, req, body


async def _replay(svc: Services, adm: Admitted, actx: AuditContext, query_id: str) -> Release:
    """Return an earlier release to the same licence again, spending nothing."""
    stored = adm.cached or {}
    record = await svc.store.append(
        actx.draft(
            "ok",
            epsilon=0.0,
            cached=True,
            result_sha256=stored["result_sha256"],
            detail={"release_of": stored["query_id"]},
        )
    )
    actx.audited = True
    left = adm.spent.left_of(adm.limit)
    return _answer(
        adm, stored, query_id, True, left, record.seq, {"release_of": stored["query_id"]}
    )


def _answer(
    adm: Admitted,
    stored: dict[str, Any],
    query_id: str,
    cached: bool,
    left: Amount,
    audit_seq: int,
    extra: dict[str, Any],
) -> Release:
    """The one shape of an answer, new or repeated: the stored release and the budget left."""
    return Release.from_stored(
        stored,
        query_id=query_id,
        dataset=adm.spec.name,
        cached=cached,
        budget=_budget_json(left, adm.renews),
        audit_seq=audit_seq,
        extra={**extra, "bounding": bounding_note(adm.spec)},
    )


def _plan_cost(
    adm: Admitted,
) -> tuple[Decimal, Decimal, dict[str, dict[str, float | None]]]:
    """Epsilon, delta and accuracy of the plan: from the stored release when the cache
    answers (no pricing), else from the price. Fresh dicts: the price's are shared."""
    if adm.cached is not None:
        body = adm.cached
        try:
            accuracy = {str(a): dict(v) for a, v in body["accuracy"].items()}
            return Decimal(body["epsilon"]), Decimal(body["delta"]), accuracy
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
            pass  # a stored release without its cost: price it (no data is read)
    priced = adm.priced or price_plan(
        adm.plan, adm.spec, adm.tier, adm.epsilon, declared_group_count(adm.plan, adm.spec)
    )
    return priced.epsilon, priced.delta, {a: dict(v) for a, v in priced.accuracy.items()}


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def declared_group_count(plan: Plan, spec: DatasetSpec) -> int | None:
    """Number of groups the declared key set yields; None if any key is undeclared."""
    count = 1
    for name in plan.group_by:
        col = spec.column(name)
        if col is None or col.type != "category" or not col.values:
            return None
        count *= len(col.values)
    return count


def _cache_key(plan: Plan, spec: DatasetSpec, epsilon: Decimal) -> str:
    text = f"{plan.normalized()}|{spec.name}|v{spec.version}|eps={epsilon.normalize()}"
    return hashlib.sha256(text.encode()).hexdigest()


def _budget_json(left: Amount, renews: Any) -> dict[str, Any]:
    return {
        "epsilon_remaining": left.epsilon_float,
        "delta_remaining": left.delta_float,
        "renews": iso(renews) if renews is not None else None,
    }

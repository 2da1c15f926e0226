"""The query flow, top to bottom: the only module that knows the order of the stages.

``run_query`` and ``estimate_query`` share every step up to the release cache:

1. resolve: the dataset (registry), the caller's licence for it (store), its tier (registry)
2. authorize the licence (role, validity, tier, jurisdiction) and count it against the
   licence's rate limit, before the SQL is parsed
3. parse the SQL into a Plan off the event loop (user SQL is never executed; cached per SQL
   text and spec), then authorize the plan (plan rules, epsilon cap). The epsilon is the
   request's, a batch's even share, the smallest grid epsilon that meets the request's
   accuracy targets (``dp/target.py``: public parameters only, off the loop), or the tier's
   ``default_epsilon``; the answer says which (``epsilon_source``)
4. (the per-address and per-subject limits were counted by the web middleware)
5. ``check_plan``: every refusal pricing could raise (so a cached repeat meets them too)
6. release cache: a repeat of the same plan, dataset version and epsilon costs nothing; it is
   answered from the stored release and is never priced (its cost and accuracy are in it)
7. otherwise price the plan with OpenDP (cost known before any data is touched; cached per
   plan, spec, tier, epsilon: public inputs only)
8. budget pre-check of every layer: licence, subject, organisation, dataset
   (``budget_layers.py``; refuse before touching data); a run with ``max_share`` is also
   refused, free, when it would spend more than that share of what is left (``require_share``)
--- estimate stops here (``estimate_batch`` repeats 2-8 per query, one audit record); run_query
goes on ---
9. prepare the dataset version (bounding: the same for every query), compile the plan, check
   the token again if the preparation kept the query waiting (``RECHECK_AFTER_S``; a job's
   token always: ``charged.reserve_unrevoked``), then reserve the cost on every layer
   (``store/reserve.py``: one store transaction counting the ledger and everyone's live
   reservations; a refusal is the pre-check's 403, nothing read)
--- after this line data has been read: ``charged.read_and_release`` ---
10. run the SQL off the loop (timeout), add noise, suppress small groups, order/limit
11. one store transaction: turn the reservation into the ledger charge (re-checking every
    layer), keep the release, append the audit record; only then is the result returned. A
    failure anywhere in 10 is charged the same epsilon and delta, in the same kind of
    transaction, and answers a fixed, data-free error.

Every refusal raised here is audited by ``web/problem.py`` with what ``actx`` knows by then.

A query job (``jobs/query.py``) runs the same stages in two parts: ``admit_run`` (1-8) when it
is submitted, and again, without counting the rate limit, when a runner claims it; then
``charged_query`` (9) and ``charged.read_and_release`` (10-11) with the job's end in the debit.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from enclave import budget_layers as layers
from enclave.audit.context import AuditContext
from enclave.budget_layers import LayerBudget
from enclave.charged import Asker, ChargedQuery, read_and_release, reserve_unrevoked
from enclave.dp.accuracy import bounding_note
from enclave.dp.mechanisms import PricedPlan, cheap_to_price, check_plan, price_plan
from enclave.dp.target import Chosen, choose_epsilon
from enclave.dummy import DummyRequest, dummy_detail, render_dummy
from enclave.errors import BadRequest, EnclaveError, NotFound, SpendNeedsConfirmation
from enclave.ids import new_id
from enclave.ledger.budget import period_window
from enclave.ledger.charge import Debited
from enclave.ledger.grid import Amount
from enclave.models import DatasetSpec, Licence, Principal, Release, Tier
from enclave.policy.decide import authorize, licence_for, require
from enclave.query.compile import compile_plan
from enclave.query.parse import cached_plan, parse_query
from enclave.query.plan import Plan
from enclave.query.request import BatchRequest, EpsilonSource, QueryRequest
from enclave.services import Services


@dataclass(frozen=True)
class Access:
    """Stage 1: the dataset, the caller's licence for it, its tier, and the budget so far."""

    spec: DatasetSpec
    licence: Licence
    tier: Tier
    tiers: dict[str, Tier]
    now: Any
    since: Any
    renews: Any
    budgets: tuple[LayerBudget, ...]  # every budget layer, the licence first, spent so far


@dataclass(frozen=True)
class Admitted:
    """Everything decided before any data is touched. ``priced`` is None for a cached repeat."""

    access: Access
    plan: Plan
    epsilon: Decimal
    source: EpsilonSource  # how the epsilon was set: given, chosen for accuracy, or default
    chosen: Chosen | None  # accuracy requests: the search's answer
    targets: dict[str, float] | None
    priced: PricedPlan | None
    cache_key: str
    cached: dict[str, Any] | None

    @property
    def spec(self) -> DatasetSpec:
        return self.access.spec

    def cost(self) -> Amount:
        """What a run charges: the price rounded up to the ledger's grid (>= OpenDP's)."""
        if self.priced is None:
            raise EnclaveError("the query was not priced")  # pragma: no cover
        return Amount.charge(self.priced.epsilon, self.priced.delta)

    def epsilon_note(self) -> dict[str, Any]:
        """Says how the epsilon was set (``epsilon_source``) and, for accuracy requests,
        which targets it was chosen for and the ci95 it achieves (``epsilon_chosen_for``)."""
        note: dict[str, Any] = {"epsilon_source": self.source}
        if self.chosen is not None and self.targets is not None:
            note["epsilon_chosen_for"] = self.chosen.to_json(self.targets)
        return note


async def estimate_query(
    svc: Services, principal: Principal, req: QueryRequest, actx: AuditContext
) -> dict[str, Any]:
    actx.sql = req.sql
    access = await resolve_access(svc, principal, req.dataset, actx)
    adm = await _admit(svc, principal, access, req, actx)
    item, cost = _estimate(adm)
    record = await svc.store.append(
        actx.draft("ok", epsilon=0.0, detail={"estimated_epsilon": item["plan_epsilon"]})
    )
    actx.audited = True
    return {
        "dataset": access.spec.name,
        **item,
        "budget": _budget_json(access),
        "audit_seq": record.seq,
        "bounding": bounding_note(access.spec),
    }


async def estimate_batch(
    svc: Services, principal: Principal, req: BatchRequest, actx: AuditContext
) -> dict[str, Any]:
    """Price several queries on one dataset together against the budget left; nothing is
    read or spent. One audit record (``query.estimate``, the SQL texts joined by ``;``).
    A refusal of any query refuses the batch, naming the query (``queries[i]: ...``)."""
    actx.sql = "\n;\n".join(q.sql for q in req.queries)
    access = await resolve_access(svc, principal, req.dataset, actx)
    tier = access.tier
    share = req.split_total(tier.min_epsilon_per_query, tier.max_epsilon_per_query)
    items: list[dict[str, Any]] = []
    total = Amount.charge(0)
    for i, query in enumerate(req.queries):
        try:
            adm = await _admit(svc, principal, access, query, actx, share)
        except EnclaveError as err:
            _name_query(err, f"queries[{i}]: ")
            raise
        item, cost = _estimate(adm)
        items.append(item)
        total = total.plus(cost)
    fits = layers.fits(access.budgets, total)
    actx.epsilon = 0.0
    detail = {"batch": len(items), "estimated_epsilon": total.epsilon_float}
    record = await svc.store.append(actx.draft("ok", epsilon=0.0, detail=detail))
    actx.audited = True
    return {
        "dataset": access.spec.name,
        "queries": items,
        "epsilon": total.epsilon_float,
        "delta": total.delta_float,
        "within_budget": fits,
        "split": None
        if share is None
        else {
            "total_epsilon": float(req.total_epsilon or 0),
            "rule": "even",
            "epsilon_per_query": float(share),
        },
        "budget": _budget_json(access),
        "audit_seq": record.seq,
        "bounding": bounding_note(access.spec),
    }


def _name_query(err: EnclaveError, prefix: str) -> None:
    """Prefix a refusal's detail (and listed problems) with the batch query it is about."""
    err.detail = prefix + err.detail
    err.args = (err.detail,)
    if isinstance(err, BadRequest):
        err.problems = [prefix + p for p in err.problems]


def _estimate(adm: Admitted) -> tuple[dict[str, Any], Amount]:
    """One query's estimate (what running it now would cost, its price, accuracy, whether
    it alone fits the budget left), and that cost (zero for a cached repeat)."""
    plan_eps, plan_delta, accuracy = _plan_cost(adm)
    price = Amount.charge(plan_eps, plan_delta)
    cost = price if adm.cached is None else Amount.charge(0)
    return {
        "epsilon": cost.epsilon_float,
        "delta": cost.delta_float,
        "plan_epsilon": price.epsilon_float,
        "plan_delta": price.delta_float,
        **adm.epsilon_note(),
        "accuracy": accuracy,
        "cached": adm.cached is not None,
        "within_budget": layers.fits(adm.access.budgets, cost),
    }, cost


#: a synchronous query that waited this long for its dataset's preparation checks its token
#: again before the data (``charged.reserve_unrevoked``); a job always does
RECHECK_AFTER_S = 1.0


async def run_query(
    svc: Services, principal: Principal, req: QueryRequest, actx: AuditContext
) -> Release:
    adm = await admit_run(svc, principal, req, actx)
    query_id = new_id("q")
    actx.detail["query_id"] = query_id
    if adm.cached is not None:
        return await replay(svc, adm, actx, query_id)
    asker = Asker(principal.jti, after_s=RECHECK_AFTER_S)
    charged = await charged_query(svc, adm, query_id, svc.config.server.query_timeout_s, asker)
    # ---- after this line data has been read: every outcome is charged (charged.py) ----
    stored, debited = await read_and_release(svc, charged, actx)
    # From here on nothing can raise: the new total came out of the transaction.
    return answer(adm, stored, query_id, debited)


async def admit_run(
    svc: Services,
    principal: Principal,
    req: QueryRequest,
    actx: AuditContext,
    *,
    count: bool = True,
) -> Admitted:
    """Stages 1-8 of a run: everything decided, and refused for free, before data is read.
    ``count=False``: the rate limit was counted when the request came in (a query job)."""
    actx.sql = req.sql
    access = await resolve_access(svc, principal, req.dataset, actx)
    adm = await _admit(svc, principal, access, req, actx, count=count)
    if adm.cached is None:
        cost = adm.cost()
        layers.check(access.budgets, cost)  # free and early; the reservation (9) decides
        require_share(access, cost, req.max_share)
    return adm


async def charged_query(
    svc: Services,
    adm: Admitted,
    query_id: str,
    timeout_s: float,
    asker: Asker,
    hold: str | None = None,
) -> ChargedQuery:
    """Stage 9: prepare the dataset version (bounding: the same for every query), compile
    the plan, check ``asker``'s token again if it is due after that wait (``RevokedToken``),
    and reserve its cost on every budget layer (``BudgetExhausted`` if concurrent spending or
    reservations leave too little): ``charged.reserve_unrevoked``, nothing read either way;
    for ``charged.read_and_release`` to run within ``timeout_s``. ``hold``: the
    reservation's id (a query job's, so its next attempt replaces it)."""
    if adm.priced is None:  # _admit prices whatever the cache does not answer
        raise EnclaveError("the query was not priced")  # pragma: no cover
    access = adm.access
    began = time.monotonic()
    table = await svc.warehouse.prepare(access.spec, wait_s=svc.config.server.query_timeout_s)
    waited = time.monotonic() - began
    compiled = compile_plan(adm.plan, access.spec, table)
    charge = layers.charge_for(access.licence, access.spec.name, access.budgets, adm.cost())
    # the last step before the data: the debit turns this reservation into the charge
    due = asker if asker.due(waited) else None
    reserved = await reserve_unrevoked(svc, charge, timeout_s, hold, due)
    return ChargedQuery(
        plan=adm.plan,
        spec=access.spec,
        tier=access.tier,
        priced=adm.priced,
        compiled=compiled,
        charge=reserved,
        cache_key=adm.cache_key,
        query_id=query_id,
        timeout_s=timeout_s,
    )


def answer(adm: Admitted, stored: dict[str, Any], query_id: str, debited: Debited) -> Release:
    """A new release's answer: the budget left is what the debit's transaction read, every
    layer's new total."""
    access = adm.access
    after = tuple(replace(b, spent=s) for b, s in zip(access.budgets, debited.layers, strict=True))
    budget = layers.researcher_json(after, renews=access.renews)
    return _answer(adm, stored, query_id, False, budget, debited.record.seq, {})


def require_share(access: Access, cost: Amount, max_share: Decimal | None) -> None:
    """The spend guard: refuse, free, a run costing more than ``max_share`` of the budget
    left (the larger of its epsilon and delta shares; exact, in grid units).

    It reads the same budgets as the pre-check (the binding layer after this run), before any
    data is read.
    A concurrent spend between here and the reservation can make the real share larger, never
    the total larger than the budget: the reservation re-checks that in its transaction.
    """
    if max_share is None:
        return
    bound = layers.binding(access.budgets, cost)
    left = bound.left()
    if bound.name in layers.SHARED:  # others' spend: only as coarsely as GET /v1/budget shows
        left = layers.coarse(left, bound.layer.limit)
    shares = [
        Fraction(spend, rest)
        for spend, rest in ((cost.epsilon, left.epsilon), (cost.delta, left.delta))
        if spend > 0 and rest > 0  # nothing left and a spend: the pre-check refused it
    ]
    share = max(shares, default=Fraction(0))
    if share > Fraction(max_share):
        raise SpendNeedsConfirmation(
            f"this query spends epsilon {cost.epsilon_decimal} and delta {cost.delta_decimal}, "
            f"{float(share):.1%} of what is left (epsilon {left.epsilon_decimal}, delta "
            f"{left.delta_decimal}), more than max_share {max_share}; send it again without "
            "max_share to run it",
            cost=(cost.epsilon_float, cost.delta_float),
            remaining=(left.epsilon_float, left.delta_float),
            share=float(share),
            max_share=float(max_share),
        )


def _requested_epsilon(
    req: QueryRequest, share: Decimal | None, tier: Tier
) -> tuple[EpsilonSource, Decimal | None]:
    """How the epsilon is set, and its value unless accuracy targets must choose it."""
    if req.epsilon is not None:
        return "request", req.epsilon
    if share is not None:
        return "batch_split", share
    if req.accuracy is not None:
        return "accuracy", None
    return "tier_default", tier.default_epsilon


async def resolve_access(
    svc: Services, principal: Principal, name: str, actx: AuditContext
) -> Access:
    """Stage 1 and the budget window: the dataset, licence, tier and what was spent so far."""
    now = svc.clock()
    spec, licence, tier, tiers = await resolve_dataset(svc, principal, name, actx)
    since, renews = period_window(licence.valid_from, tier.period_days, now)
    budgets = await layers.budget_layers(svc.store, licence, tier, spec, now)
    return Access(spec, licence, tier, tiers, now, since, renews, budgets)


async def _admit(
    svc: Services,
    principal: Principal,
    access: Access,
    req: QueryRequest,
    actx: AuditContext,
    share: Decimal | None = None,
    *,
    count: bool = True,
) -> Admitted:
    """Stages 2-7 for one query: rate limit, parse, authorize, set epsilon, price or cache.

    The epsilon is the request's, else a batch's even ``share``, else the smallest one that
    meets the request's accuracy targets (``dp/target.py``), else the tier's
    ``default_epsilon``.
    """
    spec, tier = access.spec, access.tier
    # the licence's limit comes before parsing: a flood of long SQL is refused cheaply
    if count:
        await svc.limiter.hit({f"lic:{access.licence.id}": tier.rate_limit_per_minute})
    source, epsilon = _requested_epsilon(req, share, tier)
    actx.epsilon = 0.0 if epsilon is None else float(epsilon)
    plan = cached_plan(req.sql, spec)  # a repeat of the SQL text: no thread hop
    if plan is None:
        plan = await asyncio.to_thread(parse_query, req.sql, spec)  # long SQL takes ms
    now = access.now
    require(
        authorize(principal, access.licence, tier, spec, plan, epsilon, now, tiers=access.tiers)
    )
    n_groups = declared_group_count(plan, spec)
    chosen = None
    if epsilon is None:  # accuracy targets: public parameters only, off the loop (a few fits)
        targets = req.accuracy or {}
        chosen = await asyncio.to_thread(choose_epsilon, plan, spec, tier, n_groups, targets)
        epsilon = chosen.epsilon
        actx.epsilon = float(epsilon)
        actx.detail["accuracy_targets"] = targets
    actx.detail["epsilon_source"] = source
    check_plan(plan, spec, tier, epsilon, n_groups)
    cache_key = _cache_key(plan, spec, epsilon)
    cached = await svc.store.get_cached(access.licence.id, cache_key)
    priced = None
    if cached is None:
        price = functools.partial(price_plan, plan, spec, tier, epsilon, n_groups)
        priced = price() if cheap_to_price(plan) else await asyncio.to_thread(price)
    return Admitted(
        access=access,
        plan=plan,
        epsilon=epsilon,
        source=source,
        chosen=chosen,
        targets=req.accuracy,
        priced=priced,
        cache_key=cache_key,
        cached=cached,
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


async def replay(svc: Services, adm: Admitted, actx: AuditContext, query_id: str) -> Release:
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
    budget = _budget_json(adm.access)
    return _answer(
        adm, stored, query_id, True, budget, record.seq, {"release_of": stored["query_id"]}
    )


def _answer(
    adm: Admitted,
    stored: dict[str, Any],
    query_id: str,
    cached: bool,
    budget: dict[str, Any],
    audit_seq: int,
    extra: dict[str, Any],
) -> Release:
    """The one shape of an answer, new or repeated: the stored release and the budget left."""
    return Release.from_stored(
        stored,
        query_id=query_id,
        dataset=adm.spec.name,
        cached=cached,
        budget=budget,
        audit_seq=audit_seq,
        extra={**extra, **adm.epsilon_note(), "bounding": bounding_note(adm.spec)},
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
        adm.plan, adm.spec, adm.access.tier, adm.epsilon, declared_group_count(adm.plan, adm.spec)
    )
    return priced.epsilon, priced.delta, {a: dict(v) for a, v in priced.accuracy.items()}


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


def _budget_json(access: Access) -> dict[str, Any]:
    """The budget left: its binding layer (``budget_layers.py``)."""
    return layers.researcher_json(access.budgets, renews=access.renews)

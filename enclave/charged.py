"""The charged stage: after this line data has been read, so every outcome is charged.

``pipeline.run_query`` calls ``read_and_release`` once the plan is priced, the SQL is
compiled and the cost is *reserved* on every budget layer (``Store.reserve``,
``store/reserve.py``: the ledger plus everyone's live reservations must leave room for it, else
a 403 before anything is read); nothing before it reads a row that depends on the query. From
the engine run onward (run, assemble, noise, order, digest), the outcome is one of:

- a release: one store transaction (``Store.debit``) turns the reservation into the charge of
  the priced epsilon and delta (rounded up to the ledger's grid), keeps the release for the
  cache and appends the audit record (outcome ``ok``); or
- a failure: the same kind of transaction debits *the same* amount and appends an audit
  record with outcome ``error`` and a fixed reason, then the caller gets a fixed problem:
  ``QueryTimeout`` (504) if the engine ran past its limit (``server.query_timeout_s``; a
  query job's ``jobs.timeout_s``), else ``ReleaseFailed``
  (500). Neither text names a value, a key, a count or the exception; the log line names only
  the exception's type and the request id.

A query job passes its end (``JobEnd``: ``store/jobs.finish`` under its claim) and it is
written in the same transaction as either debit, so a job's charge and its end commit together
or not at all.

So a failure can never be an uncharged oracle: a caller learns at most one bit (answered or
failed) about the data per charge, and pays for it like a release.

Concurrent queries sharing a budget layer (the same licence, subject, organisation or
dataset: ``budget_layers.py``) can no longer spend a reserved query's budget: whichever of
them would pass the limit is refused at *its* reservation, before *it* reads anything. The
debit's re-check (which counts the others' reservations, not its own) cannot refuse a query
holding its reservation, so the ledger never goes over its limit and every read is charged.

Outcomes that are not charged, by design:

- the store cannot be written (503): nothing is released, whatever the data;
- the reservation expired before the debit (it lasts the query's time limit plus a margin of
  minutes, ``reserve.MARGIN_S``, and the engine is interrupted at that limit, so only a process
  stalled for minutes gets here): the debit re-checks as if nothing had been reserved and may
  refuse (403, the same whether the release worked or failed); the ledger still never passes
  its limit.

A request cancelled while the engine runs (the server stopping) answers nothing and is not
charged; its reservation keeps holding the budget until it expires.

*The last step before the data* is ``reserve_unrevoked``, on every path that reads it (a
query, a query job, a synthetic job): the token the run acts for is checked again
(``auth.principal.refuse_revoked``), then the cost is reserved, and nothing else is awaited
before the data is read. A token revoked while its run waited (a job in the queue, a dataset
being prepared, possibly by another process, for up to ``engine.prepare_timeout_s``) is
refused there (``RevokedToken``): nothing reserved, read or charged. A synchronous query asks
again only when it waited ``pipeline.RECHECK_AFTER_S`` (1 s) or more for its dataset's
preparation (``server.query_timeout_s`` at most): otherwise its token was checked when it came
in, moments before, and one more store read per query would cost every query throughput.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from enclave.audit.context import AuditContext
from enclave.audit.record import FAILED_REASON, TIMEOUT_REASON
from enclave.auth.principal import REVOKED, refuse_revoked
from enclave.dp.deadline import deadline_for, padded
from enclave.dp.mechanisms import PricedPlan
from enclave.dp.release import NoisyTable, release
from enclave.errors import EnclaveError, QueryTimeout, ReleaseFailed, describe
from enclave.jobs.job import JobOp
from enclave.ledger.charge import CacheEntry, Charge, Debited
from enclave.models import DatasetSpec, Tier
from enclave.query.compile import assemble
from enclave.query.plan import CompiledQuery, Plan
from enclave.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChargedQuery:
    """Everything the charged stage needs, decided before any data is read."""

    plan: Plan
    spec: DatasetSpec
    tier: Tier
    priced: PricedPlan
    compiled: CompiledQuery
    charge: Charge
    cache_key: str
    query_id: str
    timeout_s: float  # server.query_timeout_s; a query job's: jobs.timeout_s


@dataclass(frozen=True)
class Asker:
    """The token a run acts for, checked again by ``reserve_unrevoked`` before its data."""

    jti: str | None  # None: a token without ``jti``, which cannot be revoked
    refusal: str = REVOKED  # the ``RevokedToken`` detail
    after_s: float = 0.0  # asked again only after waiting this long for the dataset (0: always)

    def due(self, waited_s: float) -> bool:
        """Whether a run that waited ``waited_s`` for its dataset asks the store again."""
        return self.jti is not None and waited_s >= self.after_s


async def reserve_unrevoked(
    svc: Services, charge: Charge, timeout_s: float, hold: str | None, asker: Asker | None
) -> Charge:
    """The last step before the data (module docstring): ``RevokedToken`` if ``asker``'s
    token was revoked meanwhile (None: not asked), else ``charge`` reserved on every layer for
    ``timeout_s`` under ``hold`` (``Store.reserve``; ``BudgetExhausted``: nothing held). The
    debit turns the reservation into the charge."""
    if asker is not None:
        await refuse_revoked(svc.store.is_revoked, asker.jti, asker.refusal)
    return await svc.store.reserve(charge, timeout_s, hold)


JobEnd = Callable[[str, dict[str, Any]], JobOp]
"""A query job's end (``jobs.finish`` bound to its claim): ``("done", {"release": ...})`` or
``("failed", {"problem": ...})``, written in the charge's transaction."""


async def read_and_release(
    svc: Services, q: ChargedQuery, actx: AuditContext, job: JobEnd | None = None
) -> tuple[dict[str, Any], Debited]:
    """Run, release and charge; or charge the same and raise a fixed, data-free error.
    ``job``: a query job's end, committed with the charge (so it is charged once)."""
    failure: QueryTimeout | ReleaseFailed
    try:
        rows = await svc.warehouse.run(q.compiled, q.timeout_s)
        released = await padded(  # dp/deadline.py: no sooner than a data-independent deadline
            lambda: release(q.plan, q.spec, q.tier, q.priced, assemble(q.compiled, rows)),
            deadline_for(q.priced, svc.config.server.release_deadline_ms),
        )
        body = stored_release(released, q.charge, q.query_id)
    except asyncio.CancelledError:
        raise
    except QueryTimeout:
        failure = QueryTimeout("the query ran longer than the time limit; its cost was charged")
        reason = TIMEOUT_REASON
    except Exception as exc:  # any failure on data is charged alike
        log.error(
            "release failed after the data was read (request %s): %s",
            actx.request_id,
            describe(exc),
        )
        failure = ReleaseFailed("the release failed after the data was read; its cost was charged")
        reason = FAILED_REASON
    else:
        debited = await svc.store.debit(
            actx.draft(
                "ok",
                epsilon=q.charge.cost.epsilon_float,
                delta=q.charge.cost.delta_float,
                result_sha256=released.result_sha256,
            ),
            q.charge,
            CacheEntry(q.charge.licence_id, q.cache_key, body),
            job=None if job is None else job("done", {"release": body}),
        )
        actx.audited = True
        return body, debited
    await svc.store.debit(
        actx.draft(
            "error",
            reason=reason,
            epsilon=q.charge.cost.epsilon_float,
            delta=q.charge.cost.delta_float,
        ),
        q.charge,
        job=None if job is None else job("failed", {"problem": failed_problem(failure, q)}),
    )
    actx.audited = True
    failure.charged = q.charge.cost.epsilon_float
    raise failure from None


def failed_problem(failure: EnclaveError, q: ChargedQuery) -> dict[str, Any]:
    """A failed query job's problem: the same fixed text a synchronous failure answers."""
    return {
        "type": failure.type_uri(),
        "title": failure.title,
        "status": failure.status,
        "detail": failure.detail,
        "charged": True,
        "epsilon": str(q.charge.cost.epsilon_decimal),
        "delta": str(q.charge.cost.delta_decimal),
    }


def stored_release(released: NoisyTable, charge: Charge, query_id: str) -> dict[str, Any]:
    """The stored release: what the release cache keeps and ``Release.from_stored`` answers
    (without ``audit_seq`` and ``budget``), as plain JSON values: dates become ISO text, and
    a value JSON cannot hold fails here, inside the charged stage, not later in the store or
    the response."""
    body = {
        "columns": list(released.columns),
        "rows": [list(r) for r in released.rows],
        "accuracy": released.accuracy,
        "suppressed_groups": released.suppressed_groups,
        "epsilon": str(charge.cost.epsilon_decimal),
        "delta": str(charge.cost.delta_decimal),
        "result_sha256": released.result_sha256,
        "query_id": query_id,
    }
    plain: dict[str, Any] = json.loads(json.dumps(body, allow_nan=False, default=_plain))
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError("a released value is not JSON")

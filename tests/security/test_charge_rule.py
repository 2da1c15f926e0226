"""Once data is read, the outcome is charged, and a failure says nothing about the data.

Failures are forced by wrapping the real release step (``enclave.charged.release``): the
wrapper runs the real release over the real exact statistics, then raises an exception whose
message quotes the exact (pre-noise) total, as an OverflowError from an exact sum would. The
test asserts that this number reaches no response, no audit record and no log line, and that
the failure cost exactly what the release would have.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from enclave import charged
from enclave.audit.log import AuditFilter
from enclave.charged import ChargedQuery, read_and_release
from enclave.dp.mechanisms import price_plan
from enclave.errors import BudgetExhausted
from enclave.ledger.budget import tier_limit
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.query.compile import compile_plan
from enclave.query.parse import parse_query
from enclave.query.plan import ExactGroups

SQL = "SELECT COUNT(*) AS n, SUM(age) AS total FROM visits"


def _sentinel_release(seen: list[str]) -> Any:
    real = charged.release

    def failing(plan: Any, spec: Any, tier: Any, priced: Any, exact: ExactGroups) -> Any:
        real(plan, spec, tier, priced, exact)
        sentinel = f"{int(exact.stats['a1_sum'][0])}{int(exact.stats['a0_count'][0])}"
        seen.append(sentinel)
        raise OverflowError(f"Python int too large to convert to C long: {sentinel}")

    return failing


async def _records(gw: Any) -> list[Any]:
    return list(await gw.services.store.audit_events(AuditFilter(actor="alice"), 0, 50))


async def test_failure_after_data_read_is_charged_and_data_free(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    seen: list[str] = []
    monkeypatch.setattr(charged, "release", _sentinel_release(seen))
    caplog.set_level(logging.DEBUG)
    resp = await gw.query(SQL, epsilon=0.5)
    text = await resp.text()
    assert resp.status == 500, text
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/release-failed")
    assert "charged" in body["detail"]
    (sentinel,) = seen
    assert len(sentinel) >= 6  # the exact sum and count: digits no fixed text contains
    recs = await _records(gw)
    assert [(r.action, r.outcome, r.epsilon) for r in recs] == [("query", "error", 0.5)]
    assert recs[0].result_sha256 is None and recs[0].reason == charged.FAILED_REASON
    assert (await gw.services.store.spent(lic.id, "visits", None)).epsilon_decimal == Decimal("0.5")
    for where in (text, caplog.text, repr([r.to_json() for r in recs])):
        assert sentinel not in where
        assert "too large" not in where
    assert "OverflowError" in caplog.text  # the type is logged, to debug by
    # the failure's cost is real: the budget shows it, and a repeat is charged again
    again = await gw.query(SQL, epsilon=0.5)
    assert again.status == 500
    assert (await gw.services.store.spent(lic.id, "visits", None)).epsilon_decimal == Decimal("1.0")


async def test_success_and_failure_cost_the_same(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    ok = await gw.query(SQL, epsilon=0.3)
    assert ok.status == 200, await ok.text()
    monkeypatch.setattr(charged, "release", _sentinel_release([]))
    failed = await gw.query(SQL.replace("AS n", "AS m"), epsilon=0.3)
    assert failed.status == 500
    recs = await _records(gw)
    assert [(r.outcome, r.epsilon, r.delta) for r in recs] == [
        ("ok", 0.3, 0.0),
        ("error", 0.3, 0.0),
    ]
    assert (await gw.services.store.spent(lic.id, "visits", None)).epsilon_decimal == Decimal("0.6")


async def test_unexpected_error_before_data_logs_type_only(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any unhandled exception is logged by type and place, never by its message."""
    from enclave import pipeline

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ValueError("secret-value-31337")

    gw = await make_gateway()
    await gw.licence()
    monkeypatch.setattr(pipeline, "compile_plan", broken)
    caplog.set_level(logging.DEBUG)
    resp = await gw.query(SQL, epsilon=0.5)
    assert resp.status == 500
    assert "31337" not in await resp.text()
    assert "31337" not in caplog.text
    assert "ValueError" in caplog.text and "broken" in caplog.text  # type and where


@pytest.mark.parametrize("fails", [False, True], ids=["released", "failed"])
async def test_charge_refused_by_a_concurrent_spend_answers_budget_exhausted(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """The pre-check reserved nothing; the store re-checks. If a concurrent query spent the
    budget meanwhile, the answer is 403 whether the release worked or failed (so it says
    nothing about the data), and the ledger never goes over its limit."""
    from enclave.audit.context import AuditContext

    gw = await make_gateway()
    lic = await gw.licence()
    svc = gw.services
    spec = await svc.registry.dataset("visits")
    tier = await svc.registry.tier("standard")
    plan = parse_query(SQL, spec)
    priced = price_plan(plan, spec, tier, Decimal("1"), None)
    limit = tier_limit(tier)
    charge = Charge(lic.id, "visits", Amount.charge(Decimal(1)), limit, None)
    table = await svc.warehouse.prepare(spec)
    if fails:
        monkeypatch.setattr(charged, "release", _sentinel_release([]))
    # a "concurrent" query spends all but 0.5 of the budget after the pre-check
    actx0 = AuditContext(request_id="r0", client=None, actor="alice", licence_id=lic.id)
    spend = Charge(lic.id, "visits", Amount.charge(tier.budget_epsilon - Decimal("0.5")), limit,
                   None)  # fmt: skip
    await svc.store.debit(actx0.draft("ok", epsilon=4.5), spend)
    query = ChargedQuery(
        plan, spec, tier, priced, compile_plan(plan, spec, table), charge, "k", "q", 30.0
    )
    actx = AuditContext(request_id="r1", client=None, actor="alice", licence_id=lic.id)
    with pytest.raises(BudgetExhausted):
        await read_and_release(svc, query, actx)
    left = (await svc.store.spent(lic.id, "visits", None)).epsilon_decimal
    assert left == tier.budget_epsilon - Decimal("0.5")

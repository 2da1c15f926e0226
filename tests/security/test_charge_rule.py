"""Once data is read, the outcome is charged, and a failure says nothing about the data.

Failures are forced by wrapping the real release step (``enclave.charged.release``): the
wrapper runs the real release over the real exact statistics, then raises an exception whose
message quotes the exact (pre-noise) total, as an OverflowError from an exact sum would. The
test asserts that this number reaches no response, no audit record and no log line, and that
the failure cost exactly what the release would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enclave import charged
from enclave.audit.context import AuditContext
from enclave.audit.log import AuditFilter
from enclave.charged import ChargedQuery, read_and_release
from enclave.dp.mechanisms import price_plan
from enclave.errors import BudgetExhausted, ReleaseFailed
from enclave.ledger.budget import tier_limit
from enclave.ledger.charge import Charge, Layer
from enclave.ledger.grid import Amount
from enclave.query.compile import compile_plan
from enclave.query.parse import parse_query
from enclave.query.plan import ExactGroups
from tests.spend import layer_spent
from tests.store.conftest import temporary_database
from tests.web.test_budget_layers import set_policy

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
async def test_a_reserved_query_is_charged_whatever_concurrent_spending_tries(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """The reservation holds the query's cost before the engine runs: a concurrent charge
    that would leave less than that is refused instead (before *it* reads anything), and the
    reserved query is charged whether its release works or fails."""
    gw = await make_gateway()
    lic = await gw.licence()
    svc = gw.services
    spec = await svc.registry.dataset("visits")
    tier = await svc.registry.tier("standard")
    plan = parse_query(SQL, spec)
    priced = price_plan(plan, spec, tier, Decimal("1"), None)
    limit = tier_limit(tier)
    table = await svc.warehouse.prepare(spec)
    charge = await svc.store.reserve(Charge(lic.id, "visits", Amount.charge(1), limit, None), 30)
    if fails:
        monkeypatch.setattr(charged, "release", _sentinel_release([]))
    # a "concurrent" query would spend all but 0.5 of the budget after the reservation
    actx0 = AuditContext(request_id="r0", client=None, actor="alice", licence_id=lic.id)
    spend = Charge(lic.id, "visits", Amount.charge(tier.budget_epsilon - Decimal("0.5")), limit,
                   None)  # fmt: skip
    with pytest.raises(BudgetExhausted):
        await svc.store.debit(actx0.draft("ok", epsilon=4.5), spend)
    query = ChargedQuery(
        plan, spec, tier, priced, compile_plan(plan, spec, table), charge, "k", "q", 30.0
    )
    actx = AuditContext(request_id="r1", client=None, actor="alice", licence_id=lic.id)
    if fails:
        with pytest.raises(ReleaseFailed):
            await read_and_release(svc, query, actx)
    else:
        await read_and_release(svc, query, actx)
    assert (await svc.store.spent(lic.id, "visits", None)).epsilon_decimal == 1


async def _on_store(stack: contextlib.AsyncExitStack, backend: str) -> str:
    if backend == "postgres":
        return str(await stack.enter_async_context(temporary_database()))
    return "sqlite:///state/enclave.db"


@pytest.mark.parametrize("fails", [False, True], ids=["released", "failed"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_racing_queries_on_a_shared_layer_are_charged_for_every_read(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, backend: str, fails: bool
) -> None:
    """Twelve researchers of twelve organisations race distinct queries of epsilon 0.1 on a
    dataset whose total budget (a layer they share) is 0.5. The engine is slowed, so every
    query passes the free pre-check before any is charged: without a reservation, the
    debits after the engine would refuse seven of them, uncharged, after reading the data.
    Now every engine run is charged (released or failed), the ledger never passes the limit,
    and the refused seven were refused before reading (403 naming the dataset layer)."""
    async with contextlib.AsyncExitStack() as stack:
        gw = await make_gateway(store_url=await _on_store(stack, backend))
        await set_policy(gw, "dataset", "visits", total_budget={"epsilon": 0.5})
        subjects = [f"r{i}" for i in range(12)]
        for sub in subjects:
            await gw.licence(sub, organization=f"org-{sub}")
        svc = gw.services
        runs: list[str] = []
        real_run = svc.warehouse.run

        async def counted(compiled: Any, timeout_s: float) -> Any:
            runs.append(compiled.sql)
            await asyncio.sleep(0.3)  # the others reach the pre-check meanwhile
            return await real_run(compiled, timeout_s)

        monkeypatch.setattr(svc.warehouse, "run", counted)
        if fails:
            monkeypatch.setattr(charged, "release", _sentinel_release([]))

        async def ask(i: int) -> tuple[int, dict[str, Any]]:
            resp = await gw.query(f"{SQL} WHERE age > {i}", 0.1, sub=subjects[i])
            return resp.status, await resp.json(content_type=None)

        answers = await asyncio.gather(*(ask(i) for i in range(len(subjects))))
        statuses = sorted(status for status, _ in answers)
        answered = 500 if fails else 200
        assert statuses == sorted([answered] * 5 + [403] * 7), answers
        assert all(body["layer"] == "dataset" for status, body in answers if status == 403)
        assert len(runs) == 5  # the engine ran for the charged five only
        spent = await layer_spent(svc.store, "dataset", "visits", "visits", None)
        assert spent == Amount.charge("0.5")
        records = await svc.store.audit_events(AuditFilter(action="query"), 0, 100)
        charged_records = [r for r in records if r.epsilon > 0 and r.outcome != "denied"]
        assert len(charged_records) == 5
        assert sorted({r.outcome for r in records}) == ["denied", "error" if fails else "ok"]
        # nothing is still held: 0.1 more fits a dataset layer of 0.6 exactly
        roomy = Layer("dataset", Amount.charge("0.6"), None)
        extra = Charge("lic_x", "visits", Amount.charge("0.1"), Amount.charge(1), None, (roomy,))
        assert (await svc.store.reserve(extra, 30)).reservation is not None


async def test_a_cached_repeat_reserves_nothing_and_is_answered_when_all_is_held(
    make_gateway: Any,
) -> None:
    """A repeat spends nothing, so it needs no reservation: it is answered even while
    queries in flight hold everything that is left, and holds nothing itself."""
    gw = await make_gateway()
    lic = await gw.licence()
    svc = gw.services
    first = await gw.query(SQL, epsilon=0.5)
    assert first.status == 200, await first.text()
    tier = await svc.registry.tier("standard")
    rest = Amount.charge(tier.budget_epsilon - Decimal("0.5"))
    held = await svc.store.reserve(Charge(lic.id, "visits", rest, tier_limit(tier), None), 30)
    fresh = await gw.query(SQL.replace("AS n", "AS m"), epsilon=0.5)  # new: refused, unread
    assert fresh.status == 403 and (await fresh.json())["layer"] == "licence"
    repeat = await gw.query(SQL, epsilon=0.5)
    assert repeat.status == 200 and (await repeat.json())["cached"] is True
    await svc.store.debit(AuditContext("r", None, actor="alice").draft("ok"), held)
    assert await svc.store.spent(lic.id, "visits", None) == Amount.charge(tier.budget_epsilon)


def _metric(text: str, name: str) -> float:
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return next((s.value for s in samples if s.name == name), 0.0)


@pytest.mark.parametrize("how", ["failed", "timed out"])
async def test_a_charged_failure_moves_the_epsilon_metric_as_a_release_does(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``/metrics`` (public) counts the epsilon charged: a failure after the data was read
    is charged like a release, so it counts the same, and the metric cannot tell them apart
    by what was spent."""
    gw = await make_gateway()
    lic = await gw.licence()
    assert (await gw.query(SQL, epsilon=0.3)).status == 200
    if how == "failed":
        monkeypatch.setattr(charged, "release", _sentinel_release([]))
    else:  # the real engine, given no time: it is interrupted and times out
        real_run = gw.services.warehouse.run

        async def no_time(compiled: Any, timeout_s: float) -> Any:
            return await real_run(compiled, 1e-9)

        monkeypatch.setattr(gw.services.warehouse, "run", no_time)
    failed = await gw.query(SQL.replace("AS n", "AS m"), epsilon=0.3)
    assert failed.status == (500 if how == "failed" else 504), await failed.text()
    assert (await gw.services.store.spent(lic.id, "visits", None)).epsilon_decimal == Decimal("0.6")
    text = await (await gw.client.get("/metrics")).text()
    assert _metric(text, "enclave_epsilon_spent_total") == pytest.approx(0.6)

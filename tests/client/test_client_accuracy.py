"""The client's accuracy targets, batch estimate and spend confirmation, against a live
loopback gateway (the async client, and the blocking one in a thread of its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.client import (
    BatchEstimate,
    Client,
    EnclaveClient,
    Estimate,
    LargeSpendWarning,
    SpendNotConfirmed,
)
from enclave.errors import SpendNeedsConfirmation
from tests.client.test_client import researcher, url_of

COUNT = "SELECT COUNT(*) AS n FROM visits"
SUM = "SELECT SUM(age) AS years FROM visits"


async def estimates_audited(gw: Any) -> int:
    auditor = gw.auth("audra", ["auditor"])
    resp = await gw.client.get("/v1/audit/events?action=query.estimate", headers=auditor)
    return len((await resp.json())["events"])


async def test_accuracy_targets_are_quoted_then_spent(make_gateway: Any) -> None:
    _, client, _ = await researcher(make_gateway)
    async with client:
        est = await client.estimate(COUNT, "visits", accuracy={"n": 50})
        assert est.epsilon_source == "accuracy"
        assert est.epsilon_chosen_for["n"]["ci95"] == 50
        assert (est.epsilon_chosen_for["n"]["achieved_ci95"] or 0) <= 50
        result = await client.query(COUNT, "visits", accuracy={"n": 50})
        assert result.epsilon_spent == est.epsilon and result.epsilon_source == "accuracy"
        assert (result.ci95("n") or 0) <= 50
        plain = await client.query(SUM, "visits")
        assert plain.epsilon_source == "tier_default" and plain.epsilon_spent == 0.1


async def test_batch_estimate(make_gateway: Any) -> None:
    _, client, _ = await researcher(make_gateway)
    async with client:
        batch = await client.estimate_batch(
            [
                COUNT,
                {"sql": SUM, "epsilon": 0.5},
                {"sql": COUNT + " WHERE age > 9", "accuracy": {"n": 80}},
            ],
            "visits",
        )
        assert isinstance(batch, BatchEstimate) and len(batch.queries) == 3
        assert all(isinstance(q, Estimate) and q.dataset == "visits" for q in batch.queries)
        assert [q.epsilon_source for q in batch.queries] == ["tier_default", "request", "accuracy"]
        assert batch.epsilon == pytest.approx(sum(q.epsilon for q in batch.queries))
        assert batch.within_budget and batch.split is None
        assert batch.queries[0].budget == batch.budget
        split = await client.estimate_batch([COUNT, SUM], "visits", total_epsilon=0.5)
        assert split.split == {"total_epsilon": 0.5, "rule": "even", "epsilon_per_query": 0.25}
        assert [q.epsilon for q in split.queries] == [0.25, 0.25]
        assert (await client.budget())[0]["epsilon_spent"] == 0  # nothing spent


async def test_a_declined_spend_runs_nothing(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)
    shown: list[Estimate] = []

    def decline(estimate: Estimate) -> bool:
        shown.append(estimate)
        return False

    async with EnclaveClient(url_of(gw), token, confirm_share=0.1, confirm=decline) as client:
        with pytest.raises(SpendNotConfirmed, match="spends epsilon 1, 20% of the 5 left"):
            await client.query(COUNT, "visits", 1.0)
        assert shown[0].epsilon == 1.0 and shown[0].share_of_remaining == pytest.approx(0.2)
        assert await estimates_audited(gw) == 1  # fetched only after the gateway refused
        small = await client.query(COUNT, "visits", 0.4)  # 8%: not asked
        assert small.epsilon_spent == 0.4 and len(shown) == 1
        assert (await client.budget())[0]["epsilon_spent"] == 0.4
    assert await estimates_audited(gw) == 1  # a query within the share is one request


async def test_the_refusal_carries_the_cost_and_what_is_left(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)
    async with EnclaveClient(url_of(gw), token, confirm_share=None) as client:
        body = {"dataset": "visits", "sql": COUNT, "epsilon": 1.0, "max_share": 0.1}
        with pytest.raises(SpendNeedsConfirmation) as caught:
            await client._request("POST", "/v1/queries", body=body)
    err = caught.value
    assert (err.cost, err.remaining) == ((1.0, 0.0), (5.0, err.remaining[1]))
    assert (err.share, err.max_share) == (pytest.approx(0.2), 0.1)


async def test_an_accepted_spend_runs_and_none_skips_the_estimate(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)
    asked: list[float] = []

    def accept(estimate: Estimate) -> bool:
        asked.append(estimate.epsilon)
        return True

    async with EnclaveClient(url_of(gw), token, confirm_share=0.1, confirm=accept) as client:
        assert (await client.query(COUNT, "visits", 1.0)).epsilon_spent == 1.0
    assert asked == [1.0] and await estimates_audited(gw) == 1
    async with EnclaveClient(url_of(gw), token, confirm_share=None) as client:
        assert (await client.query(SUM, "visits", 1.0)).epsilon_spent == 1.0
    assert await estimates_audited(gw) == 1  # no estimate was made


async def test_without_confirm_a_large_spend_warns_and_runs(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)
    async with EnclaveClient(url_of(gw), token) as client:  # confirm_share 0.25
        await client.query(COUNT, "visits", 1.0)  # 20% of 5 (a warning would fail the test)
        await client.query(SUM, "visits", 1.0)  # 25% of 4: not more than the share
        with pytest.warns(LargeSpendWarning, match="spends epsilon 1, 33% of the 3 left"):
            ran = await client.query(COUNT + " WHERE age > 1", "visits", 1.0)
        assert ran.epsilon_spent == 1.0 and ran.budget.epsilon_remaining == 2.0


def test_confirm_share_must_be_a_share() -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="confirm_share"):
            EnclaveClient("http://127.0.0.1:9", "t", confirm_share=bad)


async def test_the_blocking_client_takes_the_same_arguments(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)

    def run() -> tuple[Estimate, BatchEstimate, float]:
        with Client(url_of(gw), token, confirm_share=None) as client:
            est = client.estimate(COUNT, "visits", accuracy={"n": 60})
            batch = client.estimate_batch([COUNT], "visits", total_epsilon=0.2)
            spent = client.query(COUNT, "visits", accuracy={"n": 60}).epsilon_spent
            return est, batch, spent

    est, batch, spent = await asyncio.to_thread(run)
    assert est.epsilon_source == "accuracy" and spent == est.epsilon
    assert batch.queries[0].epsilon == 0.2

"""The researcher workbench in a real browser: sign in, schema, live estimate, run, charge."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser


async def test_researcher_estimates_then_runs_and_sees_the_charge(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.open_as("alice", ["researcher"])
    await expect(page.locator("#who")).to_contain_text("alice · researcher")
    assert "#token" not in page.url  # the demo link's token is taken once, then dropped
    await expect(page.get_by_role("cell", name="person_id")).to_be_visible()
    estimate = page.locator("#estimate")
    await expect(estimate).to_contain_text("Cost ε 0.5")
    await expect(estimate).to_contain_text("within budget")
    await expect(estimate).to_contain_text("n ±")
    sql = page.get_by_label("SQL")
    await sql.fill("SELECT region, COUNT(*) AS n FROM visits WHERE age >= 65 GROUP BY region")
    await page.get_by_label("Epsilon for this query").fill("0.25")
    await expect(estimate).to_contain_text("Cost ε 0.25")
    await page.locator("#run").click()
    charge = page.locator("#charge")
    await expect(charge).to_contain_text("Charged ε 0.25")
    await expect(charge).to_contain_text("remaining ε 4.75")
    await expect(page.locator("#results table tbody tr")).to_have_count(5)
    await expect(page.locator("#results svg.chart")).to_be_visible()
    await expect(page.locator("meter").first).to_have_attribute("value", "0.25")
    # the same question again is a cached repeat: the estimate says so, and it is free
    await expect(estimate).to_contain_text("cached")
    await c.screenshot("researcher")
    await c.assert_labelled()
    async with page.expect_download() as info:
        await page.locator("#csv").click()
    text = (await (await info.value).path()).read_text()
    assert text.splitlines()[0] == "region,n,n_ci95"
    assert len(text.splitlines()) == 6
    # the server charged exactly that
    budget = await (await c.gw.client.get("/v1/budget", headers=c.gw.auth("alice"))).json()
    assert budget["budgets"][0]["epsilon_spent"] == 0.25
    await page.get_by_role("tab", name="History").click()
    await expect(page.get_by_role("cell", name="ok")).to_have_count(1)


async def test_a_shared_layer_that_binds_is_named(console: Any) -> None:
    """An organisation budget tighter than the licence's: the workbench says which budget
    limits the researcher, with what is left of it (as ``GET /v1/budget`` shows it)."""
    c = await console()
    admin, path = c.gw.auth("root", ["admin"]), "/v1/admin/tiers/standard"
    tier = await (await c.gw.client.get(path, headers=admin)).json()
    body = {k: v for k, v in tier.items() if k not in ("created_at", "changed_by", "versions")}
    body |= {"organisation_budget": {"epsilon": 1.5}, "reason": "browser test"}
    put = await c.gw.client.put(path, json=body, headers=admin)
    assert put.status == 200, await put.text()
    await c.gw.licence("alice")
    await c.gw.licence("bob")  # the same organisation
    assert (await c.gw.query("SELECT COUNT(*) AS n FROM visits", 0.55, sub="bob")).status == 200
    page = await c.open_as("alice", ["researcher"])
    note = page.locator(".binding")
    await expect(note).to_contain_text("limited by the organisation budget")
    await expect(note).to_contain_text("ε 0.9 left")
    await expect(page.locator("#estimate")).to_contain_text("limited by the organisation budget")

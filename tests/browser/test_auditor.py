"""The auditor's console: filter events, verify the chain, download exports, summaries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser
SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"


async def test_auditor_filters_verifies_and_exports(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice")
    assert (await c.gw.query(SQL, epsilon=0.5)).status == 200
    assert (await c.gw.query(SQL, epsilon=0.3)).status == 200
    assert (await c.gw.query("SELECT * FROM visits", epsilon=0.3)).status == 400
    page = await c.open_as("otto", ["auditor"])
    await expect(page.locator("#who")).to_contain_text("otto · auditor")
    events = page.locator("#events tbody tr")
    await expect(events).to_have_count(4)  # licence.create, two releases, one refusal
    await page.get_by_label("Action").select_option("query")
    await page.get_by_label("Outcome").select_option("ok")
    await page.get_by_role("button", name="Filter").click()
    await expect(events).to_have_count(2)
    await expect(events.first).to_contain_text("alice")
    await c.screenshot("auditor")
    await c.assert_labelled()
    await page.get_by_label("Outcome").select_option("error")
    await page.get_by_role("button", name="Filter").click()
    await expect(events).to_have_count(0)

    await page.get_by_role("tab", name="Verify and export").click()
    await page.locator("#verify").click()
    verdict = page.locator("#verdict")
    await expect(verdict).to_contain_text("Chain valid: 4 records.")
    key = await c.gw.client.get("/v1/audit/key", headers=c.gw.auth("otto", ["auditor"]))
    key_id = (await key.json())["key_id"]
    await expect(verdict.get_by_role("row", name=f"key id {key_id}")).to_be_visible()

    async with page.expect_download() as info:
        await page.locator("#export-jsonl").click()
    download = await info.value
    assert download.suggested_filename == "audit-5.jsonl"  # the export is itself audited
    lines = (await download.path()).read_text().splitlines()
    assert [json.loads(x).get("seq") for x in lines[:5]] == [1, 2, 3, 4, 5]
    async with page.expect_download() as info:
        await page.locator("#export-csv").click()
    csv = (await (await info.value).path()).read_text().splitlines()
    assert csv[0].startswith("seq,") and len(csv) == 7  # header, 5 records, this export's own

    await page.get_by_role("tab", name="Summary").click()
    await expect(page.get_by_role("table", name="Per dataset")).to_contain_text("0.8")
    await expect(page.locator("svg.chart path.line")).to_have_count(1)
    await c.screenshot("auditor-summary")
    await page.get_by_role("tab", name="Attention").click()
    await expect(page.get_by_role("table", name="Licences near budget")).to_be_visible()

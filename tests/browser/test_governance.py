"""Four-eyes proposals and incident controls in a real browser: one steward's budget raise
waits in the Proposals tab; the gateway refuses her own approval and a second steward's
approval applies it; freezing a dataset and proposing to unfreeze it from the same tab; a
reissue from the issue form waits there as a ``licence.create`` proposal."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.test_steward import fill_issue_form

pytestmark = pytest.mark.browser


async def _decide(page: Any, row: Any, button: str, reason: str) -> None:
    await row.get_by_role("button", name=button).click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Reason (required)").fill(reason)
    await dialog.get_by_role("button", name="Confirm").click()


async def test_a_proposal_is_approved_by_a_second_steward(console: Any) -> None:
    c = await console(governance={"four_eyes": True})
    store = c.gw.services.store
    current = await store.get_policy("tier", "standard")
    body = {**current.body, "budget": {**current.body["budget"], "epsilon": 8.0},
            "reason": "DSA-7 renewal"}  # fmt: skip
    body.pop("version")
    resp = await c.gw.client.put("/v1/admin/tiers/standard", json=body,
                                 headers=c.gw.auth("stella", ["admin"]))  # fmt: skip
    assert resp.status == 202
    pid = (await resp.json())["id"]

    page = await c.open_as("stella", ["admin"])
    await page.get_by_role("tab", name="Proposals").click()
    listed = page.locator("#proposal-list").get_by_role("table", name="1 proposal(s)")
    row = listed.get_by_role("row").filter(has_text=pid)
    await expect(row).to_contain_text("budget.epsilon raised from 5.0 to 8.0")
    await _decide(page, row, "Approve", "my own")
    await expect(page.locator("#status")).to_contain_text("cannot approve their own")
    assert (await store.get_proposal(pid)).status == "pending"
    await c.screenshot("steward-proposals")

    page = await c.open_as("omar", ["admin"])
    await page.get_by_role("tab", name="Proposals").click()
    row = page.locator("#proposal-list").get_by_role("row").filter(has_text=pid)
    await _decide(page, row, "Approve", "checked against DSA-7")
    await expect(page.locator("#status")).to_contain_text("approved and applied")
    assert (await store.get_policy("tier", "standard")).body["budget"]["epsilon"] == 8.0
    await c.assert_labelled()


async def test_freeze_and_propose_unfreezing_from_the_console(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.open_as("stella", ["admin"])
    await page.get_by_role("tab", name="Proposals").click()
    form = page.locator("#freeze-form")
    await form.get_by_label("Dataset").fill("visits")
    await form.get_by_label("Reason (required)").fill("INC-42")
    await form.get_by_role("button", name="Freeze now").click()
    await expect(page.locator("#status")).to_contain_text("Freeze a dataset: done")
    assert (await c.gw.query("SELECT COUNT(*) AS n FROM visits")).status == 423
    await form.get_by_label("Reason (required)").fill("contained")
    await form.get_by_role("button", name="Propose unfreezing").click()
    await expect(page.locator("#status")).to_contain_text("a second admin approves it")
    pending = page.locator("#proposal-list").get_by_role("table", name="1 proposal(s)")
    await expect(pending).to_contain_text("dataset.unfreeze")


async def test_a_reissue_from_the_issue_form_waits_in_the_proposals_tab(console: Any) -> None:
    c = await console(governance={"four_eyes": True})
    old = await c.gw.licence("alice", status="revoked")
    page = await c.open_as("stella", ["admin"])
    form = page.locator("#issue-form")
    await fill_issue_form(form, "alice", "Test University", "accredited", "second study", "GB")
    await form.get_by_label("Reason").fill("DSA-9 renewal")
    await form.get_by_role("button", name="Issue").click()
    await expect(page.locator("#status")).to_contain_text("a second admin approves the reissue")
    store = c.gw.services.store
    assert [lic.id for lic in await store.list_licences("alice")] == [old.id]

    page = await c.open_as("omar", ["admin"])
    await page.get_by_role("tab", name="Proposals").click()
    row = page.locator("#proposal-list").get_by_role("row").filter(has_text="licence.create")
    await expect(row).to_contain_text(f"licence reissued: 'alice' has held {old.id} on visits")
    await expect(row).to_contain_text("DSA-9 renewal")
    await _decide(page, row, "Approve", "agreement checked")
    await expect(page.locator("#status")).to_contain_text("approved and applied")
    issued = [lic for lic in await store.list_licences("alice") if lic.id != old.id]
    assert [(lic.tier, lic.status) for lic in issued] == [("accredited", "active")]

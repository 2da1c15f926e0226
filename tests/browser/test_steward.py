"""The steward's console: issue and suspend a licence, edit a tier (a refused version shows its
problems next to the fields; nothing is stored), compare versions."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser


async def fill_issue_form(
    form: Any, subject: str, organisation: str, tier: str, purpose: str, jurisdiction: str
) -> None:
    """The console's issue form for a licence on visits, valid until mid-2030."""
    await form.get_by_label("Subject (the token's sub)").fill(subject)
    await form.get_by_label("Organisation").fill(organisation)
    await form.get_by_label("Tier").select_option(tier)
    await form.get_by_label("visits").check()
    await form.get_by_label("Purpose").fill(purpose)
    await form.get_by_label("Jurisdiction (two letters)").fill(jurisdiction)
    await form.get_by_label("Valid until").fill("2030-06-30")


async def test_steward_issues_suspends_and_edits_a_tier(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice", organization="Northern Health")
    page = await c.open_as("stella", ["admin"])
    await expect(page.locator("#who")).to_contain_text("stella · admin")
    await expect(page.get_by_role("cell", name="lic_alice_standard_0", exact=True)).to_be_visible()

    # issue: first with a problem the server reports next to its field, then correctly
    form = page.locator("#issue-form")
    await fill_issue_form(form, "dora", "Southern Institute", "open", "teaching", "gb")
    await form.get_by_role("button", name="Issue").click()
    await expect(form.locator('ul.problems[data-for="jurisdiction"]')).to_contain_text(
        "two-letter upper-case"
    )
    await form.get_by_label("Jurisdiction (two letters)").fill("GB")
    await form.get_by_role("button", name="Issue").click()
    await expect(page.get_by_role("cell", name="dora", exact=True)).to_be_visible()
    await c.screenshot("steward")
    await c.assert_labelled()

    # suspend alice's licence, with the required reason
    await page.get_by_role("button", name="Suspend lic_alice_standard_0").click()
    dialog = page.locator("dialog")
    await dialog.get_by_label("Reason (required)").fill("annual review pending")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("button", name="Reactivate lic_alice_standard_0")).to_be_visible()
    await expect(page.get_by_text("suspended: annual review pending (stella,")).to_be_visible()
    lic = await c.gw.services.store.get_licence("lic_alice_standard_0")
    assert lic.status == "suspended"
    dora = [x for x in await c.gw.services.store.list_licences("dora")]
    assert [(x.tier, x.jurisdiction, x.status) for x in dora] == [("open", "GB", "active")]

    # filter by status (client side) and organisation
    await page.get_by_label("Status").first.select_option("suspended")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#licence-list tbody tr")).to_have_count(1)

    # edit a tier: two bad values, both shown next to their fields, nothing stored
    await page.get_by_role("tab", name="Tiers").click()
    await page.get_by_role("button", name="Edit standard").click()
    await page.get_by_label("budget.epsilon", exact=True).fill("-1")
    await page.get_by_label("group_by.max_groups").fill("0")
    await page.get_by_role("button", name="Save new version").click()
    await expect(page.locator('ul.problems[data-for="budget.epsilon"]')).to_contain_text(
        "must be a number in (0, 1000000], a multiple of 0.000001"
    )
    await expect(page.locator('ul.problems[data-for="group_by.max_groups"]')).to_contain_text(
        "must be an integer >= 1"
    )
    assert (await c.gw.services.registry.tier("standard")).budget_epsilon == 5
    # a valid change with its reason is stored as version 2; the history shows the diff
    await page.get_by_label("budget.epsilon", exact=True).fill("6")
    await page.get_by_label("group_by.max_groups").fill("400")
    await page.get_by_label("Reason (required when the budget changes)").fill("board decision")
    await page.get_by_role("button", name="Save new version").click()
    await expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    await page.get_by_role("button", name="History of standard").click()
    diff = page.locator("#diff")
    await expect(diff.get_by_role("row", name="budget.epsilon 5 6")).to_be_visible()
    await expect(diff.get_by_role("row", name="group_by.max_groups 500 400")).to_be_visible()

    # retire the dataset (a reason is required), then restore it
    await page.get_by_role("tab", name="Datasets").click()
    await page.get_by_role("button", name="Retire visits").click()
    await page.locator("dialog").get_by_label("Reason (required)").fill("superseded")
    await page.locator("dialog").get_by_role("button", name="Confirm").click()
    await expect(
        page.get_by_role("cell", name="Synthetic hospital visits. (retired)")
    ).to_be_visible()
    assert (await c.gw.services.registry.dataset("visits")).retired
    await page.get_by_role("button", name="Restore visits").click()
    await page.locator("dialog").get_by_label("Reason (required)").fill("still needed")
    await page.locator("dialog").get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("button", name="Retire visits")).to_be_visible()
    assert not (await c.gw.services.registry.dataset("visits")).retired

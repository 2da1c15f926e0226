"""The steward's tools in a real browser: a licence's spend and the grant form, the bulk import
with its dry run, and registering a dataset from a file (types proposed, bounds and values
entered by hand, every problem shown by its field)."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser
HEADER = "subject,organization,tier,datasets,purpose,jurisdiction,valid_until\n"


async def test_steward_sees_spend_and_grants_budget(console: Any) -> None:
    c = await console()
    lic = await c.gw.licence("alice")
    sql = "SELECT COUNT(*) AS n FROM visits"
    assert (await c.gw.query(sql, epsilon=1.0)).status == 200
    page = await c.open_as("stella", ["admin"])
    await page.get_by_role("button", name=f"Budget {lic.id}").click()
    card = page.locator("#licence-budget")
    spend = card.get_by_role("table", name="Spend per dataset")
    await expect(spend.get_by_role("row", name="visits 5 0 5 1 4")).to_be_visible()

    form = page.locator("#grant-form")
    await form.get_by_label("Epsilon to add").fill("0.0000001")
    await form.get_by_label("Delta to add (optional)").fill("2")
    await form.get_by_label("Reason (required)").fill("chapter 3 of the thesis")
    await form.get_by_role("button", name="Grant").click()
    await expect(form.locator('ul.problems[data-for="epsilon"]')).to_contain_text(
        "a multiple of 0.000001"
    )
    await expect(form.locator('ul.problems[data-for="delta"]')).to_contain_text("[0, 1)")
    assert await c.gw.services.store.grants(lic.id) == []

    await form.get_by_label("Epsilon to add").fill("0.5")
    await form.get_by_label("Delta to add (optional)").fill("")
    await form.get_by_role("button", name="Grant").click()
    await expect(spend.get_by_role("row", name="visits 5 0.5 5.5 1 4.5")).to_be_visible()
    grants = page.locator("#licence-budget").get_by_role("table", name="1 grant(s)")
    await expect(grants).to_contain_text("chapter 3 of the thesis")
    await expect(grants).to_contain_text("stella")
    (stored,) = await c.gw.services.store.grants(lic.id)
    assert (stored.reason, stored.actor) == ("chapter 3 of the thesis", "stella")
    await c.assert_labelled()
    await c.page.locator("#licence-budget").scroll_into_view_if_needed()
    await c.page.screenshot(path=str(c.shots / "steward-budget.png"))


async def test_steward_imports_licences_after_a_dry_run(console: Any) -> None:
    c = await console()
    page = await c.open_as("stella", ["admin"])
    await page.get_by_role("tab", name="Import").click()
    form = page.locator("#import-form")
    bad = HEADER + "ann,Uni A,standard,visits,study,GB,2099-01-01\n"
    bad += "ben,Uni B,platinum,visits,study,gb,2099-01-01\n"
    await form.get_by_label("CSV text").fill(bad)
    await form.get_by_role("button", name="Dry run (check only)").click()
    problems = page.locator("#import-problems li")
    await expect(problems).to_have_count(2)
    await expect(problems.first).to_have_text(
        "row 3: jurisdiction: must be a two-letter upper-case country code"
    )
    await expect(problems.nth(1)).to_have_text("row 3: tier: unknown tier 'platinum'")
    await expect(page.get_by_text("2 problem(s); nothing would be issued")).to_be_visible()
    await c.screenshot("steward-import")

    good = HEADER + "ann,Uni A,standard,visits,study,GB,2099-01-01\n"
    good += "ben,Uni B,open,visits,study,IE,2099-01-01\n"
    await form.get_by_label("CSV text").fill(good)
    await form.get_by_role("button", name="Dry run (check only)").click()
    await expect(page.get_by_text("2 licence(s) would be issued: no problem found")).to_be_visible()
    assert await c.gw.services.store.list_licences(None) == []
    await form.get_by_label("Reason (required to issue").fill("cohort 2027, DSA-14")
    await form.get_by_role("button", name="Import", exact=True).click()
    await expect(page.get_by_text("2 licence(s) issued")).to_be_visible()
    issued = await c.gw.services.store.list_licences(None)
    assert sorted(x.subject for x in issued) == ["ann", "ben"]
    await c.assert_labelled()


async def test_steward_registers_a_dataset_from_a_file(console: Any) -> None:
    c = await console()
    data = c.gw.config.policies.data_dir
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE ward AS SELECT 'p' || (i % 40) AS person_id, 20 + i % 60 AS age,"
        " CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END AS ward,"
        " 1.5 * i AS cost, [i] AS tags FROM range(400) t(i)"
    )
    conn.execute(f"COPY ward TO '{data / 'ward.parquet'}' (FORMAT parquet)")
    conn.close()
    page = await c.open_as("stella", ["admin"])
    await page.get_by_role("tab", name="Register dataset").click()
    await page.get_by_label("File in the data folder").select_option("ward.parquet")
    await page.get_by_role("button", name="Propose columns").click()
    form = page.locator("#register-form")
    await expect(form.get_by_role("row", name="person_id VARCHAR")).to_be_visible()
    age = form.get_by_role("row", name="age")
    await expect(age.locator("select")).to_have_value("int")
    await expect(form.get_by_role("checkbox", name="Include tags")).not_to_be_checked()
    await expect(form.get_by_label("Dataset name")).to_have_value("ward")
    await form.get_by_label("Privacy unit (the identifier column)").select_option("age")
    await expect(form.get_by_label("age type")).to_have_value("identifier")
    await form.get_by_label("Privacy unit (the identifier column)").select_option("person_id")
    await expect(form.get_by_label("person_id type")).to_have_value("identifier")
    await expect(form.get_by_label("age type")).to_have_value("int")
    await form.get_by_label("Rows per unit kept (k)").fill("10")
    await form.get_by_label("Minimum tier").select_option("standard")
    await form.get_by_label("ward values, comma separated").fill("north, south")
    await form.get_by_label("cost lower bound").fill("0")
    await form.get_by_label("cost upper bound").fill("1000")
    # the age bounds are left out: the server's problem is shown next to them
    await form.get_by_label("Reason (kept in the audit log)").fill("new ward data, DSA-9")
    await form.get_by_role("button", name="Register dataset").click()
    await expect(form.locator('ul.problems[data-for="columns.age.bounds"]')).not_to_be_empty()
    assert await c.gw.services.registry.dataset("ward") is None
    await c.screenshot("steward-register")
    await form.get_by_label("age lower bound").fill("0")
    await form.get_by_label("age upper bound").fill("110")
    await form.get_by_role("button", name="Register dataset").click()
    await expect(form.get_by_text("Registered dataset ward.")).to_be_visible()
    spec = await c.gw.services.registry.dataset("ward")
    assert spec is not None and spec.max_rows_per_unit == 10
    assert {col.name: (col.type, col.bounds, col.values) for col in spec.columns} == {
        "person_id": ("identifier", None, None),
        "age": ("int", (0, 110), None),
        "ward": ("category", None, ("north", "south")),
        "cost": ("float", (0, 1000), None),
    }
    await c.assert_labelled()

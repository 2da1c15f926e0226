"""The console's charts drawn from known data: the researcher's bar chart has one bar per group
of a grouped answer, and the auditor's epsilon-over-time chart one line per dataset with one
point per release, ending at that dataset's total."""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
from playwright.async_api import expect

from enclave.audit.record import AuditDraft
from enclave.policy.files import dataset_to_dict

pytestmark = pytest.mark.browser


async def test_researcher_bar_chart_has_a_bar_per_group(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.open_as("alice", ["researcher"])
    for sql, groups in (
        ("SELECT region, COUNT(*) AS n FROM visits GROUP BY region", 5),
        ("SELECT sex, AVG(cost) AS mean_cost FROM visits GROUP BY sex", 2),
    ):
        await page.get_by_label("SQL").fill(sql)
        await page.locator("#run").click()
        chart = page.locator("#results svg.chart")
        await expect(chart.locator("rect.bar")).to_have_count(groups)
        await expect(page.locator("#results table tbody tr")).to_have_count(groups)
        labels = await chart.locator("text[text-anchor=end]").all_text_contents()
        cells = await page.locator("#results table tbody tr td:first-child").all_text_contents()
        assert labels == cells  # one bar per row, in the table's order
        widths = [float(w or 0) for w in await chart.locator("rect.bar").evaluate_all(
            "(bars) => bars.map((b) => b.getAttribute('width'))")]  # fmt: skip
        assert max(widths) > 0
    # an ungrouped answer has no chart
    await page.get_by_label("SQL").fill("SELECT COUNT(*) AS n FROM visits")
    await page.locator("#run").click()
    await expect(page.locator("#charge")).to_be_visible()
    await expect(page.locator("#results svg.chart")).to_have_count(0)


async def test_auditor_epsilon_chart_has_a_point_per_release(console: Any) -> None:
    c = await console()
    data = c.gw.config.policies.data_dir
    shutil.copy(data / "visits.parquet", data / "clinic.parquet")
    registry = c.gw.services.registry
    spec = await registry.dataset("visits")
    body = {**dataset_to_dict(spec), "name": "clinic", "source": "clinic.parquet"}
    draft = AuditDraft(action="dataset.update", outcome="ok", actor="root", reason="test")
    await registry.commit(await registry.check_dataset("clinic", body), "root", draft)
    await c.gw.licence("alice", datasets=("visits", "clinic"))
    spends = {"visits": [0.5, 0.25, 0.25], "clinic": [1.0, 0.5]}
    for name, epsilons in spends.items():
        for i, eps in enumerate(epsilons):
            sql = f"SELECT COUNT(*) AS n FROM {name} WHERE age > {i}"  # noqa: S608
            assert (await c.gw.query(sql, epsilon=eps, dataset=name)).status == 200
    # a cached repeat spends nothing and adds no point
    sql = "SELECT COUNT(*) AS n FROM visits WHERE age > 0"
    assert (await c.gw.query(sql, epsilon=0.5)).status == 200
    page = await c.open_as("otto", ["auditor"])
    await page.get_by_role("tab", name="Summary").click()
    chart = page.locator("svg.chart").first
    lines = chart.locator("path.line")
    await expect(lines).to_have_count(2)
    names = await chart.locator("text.c0, text.c1").all_text_contents()
    assert sorted(names) == ["clinic", "visits"]
    for i, name in enumerate(names):
        d = await lines.nth(i).get_attribute("d")
        assert len(re.findall(r"[ML]", d or "")) == len(spends[name])
    # the highest line ends at the top of the scale: clinic's total, 1.5
    await expect(chart.locator("text", has_text="ε 1.5")).to_have_count(1)
    table = page.get_by_role("table", name="Per dataset")
    await expect(table.get_by_role("row", name="visits 1 3 0")).to_be_visible()
    await expect(table.get_by_role("row", name="clinic 1.5 2 0")).to_be_visible()

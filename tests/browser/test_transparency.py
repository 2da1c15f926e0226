"""The printable transparency page in real Chromium: its inline style sheet is allowed by the
page's strict CSP (and nothing else is loaded or run), and it prints to PDF."""

from __future__ import annotations

from typing import Any

from tests.web.test_transparency import SECRETS, _seed


async def test_the_report_page_renders_under_its_csp_and_prints(console: Any) -> None:
    c = await console(transparency={"public": True})
    await _seed(c.gw)
    page = await c.new_page()
    messages: list[str] = []
    page.on("console", lambda msg: messages.append(msg.text))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    resp = await page.goto(f"{c.base}/v1/transparency?format=html&period=month")
    assert resp.status == 200
    assert await page.title() == "Transparency report"
    # the style applied: the CSP's hash matches the inline sheet
    collapse = await page.evaluate(
        "getComputedStyle(document.querySelector('table')).borderCollapse"
    )
    assert collapse == "collapse"
    assert not [m for m in messages if "Content Security Policy" in m], messages
    assert len(requests) == 1  # the page itself: no script, image, font or style fetched
    text = await page.inner_text("body")
    assert "visits" in text and "0.3" in text
    for secret in SECRETS:
        assert secret not in text
    await c.screenshot("transparency-report")
    pdf = await page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 2000

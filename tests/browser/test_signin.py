"""Signing in: pasted tokens, refused tokens, and OpenID Connect (code flow with PKCE) against a
stand-in identity provider that checks the verifier."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import expect

from enclave.devkeys import generate_keys, mint_token
from tests.browser.idp import AUDIENCE, CLIENT_ID, Idp, make_idp_app, s256
from tests.conftest import ISSUER

pytestmark = pytest.mark.browser


async def test_sign_in_needs_a_valid_token_and_each_role_gets_its_view(
    console: Any, tmp_path: Any
) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.new_page()
    await page.goto(f"{c.base}/console")
    # no token: the sign-in alone, no views, no data
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#nav button")).to_have_count(0)
    assert await page.locator("table").count() == 0
    # a token the gateway refuses (right kid, wrong key) is dropped: back to the sign-in
    other = generate_keys(tmp_path / "other", kid="test-key")
    forged = mint_token(other.private_pem, sub="eve", roles=["auditor"], issuer=ISSUER,
                        audience=AUDIENCE, ttl_s=600, kid="test-key")  # fmt: skip
    await page.get_by_label("Bearer token").fill(forged)
    await page.get_by_role("button", name="Sign in with token").click()
    await expect(page.get_by_role("alert")).to_contain_text("refused the token")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('enclave.token')") is None
    assert await page.locator("#events tbody tr").count() == 0
    # each role, by pasting its token, gets its own view and no other
    views = {"researcher": "Researcher", "admin": "Steward", "auditor": "Auditor"}
    for role, heading in views.items():
        await page.get_by_label("Bearer token").fill(c.gw.tokens("alice", [role]))
        await page.get_by_role("button", name="Sign in with token").click()
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        await expect(page.locator("#nav button")).to_have_text([heading])
        await page.locator("#signout").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("document.cookie") == ""


async def test_the_console_works_from_the_keyboard(console: Any) -> None:
    c = await console()
    await c.gw.licence("alice")
    page = await c.new_page()
    await page.goto(f"{c.base}/console")
    # the token field has the focus; Tab reaches the sign-in button, Enter presses it
    await expect(page.get_by_label("Bearer token")).to_be_focused()
    await page.keyboard.type(c.gw.tokens("alice", ["admin"]))
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign in with token")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Steward", exact=True)).to_be_visible()
    # arrow keys move between tabs
    await page.get_by_role("tab", name="Licences").focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("tab", name="Tiers")).to_be_focused()
    await expect(page.get_by_role("tab", name="Tiers")).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("ArrowLeft")
    await expect(page.get_by_role("tab", name="Licences")).to_be_focused()
    # a reason dialog: focus starts in the reason; Escape cancels and changes nothing
    suspend = page.get_by_role("button", name="Suspend lic_alice_standard_0")
    await suspend.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("dialog").get_by_label("Reason (required)")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("dialog")).to_have_count(0)
    assert (await c.gw.services.store.get_licence("lic_alice_standard_0")).status == "active"
    # ... and with a reason typed, Tab to Confirm and Enter: suspended
    await suspend.focus()
    await page.keyboard.press("Enter")
    await page.keyboard.type("audit of the data use")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Reactivate lic_alice_standard_0")).to_be_visible()
    assert (await c.gw.services.store.get_licence("lic_alice_standard_0")).status == "suspended"


async def _with_idp(console: Any, keypair: Any, aiohttp_server: Any) -> tuple[Any, Idp]:
    idp = Idp(keys=keypair)
    server = await aiohttp_server(make_idp_app(idp))
    idp.issuer = str(server.make_url("")).rstrip("/")
    c = await console(auth={"issuer": idp.issuer}, console={"oidc_client_id": CLIENT_ID})
    return c, idp


async def test_openid_connect_sign_in_with_pkce(
    console: Any, keypair: Any, aiohttp_server: Any
) -> None:
    c, idp = await _with_idp(console, keypair, aiohttp_server)
    page = await c.new_page()
    # a forged return (a code with a state this tab never sent) is refused before any exchange
    await page.goto(f"{c.base}/console?code=stolen&state=guessed")
    await expect(page.get_by_role("alert")).to_contain_text("state does not match")
    assert page.url == f"{c.base}/console"
    assert await page.evaluate("sessionStorage.getItem('enclave.token')") is None
    # the real flow: discovery, authorize (S256 challenge), code exchange with the verifier
    await page.get_by_role("button", name="Sign in with your organisation").click()
    await expect(page.locator("#who")).to_contain_text("olivia · researcher, auditor")
    assert page.url == f"{c.base}/console"  # code and state are gone from the address bar
    await expect(page.locator("#nav button")).to_have_text(["Researcher", "Auditor"])
    assert idp.refused == [] and idp.codes == {}
    csp = (await c.gw.client.get("/console")).headers["Content-Security-Policy"]
    assert f"connect-src 'self' {idp.issuer};" in csp


async def test_a_link_cannot_put_its_own_words_in_the_sign_in(
    console: Any, keypair: Any, aiohttp_server: Any
) -> None:
    """Anyone can link to ``/console?error=<text>``: without this tab's own state nothing from
    the query is shown; a refusal that answers the tab's request shows only its error code."""
    c, idp = await _with_idp(console, keypair, aiohttp_server)
    page = await c.new_page()
    lure = "Your session expired. Paste your token at https://evil.example/renew"
    await page.goto(f"{c.base}/console?{urlencode({'error': lure, 'state': 'guessed'})}")
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text("sign-in failed: the state does not match the request")
    assert "evil.example" not in await page.locator("body").inner_text()
    assert page.url == f"{c.base}/console"
    # the identity provider's own refusal, with the tab's state: its code, and only that
    idp.deny = True
    await page.get_by_role("button", name="Sign in with your organisation").click()
    await expect(alert).to_have_text("sign-in refused by the identity provider (access_denied)")
    assert await page.evaluate("sessionStorage.getItem('enclave.token')") is None


async def test_the_stand_in_refuses_a_wrong_verifier(
    keypair: Any, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    idp = Idp(keys=keypair)
    client = await aiohttp_client(make_idp_app(idp))
    idp.issuer = str(client.make_url("")).rstrip("/")
    redirect = "http://127.0.0.1:9/console"
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect,
              "scope": "openid", "state": "s", "nonce": "n", "code_challenge_method": "S256",
              "code_challenge": s256("the-right-verifier-" + "x" * 30)}  # fmt: skip
    for verifier, status in (("a-wrong-verifier-" + "x" * 30, 400), (None, 200)):
        resp = await client.get("/authorize", params=params, allow_redirects=False)
        code = resp.headers["Location"].split("code=")[1].split("&")[0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                "client_id": CLIENT_ID,
                "code_verifier": verifier or "the-right-verifier-" + "x" * 30}  # fmt: skip
        answer = await client.post("/token", data=form)
        assert answer.status == status, await answer.text()
    assert idp.refused == ["invalid_grant: PKCE verifier does not match the challenge"]

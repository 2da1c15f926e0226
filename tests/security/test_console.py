"""The web console: strict CSP and related headers, no inline code, only its own files, and no
data without a valid token (every API path the console calls answers 401 without one)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from enclave.web.console import STATIC

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
SCRIPTS = sorted(p.name for p in STATIC.glob("*.js"))


async def test_console_responses_carry_the_strict_policy(make_gateway: Any) -> None:
    gw = await make_gateway()
    served = [("/console", "text/html"), ("/console/config.json", "application/json")]
    served += [(f"/console/{name}", "text/javascript") for name in SCRIPTS]
    served += [("/console/app.css", "text/css")]
    for path, media in served:
        resp = await gw.client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == media, path
        assert resp.headers["Content-Security-Policy"] == CSP, path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in resp.headers
    settings = await (await gw.client.get("/console/config.json")).json()
    assert settings["oidc_client_id"] is None and settings["issuer"] == gw.config.auth.issuer


async def test_the_issuer_is_reachable_only_when_openid_connect_is_configured(
    make_gateway: Any,
) -> None:
    gw = await make_gateway(
        auth={"issuer": "https://login.example.org/realms/r"}, console={"oidc_client_id": "c"}
    )
    csp = (await gw.client.get("/console")).headers["Content-Security-Policy"]
    assert "connect-src 'self' https://login.example.org;" in csp
    # API answers keep the general policy
    api = (await gw.client.get("/healthz")).headers["Content-Security-Policy"]
    assert "login.example.org" not in api


async def test_only_the_console_files_are_served(make_gateway: Any) -> None:
    gw = await make_gateway()
    for path in ("/console/index.html", "/console/..%2fconsole.py", "/console/console.py",
                 "/console/%2e%2e%2f%2e%2e%2fconfig.py", "/console/App.js", "/console/nope.js",
                 "/console/.hidden.js"):  # fmt: skip
        resp = await gw.client.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "application/problem+json"


async def test_the_console_can_be_switched_off(make_gateway: Any) -> None:
    gw = await make_gateway(console={"enabled": False})
    for path in ("/console", "/console/app.js", "/console/config.json"):
        assert (await gw.client.get(path)).status == 404, path


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def test_no_inline_script_or_style_and_no_other_origin() -> None:
    parser = _Tags()
    parser.feed((STATIC / "index.html").read_text())
    for tag, attrs in parser.found:
        assert tag != "style"
        assert "style" not in attrs
        assert not any(name.startswith("on") for name in attrs)
        if tag == "script":
            assert attrs["src"] == "/console/app.js" and attrs["type"] == "module"
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"^(https?:)?//", value), (tag, value)
    code = "\n".join((STATIC / name).read_text() for name in SCRIPTS)
    code = code.replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, not a fetch
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")
    sinks += ("new Function", "localStorage", "document.cookie", "http://", "https://")
    sinks += ("postMessage", '"message"', "window.open", "javascript:", "srcdoc")
    for sink in sinks:
        assert sink not in code, sink


async def test_every_api_path_the_console_calls_needs_a_token(make_gateway: Any) -> None:
    gw = await make_gateway()
    code = "\n".join((STATIC / name).read_text() for name in SCRIPTS)
    paths = sorted(set(re.findall(r"[\"`](/v1/[a-z/]+)", code)))
    assert len(paths) >= 10, paths
    for path in paths:
        for method in ("GET", "POST", "PUT", "PATCH"):
            resp = await gw.client.request(method, path + ("x" if path.endswith("/") else ""))
            if resp.status in (404, 405):
                continue
            assert resp.status == 401, (method, path, resp.status)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")

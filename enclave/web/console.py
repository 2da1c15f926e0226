"""The web console at ``/console``: static files (no build step) that call the public JSON API.

The console is a client like any other: it holds the bearer token in ``sessionStorage`` (no
cookies, so no CSRF surface) and every decision is the API's. These routes are public and
serve only the fixed files of ``enclave/console/static/`` plus the public sign-in settings
(issuer and OpenID Connect client id). Console responses carry a strict
Content-Security-Policy (``console_headers``, in ``on_response_prepare``): scripts and styles
from this origin only (no inline code), API calls to this origin and to the configured issuer
(discovery and code exchange), no framing, and Trusted Types with no policy at all, so every
HTML or script sink (``innerHTML``, ``insertAdjacentHTML``, ``document.write``, a script's
``src`` or text) throws in browsers that enforce them: the console writes text only.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from enclave.config import Config
from enclave.errors import NotFound
from enclave.web.body import json_response
from enclave.web.keys import config_key
from enclave.web.roles import public

STATIC = Path(__file__).resolve().parent.parent / "console" / "static"
_ASSET = re.compile(r"^[a-z][a-z0-9-]{0,40}\.(js|css)$")
MEDIA = {"js": "text/javascript", "css": "text/css", "html": "text/html"}
_cache: dict[str, bytes] = {}


def register(app: web.Application, config: Config) -> None:
    """Add the console routes and headers, unless ``console.enabled`` is false."""
    if not config.console.enabled:
        return
    app.router.add_get("/console", index)
    app.router.add_get("/console/config.json", settings)
    app.router.add_get("/console/{file}", asset)
    app.on_response_prepare.append(console_headers)


def _read(name: str) -> bytes:
    if name not in _cache:
        _cache[name] = (STATIC / name).read_bytes()
    return _cache[name]


@public
async def index(request: web.Request) -> web.Response:
    return web.Response(body=_read("index.html"), content_type=MEDIA["html"], charset="utf-8")


@public
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if not _ASSET.match(name) or not (STATIC / name).is_file():
        raise NotFound("no such console file")
    kind = name.rsplit(".", 1)[1]
    return web.Response(body=_read(name), content_type=MEDIA[kind], charset="utf-8")


@public
async def settings(request: web.Request) -> web.Response:
    cfg = request.app[config_key]
    return json_response(
        {
            "issuer": cfg.auth.issuer,
            "audience": cfg.auth.audience,
            "roles_claim": cfg.auth.roles_claim,
            "oidc_client_id": cfg.console.oidc_client_id or None,
            "oidc_scopes": list(cfg.console.oidc_scopes),
        }
    )


def content_security_policy(config: Config) -> str:
    connect = "'self'"
    if config.console.oidc_client_id:
        parts = urlsplit(config.auth.issuer)
        connect += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    )


async def console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` for console paths (runs before the general security headers)."""
    if request.path != "/console" and not request.path.startswith("/console/"):
        return
    response.headers["Content-Security-Policy"] = content_security_policy(request.app[config_key])
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"

"""A small OpenID Connect identity provider stand-in for the console's sign-in tests.

Discovery, an authorize endpoint that approves a fixed test user at once, a token endpoint
that CHECKS the PKCE verifier against the challenge (S256) and issues real ES256-signed JWTs
(an access token for the gateway and an ID token for the console), and the JWKS. Each code
works once. Responses allow any origin (CORS), as an IdP must for a browser client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from enclave.devkeys import KeyPaths, mint_token

CLIENT_ID = "enclave-console"
AUDIENCE = "enclave-gateway"
idp_key = web.AppKey("idp", "Idp")


@dataclass
class Idp:
    keys: KeyPaths
    user: str = "olivia"
    roles: tuple[str, ...] = ("researcher", "auditor")
    issuer: str = ""
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # why token requests were refused
    deny: bool = False  # answer the authorization request with error=access_denied


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _cors(resp: web.Response) -> web.Response:
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


async def discovery(request: web.Request) -> web.Response:
    iss = request.app[idp_key].issuer
    return _cors(
        web.json_response(
            {
                "issuer": iss,
                "authorization_endpoint": f"{iss}/authorize",
                "token_endpoint": f"{iss}/token",
                "jwks_uri": f"{iss}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }
        )
    )


async def authorize(request: web.Request) -> web.Response:
    idp = request.app[idp_key]
    q = request.query
    if (
        q.get("response_type") != "code"
        or q.get("client_id") != CLIENT_ID
        or q.get("code_challenge_method") != "S256"
        or not q.get("code_challenge")
        or "openid" not in q.get("scope", "").split()
    ):
        raise web.HTTPBadRequest(text="bad authorization request")
    if idp.deny:
        denied = urlencode({"error": "access_denied", "state": q.get("state", "")})
        raise web.HTTPFound(q["redirect_uri"] + "?" + denied)
    code = secrets.token_urlsafe(16)
    idp.codes[code] = {
        "challenge": q["code_challenge"],
        "nonce": q.get("nonce", ""),
        "redirect_uri": q["redirect_uri"],
    }
    target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
    raise web.HTTPFound(target)


async def token(request: web.Request) -> web.Response:
    idp = request.app[idp_key]
    form = await request.post()
    grant = idp.codes.pop(str(form.get("code", "")), None)
    problem = None
    if form.get("grant_type") != "authorization_code" or form.get("client_id") != CLIENT_ID:
        problem = "invalid_request"
    elif grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
        problem = "invalid_grant"
    elif s256(str(form.get("code_verifier", ""))) != grant["challenge"]:
        problem = "invalid_grant: PKCE verifier does not match the challenge"
    if problem or grant is None:
        idp.refused.append(problem or "invalid_grant")
        return _cors(web.json_response({"error": (problem or "").split(":")[0]}, status=400))
    common: dict[str, Any] = {
        "sub": idp.user,
        "issuer": idp.issuer,
        "ttl_s": 600,
        "kid": "test-key",
    }
    access = mint_token(idp.keys.private_pem, roles=list(idp.roles), audience=AUDIENCE, **common)
    id_token = mint_token(
        idp.keys.private_pem,
        roles=[],
        audience=CLIENT_ID,
        extra_claims={"nonce": grant["nonce"]},
        **common,
    )
    body = {"access_token": access, "id_token": id_token, "token_type": "Bearer"}
    return _cors(web.json_response(body))


async def jwks(request: web.Request) -> web.Response:
    return _cors(web.json_response(json.loads(request.app[idp_key].keys.jwks_json.read_text())))


def make_idp_app(idp: Idp) -> web.Application:
    app = web.Application()
    app[idp_key] = idp
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/token", token)
    app.router.add_get("/jwks", jwks)
    return app

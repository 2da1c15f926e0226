"""Request id, path and body-size guards, bearer authentication and the request rate limits.

Order (outermost first): ``request_id_middleware`` → ``problem_middleware`` →
``auth_middleware``. Public routes (health, metrics, OpenAPI, console) skip authentication;
everything else needs exactly one valid bearer token, checked against revocations on every
request, and is counted against the limits of ``enclave/ratelimit.py``: per source address
always, per address for failed authentications, per subject once authenticated (before the
handler runs, so refused requests count too). Behind a reverse proxy the source address is
the proxy's: put per-client limits there, or rely on the per-subject limit.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from enclave.audit.context import AuditContext
from enclave.auth.principal import authenticate
from enclave.errors import AuthenticationError, InvalidToken, PayloadTooLarge
from enclave.ids import new_id
from enclave.inputs import invalid, text_problem
from enclave.web.keys import (
    audit_ctx_key,
    config_key,
    jwks_key,
    principal_key,
    request_id_key,
    services_key,
    store_key,
)
from enclave.web.roles import is_public

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _CLIENT_ID.match(given) else new_id("req")
    request[request_id_key] = request_id
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


def path_problems(request: web.Request) -> list[str]:
    """Every path parameter (``{id}``, ``{name}``) that could not be kept (a ``%00``): refused
    before any handler looks it up or audits it."""
    return [
        f"{name}: {problem}"
        for name, value in request.match_info.items()
        if (problem := text_problem(value)) is not None
    ]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if problems := path_problems(request):
        raise invalid(problems)
    if is_public(route.handler) or route.resource is None:
        return await handler(request)
    cfg = request.app[config_key]
    limits = cfg.limits
    limiter = request.app[services_key].limiter
    addr = request.remote or "unknown"
    by_addr, failures = f"addr:{addr}", f"fail:{addr}"
    limiter.refuse_blocked(by_addr, failures)  # a flooding address costs no verification
    length = request.content_length
    if length is not None and length > cfg.server.max_body_bytes:
        raise PayloadTooLarge(f"the body exceeds {cfg.server.max_body_bytes} bytes")
    try:
        principal = await authenticate(
            one_authorization(request),
            request.app[jwks_key],
            cfg.auth,
            request.app[store_key].is_revoked,
        )
    except AuthenticationError:
        await limiter.hit(
            {by_addr: limits.per_address_per_minute, failures: limits.unauthenticated_per_minute}
        )
        raise
    subject = f"sub:{principal.subject}"
    limiter.refuse_blocked(subject)
    request[principal_key] = principal
    request[audit_ctx_key] = AuditContext(
        request_id=request[request_id_key],
        client=request.remote,
        actor=principal.subject,
        roles=tuple(sorted(principal.roles)),
        detail={"method": request.method, "path": request.path},
        max_sql=limits.audit_sql_chars,
        max_name=limits.audit_name_chars,
    )
    await limiter.hit(
        {by_addr: limits.per_address_per_minute, subject: limits.per_subject_per_minute}
    )
    return await handler(request)


def one_authorization(request: web.Request) -> str | None:
    """The ``Authorization`` header, refusing two or more: a proxy in front may read a
    different one than we would, so which token applies must not be a guess."""
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        raise InvalidToken("send exactly one Authorization header")
    return values[0] if values else None


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: no sniffing, no framing, no caching of answers."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    )
    if request.path.startswith("/v1/"):
        response.headers.setdefault("Cache-Control", "no-store")

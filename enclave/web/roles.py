"""Deny by default: every non-public handler declares the role it needs.

``@requires_role("admin")`` records the roles on the handler (``tests/web/
test_routes_declare_roles.py`` walks the router and fails on a route without one) and refuses
callers that hold none of them. ``@public`` marks the health and console routes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from aiohttp import web
from aiohttp.typedefs import Handler

from enclave.errors import RoleRequired
from enclave.web.keys import principal_key

ROLES_ATTR = "__enclave_roles__"
PUBLIC_ATTR = "__enclave_public__"


def requires_role(*roles: str) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            principal = request.get(principal_key)
            if principal is None or not any(principal.has(r) for r in roles):
                raise RoleRequired(f"this endpoint requires the role {' or '.join(roles)}")
            return await handler(request)

        setattr(wrapper, ROLES_ATTR, tuple(roles))
        return wrapper

    return decorate


def public(handler: Handler) -> Handler:
    setattr(handler, PUBLIC_ATTR, True)
    return handler


def route_roles(handler: object) -> tuple[str, ...] | None:
    return getattr(handler, ROLES_ATTR, None)


def is_public(handler: object) -> bool:
    return bool(getattr(handler, PUBLIC_ATTR, False))

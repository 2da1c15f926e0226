"""Deny by default: every route that is not explicitly public declares the role it needs."""

from __future__ import annotations

from typing import Any

from enclave.web.roles import is_public, route_roles

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


async def test_every_route_declares_a_role_or_is_public(make_gateway: Any) -> None:
    gw = await make_gateway()
    seen = 0
    for route in gw.app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        seen += 1
        if is_public(route.handler):
            assert path in PUBLIC or str(path).startswith("/console"), path
            continue
        roles = route_roles(route.handler)
        assert roles, f"{route.method} {path} declares no role"
        assert set(roles) <= {"researcher", "admin", "auditor"}
    assert seen >= 15


async def test_each_role_is_refused_elsewhere(make_gateway: Any) -> None:
    gw = await make_gateway()
    c = gw.client
    probes = {
        "researcher": ("GET", "/v1/budget"),
        "admin": ("GET", "/v1/admin/licences"),
    }
    for needed, (method, path) in probes.items():
        for role in ("researcher", "admin", "auditor"):
            if role == needed:
                continue
            resp = await c.request(method, path, headers=gw.auth("mallory", [role]))
            assert resp.status == 403, (role, path)
            body = await resp.json(content_type=None)
            assert body["type"].endswith("/role-required")
        ok = await c.request(method, path, headers=gw.auth("someone", [needed]))
        assert ok.status == 200, (needed, path, await ok.text())

"""The whole role matrix, from the documented operations: every operation that needs a role
answers 401 without a token and 403 ``role-required`` (audited) to each other role, and lets
its own role past the role check. A new route cannot slip out of the table: the OpenAPI tests
hold the table to the router."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.audit.log import AuditFilter
from enclave.web.openapi import OPERATIONS

ROLES = ("researcher", "admin", "auditor")
GUARDED = [op for op in OPERATIONS if op.role is not None]


def _url(path: str) -> str:
    return path.replace("{id}", "lic_nope").replace("{name}", "standard")


async def _call(gw: Any, op: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body = {} if op.body is not None else None
    resp = await gw.client.request(op.method.upper(), _url(op.path), json=body, headers=headers)
    problem = resp.content_type == "application/problem+json"
    return resp.status, (await resp.json(content_type=None)) if problem else {}


def _allowed(op: Any) -> tuple[str, ...]:
    """The roles an operation admits (any one of them will do)."""
    return (op.role,) if isinstance(op.role, str) else tuple(op.role)


def test_every_role_guards_some_operation() -> None:
    assert {role for op in GUARDED for role in _allowed(op)} == set(ROLES)


@pytest.mark.parametrize("op", GUARDED, ids=lambda op: f"{op.method.upper()} {op.path}")
async def test_only_the_named_role_gets_past_the_role_check(make_gateway: Any, op: Any) -> None:
    gw = await make_gateway()
    status, body = await _call(gw, op, {})
    assert status == 401 and body["type"].endswith("/missing-token"), body
    others = [r for r in ROLES if r not in _allowed(op)]
    for role in others:
        for roles in ([role], others, []):
            status, body = await _call(gw, op, gw.auth("mallory", roles))
            assert status == 403 and body["type"].endswith("/role-required"), (roles, body)
    for role in _allowed(op):
        status, body = await _call(gw, op, gw.auth("someone", [role]))
        assert status not in (401, 403) or not body["type"].endswith("/role-required"), body
        assert status < 500, body
    denied = await gw.services.store.audit_events(AuditFilter(actor="mallory", outcome="denied"))
    assert len(denied) == 3 * len(others), "every role refusal is audited"

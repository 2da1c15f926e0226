"""``GET /openapi.json``: a valid OpenAPI 3.1 document that matches the router and the roles.

The document is checked by a real validator (openapi-spec-validator), held to the router in
both directions, and live responses are validated against the schemas it declares for them
(jsonschema, draft 2020-12, the dialect of OpenAPI 3.1).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from openapi_spec_validator import validate as validate_spec
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from enclave.errors import all_error_classes
from enclave.web.roles import is_public, route_roles

DOC_URI = "urn:enclave:openapi"
METHODS = {"get", "post", "put", "patch", "delete"}
SQL = "SELECT region, COUNT(*) AS n, MEDIAN(age) AS med FROM visits GROUP BY region"


async def fetch_doc(gw: Any) -> dict[str, Any]:
    resp = await gw.client.get("/openapi.json")  # public: no token
    assert resp.status == 200
    assert resp.content_type == "application/json"
    doc: dict[str, Any] = await resp.json()
    return doc


def served_routes(app: web.Application) -> dict[tuple[str, str], Any]:
    """(method, path template) → handler for every API route (HEAD and static files aside)."""
    out: dict[tuple[str, str], Any] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        assert route.resource is not None
        out[(route.method.lower(), route.resource.canonical)] = route.handler
    return out


def documented(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def check(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """Validate ``body`` against the schema the document declares for that response."""
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method} {path} does not document {status}"
    media = "application/json" if status < 400 else "application/problem+json"
    pointer = "/".join(
        p.replace("~", "~0").replace("/", "~1")
        for p in ("paths", path, method, "responses", str(status), "content", media, "schema")
    )
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator(
        {"$ref": f"{DOC_URI}#/{pointer}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    validator.validate(body)


async def test_document_is_valid_openapi_31(make_gateway: Any) -> None:
    gw = await make_gateway()
    doc = await fetch_doc(gw)
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)  # raises on any violation of the OpenAPI 3.1 schema
    broken = copy.deepcopy(doc)  # the validator is real: an undeclared path parameter fails
    broken["paths"]["/v1/admin/licences/{id}"]["get"]["parameters"] = []
    with pytest.raises(OpenAPIValidationError):
        validate_spec(broken)
    # the validator does not resolve every $ref; make sure each one points somewhere
    refs = list(all_refs(doc))
    assert len(refs) > 40
    for target in refs:
        node: Any = doc
        for part in target.removeprefix("#/").split("/"):
            node = node[part]  # KeyError: a dangling $ref


def all_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_refs(item)


async def test_every_served_route_is_documented_and_every_documented_route_served(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    doc = await fetch_doc(gw)
    served = set(served_routes(gw.app))
    docs = set(documented(doc))
    assert served - docs == set(), "served but not documented"
    assert docs - served == set(), "documented but not served"
    assert len(served) >= 25  # health, researcher, admin and auditor endpoints


async def test_documented_role_is_the_role_the_handler_checks(make_gateway: Any) -> None:
    gw = await make_gateway()
    doc = await fetch_doc(gw)
    ops = documented(doc)
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for key, handler in served_routes(gw.app).items():
        op = ops[key]
        if is_public(handler):
            assert op["security"] == [] and "x-required-role" not in op, key
        else:
            roles = tuple(op.get("x-roles", [op["x-required-role"]]))
            assert roles == route_roles(handler), key
            assert op["security"] == [{"bearerAuth": []}], key
            assert "401" in op["responses"] and "403" in op["responses"], key


async def test_problem_types_cover_the_error_tree(make_gateway: Any) -> None:
    gw = await make_gateway()
    doc = await fetch_doc(gw)
    catalogue = doc["components"]["x-problem-types"]
    classes = all_error_classes()
    assert [c["class"] for c in catalogue] == [c.__name__ for c in classes]
    assert {(c["type"], c["status"]) for c in catalogue} == {
        (c.type_uri(), c.status) for c in classes
    }
    known = set(doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"])
    assert known == {c.type_uri() for c in classes}
    for (method, path), op in documented(doc).items():
        assert set(op["x-problem-types"]) <= known, (method, path)
        for status, resp in op["responses"].items():
            if int(status) >= 400 and "application/problem+json" in resp["content"]:
                narrowed = resp["content"]["application/problem+json"]["schema"]["allOf"][1]
                for uri in narrowed["properties"]["type"]["enum"]:
                    cls = next(c for c in catalogue if c["type"] == uri)
                    assert cls["status"] == int(status), (method, path, uri)
    query_types = set(doc["paths"]["/v1/queries"]["post"]["x-problem-types"])
    for name in ("budget-exhausted", "unsupported-query", "rate-limited", "query-timeout"):
        assert any(t.endswith("/" + name) for t in query_types), name


async def test_live_researcher_responses_match_their_schemas(make_gateway: Any) -> None:
    gw = await make_gateway()
    doc = await fetch_doc(gw)
    lic = await gw.licence()
    c, auth = gw.client, gw.auth()

    first = await gw.query(SQL, epsilon=0.5)
    assert first.status == 200
    check(doc, "post", "/v1/queries", 200, await first.json())
    repeat = await gw.query(SQL, epsilon=0.5)
    repeat_body = await repeat.json()
    assert repeat_body["cached"] is True
    check(doc, "post", "/v1/queries", 200, repeat_body)
    estimate = await gw.query(SQL, epsilon=0.3, path="/v1/queries/estimate")
    check(doc, "post", "/v1/queries/estimate", 200, await estimate.json())
    for path in ("/v1/datasets", "/v1/budget", "/v1/queries"):
        resp = await c.get(path, headers=auth)
        assert resp.status == 200, path
        check(doc, "get", path, 200, await resp.json())

    bad = await gw.query("SELECT person_id FROM visits", epsilon=0.5)
    assert bad.status in (400, 403)
    check(doc, "post", "/v1/queries", bad.status, await bad.json(content_type=None))
    anonymous = await c.get("/v1/budget")
    assert anonymous.status == 401
    check(doc, "get", "/v1/budget", 401, await anonymous.json(content_type=None))
    wrong_role = await c.get(f"/v1/admin/licences/{lic.id}", headers=auth)
    assert wrong_role.status == 403
    check(doc, "get", "/v1/admin/licences/{id}", 403, await wrong_role.json(content_type=None))

    # the check is not vacuous: a body that breaks the schema is rejected
    broken = dict(repeat_body, rows="not a list")
    with pytest.raises(ValidationError):
        check(doc, "post", "/v1/queries", 200, broken)
    with pytest.raises(ValidationError):
        check(doc, "post", "/v1/queries", 403, await (await gw.query(SQL)).json())


async def test_live_admin_auditor_and_health_responses_match_their_schemas(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    doc = await fetch_doc(gw)
    lic = await gw.licence()
    c, admin = gw.client, gw.auth("steward", ["admin"])
    for path in ("/v1/admin/licences", "/v1/admin/tiers", "/v1/admin/datasets"):
        resp = await c.get(path, headers=admin)
        assert resp.status == 200, path
        check(doc, "get", path, 200, await resp.json())
    for path in (
        f"/v1/admin/licences/{lic.id}",
        "/v1/admin/tiers/standard",
        "/v1/admin/datasets/visits",
    ):
        resp = await c.get(path, headers=admin)
        assert resp.status == 200, path
        template = path.rsplit("/", 1)[0] + ("/{id}" if "licences" in path else "/{name}")
        check(doc, "get", template, 200, await resp.json())
    missing = await c.get("/v1/admin/licences/lic_nobody", headers=admin)
    assert missing.status == 404
    check(doc, "get", "/v1/admin/licences/{id}", 404, await missing.json(content_type=None))
    revoked = await c.post(
        "/v1/admin/revocations", json={"jti": "j-1", "reason": "lost laptop"}, headers=admin
    )
    assert revoked.status == 201
    check(doc, "post", "/v1/admin/revocations", 201, await revoked.json())

    auditor = gw.auth("overseer", ["auditor"])
    verify = await c.get("/v1/audit/verify", headers=auditor)
    assert verify.status == 200
    check(doc, "get", "/v1/audit/verify", 200, await verify.json())
    events = await c.get("/v1/audit/events?limit=5", headers=auditor)
    assert events.status == 200
    check(doc, "get", "/v1/audit/events", 200, await events.json())
    for path in ("/v1/audit/summary", "/v1/audit/key"):
        resp = await c.get(path, headers=auditor)
        assert resp.status == 200, path
        check(doc, "get", path, 200, await resp.json())
    bad_page = await c.get("/v1/audit/events?limit=0", headers=auditor)
    check(doc, "get", "/v1/audit/events", 400, await bad_page.json(content_type=None))
    export_doc = doc["paths"]["/v1/audit/export"]["get"]["responses"]["200"]
    for fmt in ("jsonl", "csv"):
        export = await c.get(f"/v1/audit/export?format={fmt}", headers=auditor)
        assert export.status == 200
        assert export.content_type in export_doc["content"], fmt
        assert (
            "Enclave-Audit-Seq" in export.headers and "Enclave-Audit-Seq" in export_doc["headers"]
        )
        await export.read()

    for path in ("/healthz", "/readyz"):
        resp = await c.get(path)
        assert resp.status == 200, path
        check(doc, "get", path, 200, await resp.json())

"""Every error class renders the one problem+json shape; live refusals do too."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave.errors import (
    ConfigError,
    EnclaveError,
    PolicyFileError,
    RateLimited,
    all_error_classes,
)
from enclave.web.problem import PROBLEM_TYPE, problem_response


def _instance(cls: type[EnclaveError]) -> EnclaveError:
    if issubclass(cls, ConfigError | PolicyFileError):
        return cls(["a: first problem", "b: second problem"])  # type: ignore[call-arg]
    if issubclass(cls, RateLimited):
        return cls("slow down", retry_after=7)
    return cls("something specific")


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_renders_problem_json(cls: type[EnclaveError]) -> None:
    resp = problem_response(_instance(cls), "req_1")
    assert resp.status == cls.status
    assert resp.content_type == PROBLEM_TYPE
    assert resp.text is not None
    body = json.loads(resp.text)
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}
    assert body["status"] == cls.status
    assert body["type"].endswith("/" + cls.type)
    assert body["title"] == cls.title
    if cls.status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    if issubclass(cls, RateLimited):
        assert resp.headers["Retry-After"] == "7"


def test_statuses_are_distinct_per_condition() -> None:
    classes = all_error_classes()
    assert {c.status for c in classes} >= {400, 401, 403, 404, 409, 413, 429, 500, 503, 504}


async def _problem(resp: Any) -> dict[str, Any]:
    assert resp.content_type == PROBLEM_TYPE, await resp.text()
    body = await resp.json(content_type=None)
    assert isinstance(body, dict)
    assert "Traceback" not in json.dumps(body)
    return body


async def test_live_refusals_are_problem_json(make_gateway: Any) -> None:
    gw = await make_gateway()
    c = gw.client
    cases = [
        (await c.get("/v1/nowhere", headers=gw.auth()), 404),
        (await c.get("/v1/datasets"), 401),
        (await c.delete("/v1/datasets", headers=gw.auth()), 405),
        (
            await c.post(
                "/v1/queries",
                data=b"{not json",
                headers={**gw.auth(), "Content-Type": "application/json"},
            ),
            400,
        ),
        (
            await c.post(
                "/v1/queries",
                data=b"x" * 70000,
                headers={**gw.auth(), "Content-Type": "application/json"},
            ),
            413,
        ),
        (await c.get("/v1/admin/licences", headers=gw.auth()), 403),
    ]
    for resp, status in cases:
        assert resp.status == status
        body = await _problem(resp)
        assert body["status"] == status
        assert resp.headers["X-Request-Id"] == body["request_id"]

"""Text that no store can keep is refused where it is given. A NUL character cannot be stored
in a PostgreSQL ``TEXT`` column, and a lone surrogate (``"\\ud800"`` in JSON) has no UTF-8
form: accepted at the edge, either one answered 500 or 503, or was written to SQLite where a
later ``enclave store copy`` to PostgreSQL would fail on it. Every route, on both stores,
now answers 400 naming each such string, and nothing of it reaches a record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Gateway, MakeGateway
from tests.store.conftest import temporary_database
from tests.web.test_admin_licences import ADMIN, new_licence

AUDITOR = ("olga", ["auditor"])
RESEARCHER = ("alice", ["researcher"])
BAD = ("a\x00b", "a\ud800b")
SQL = "SELECT COUNT(*) FROM visits"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def gateway(request: pytest.FixtureRequest, make_gateway: MakeGateway) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        yield await make_gateway()
        return
    async with temporary_database() as url:
        gw = await make_gateway(store_url=url)
        yield gw
        await gw.client.close()  # before the database is dropped


def bodies(bad: str, lic: str) -> list[tuple[tuple[str, list[str]], str, str, Any, str]]:
    """(who, method, path, body, where the bad string is) for every route that reads JSON."""
    query = {"dataset": "visits", "sql": SQL, "epsilon": 0.1}
    return [
        (ADMIN, "POST", "/v1/admin/licences", new_licence(subject=bad), "subject"),
        (ADMIN, "PATCH", f"/v1/admin/licences/{lic}", {"purpose": bad}, "purpose"),
        (ADMIN, "PATCH", f"/v1/admin/licences/{lic}", {"purpose": "p", "reason": bad}, "reason"),
        (ADMIN, "POST", "/v1/admin/revocations", {"jti": bad, "reason": "r"}, "jti"),
        (ADMIN, "POST", "/v1/admin/revocations", {"jti": "j", "reason": bad}, "reason"),
        (
            ADMIN, "POST", f"/v1/admin/licences/{lic}/grants",
            {"dataset": "visits", "epsilon": 0.1, "reason": bad}, "reason",
        ),
        (ADMIN, "PUT", "/v1/admin/tiers/standard", {"description": bad}, "description"),
        (ADMIN, "POST", "/v1/admin/datasets/visits/freeze", {"reason": bad}, "reason"),
        (ADMIN, "POST", "/v1/admin/organisations/Uni/suspend", {"reason": bad}, "reason"),
        (RESEARCHER, "POST", "/v1/queries", {**query, "dataset": bad}, "dataset"),
        (RESEARCHER, "POST", "/v1/queries", {**query, "sql": SQL + " -- " + bad}, "sql"),
        (RESEARCHER, "POST", "/v1/queries", {**query, bad: 1}, ascii(bad) + " (a key)"),
        (
            RESEARCHER, "POST", "/v1/queries/estimate/batch",
            {"dataset": "visits", "queries": [{"sql": SQL}, {"sql": bad}]}, "queries[1].sql",
        ),
        (RESEARCHER, "POST", "/v1/queries/jobs", {**query, "sql": bad}, "sql"),
        (
            RESEARCHER, "POST", "/v1/synthetic",
            {"dataset": "visits", "columns": ["age", bad], "epsilon": 1}, "columns[1]",
        ),
    ]  # fmt: skip


async def call(gw: Gateway, who: Any, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()  # ASCII: \u0000, \ud800
    headers = {**gw.auth(*who), "Content-Type": "application/json"}
    resp = await gw.client.request(method, path, data=data, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def assert_nothing_kept(gw: Gateway) -> None:
    resp = await gw.client.get("/v1/audit/export", headers=gw.auth(*AUDITOR))
    assert resp.status == 200
    for line in (await resp.read()).decode("utf-8").splitlines():
        record = json.dumps(json.loads(line), ensure_ascii=False)
        assert "\x00" not in record
        record.encode("utf-8")  # no lone surrogate
    licences = await gw.services.store.list_licences(None)
    assert all("\x00" not in lic.subject + lic.purpose for lic in licences)


@pytest.mark.parametrize("bad", BAD, ids=["nul", "surrogate"])
async def test_every_json_body_refuses_unkeepable_text(gateway: Gateway, bad: str) -> None:
    lic = await gateway.licence("alice")
    for who, method, path, body, where in bodies(bad, lic.id):
        status, problem = await call(gateway, who, method, path, body)
        assert status == 400, (path, where, problem)
        assert any(p.startswith(f"{where}: ") for p in problem["problems"]), (path, problem)
    await assert_nothing_kept(gateway)


async def test_every_unkeepable_string_is_listed(gateway: Gateway) -> None:
    body = {"dataset": "v\x00", "sql": "x\ud800", "accuracy": {"n\x00": {"ci95": 1}}}
    status, problem = await call(gateway, RESEARCHER, "POST", "/v1/queries", body)
    assert status == 400
    assert problem["problems"] == [
        "dataset: must not contain NUL characters",
        "sql: holds a lone surrogate, which is not valid Unicode text",
        "accuracy.'n\\x00' (a key): must not contain NUL characters",
    ]


async def test_query_strings_and_paths_refuse_nul(gateway: Gateway) -> None:
    lic = await gateway.licence("alice")
    for who, path, where in [
        (ADMIN, "/v1/admin/licences?subject=a%00b", "subject"),
        (AUDITOR, "/v1/audit/events?actor=a%00b&limit=x", "actor"),
        (AUDITOR, "/v1/audit/summary?since=%00", "since"),
        (ADMIN, "/v1/admin/data-files/schema?source=a%00b", "source"),
        (RESEARCHER, "/v1/queries?limit=%00", "limit"),
        (ADMIN, "/v1/admin/licences/a%00b", "id"),
        (ADMIN, "/v1/admin/tiers/a%00b", "name"),
        (AUDITOR, "/v1/audit/licences/%00/budget", "id"),
        (RESEARCHER, "/v1/jobs/%00", "id"),
        (RESEARCHER, "/v1/datasets/%00/dummy", "name"),
    ]:
        status, problem = await call(gateway, who, "GET", path)
        assert status == 400, (path, problem)
        assert f"{where}: must not contain NUL characters" in problem["problems"], problem
    status, problem = await call(gateway, AUDITOR, "GET", "/v1/audit/events?actor=%00&limit=x")
    assert len(problem["problems"]) == 2  # the other parameter's problem is listed too
    status, problem = await call(
        gateway, ADMIN, "POST", "/v1/admin/organisations/a%00b/suspend", {"reason": "r"}
    )
    assert status == 400, problem
    resp = await gateway.client.post(
        "/v1/admin/licences/import?reason=%00",
        data=b"subject\n",
        headers={**gateway.auth(*ADMIN), "Content-Type": "text/csv"},
    )
    problem = await resp.json(content_type=None)
    assert resp.status == 400 and "reason: must not contain NUL characters" in problem["problems"]
    assert lic.status == "active"
    await assert_nothing_kept(gateway)

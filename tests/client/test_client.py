"""The researcher's client against a live loopback gateway: every method, the result object,
typed exceptions with the server's detail, the token kept out of every message, and the
blocking wrapper."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from enclave.client import (
    Client,
    EnclaveClient,
    Estimate,
    LargeSpendWarning,
    QueryResult,
    error_from_response,
)
from enclave.client.results import PANDAS_HINT
from enclave.client.sync import INSIDE_LOOP
from enclave.errors import (
    AuthenticationError,
    BadRequest,
    BudgetExhausted,
    ConfigError,
    EnclaveError,
    Forbidden,
    InvalidToken,
    LicenceRefused,
    NotFound,
    PolicyFileError,
    QueryTimeout,
    RateLimited,
    ServiceUnavailable,
    TierRefused,
    UnsupportedQuery,
    all_error_classes,
)
from enclave.web.problem import problem_response

SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY region"
REGIONS = {"north", "south", "east", "west", "central"}


def url_of(gw: Any) -> str:
    return str(gw.client.make_url(""))


async def researcher(make_gateway: Any, **licence: Any) -> tuple[Any, EnclaveClient, str]:
    gw = await make_gateway()
    await gw.licence(**licence)
    token = gw.tokens("alice", ["researcher"])
    return gw, EnclaveClient(url_of(gw), token), token


async def set_tier(gw: Any, **changes: Any) -> None:
    admin = gw.auth("steward", ["admin"])
    tier = await (await gw.client.get("/v1/admin/tiers/standard", headers=admin)).json()
    for key, value in changes.items():
        if isinstance(value, dict):
            tier[key].update(value)
        else:
            tier[key] = value
    tier["reason"] = "client tests: a small limit"
    put = await gw.client.put("/v1/admin/tiers/standard", json=tier, headers=admin)
    assert put.status == 200, await put.text()


async def test_every_method_against_a_live_gateway(make_gateway: Any) -> None:
    gw, client, _ = await researcher(make_gateway)
    async with client:
        datasets = await client.datasets()
        assert [d["name"] for d in datasets] == ["visits"]
        assert "source" not in datasets[0]
        assert set(datasets[0]["columns"]["region"]["values"]) == REGIONS

        est = await client.estimate(SQL, "visits", epsilon=0.5)
        assert isinstance(est, Estimate)
        assert (est.epsilon, est.cached, est.within_budget) == (0.5, False, True)
        assert est.accuracy["n"]["ci95"] is not None and est.accuracy["n"]["ci95"] > 0
        assert est.budget.epsilon_remaining == 5.0

        first = await client.query(SQL, "visits", epsilon=0.5)
        assert isinstance(first, QueryResult)
        assert first.columns == ("region", "n", "mean_cost")
        assert {row[0] for row in first.rows} == REGIONS
        assert (first.epsilon_spent, first.cached, first.release_of) == (0.5, False, None)
        assert first.budget.epsilon_remaining == 4.5 and first.budget.renews is None
        assert first.ci95("n") == est.accuracy["n"]["ci95"]
        assert first.ci95("region") is None
        assert first.raw["query_id"] == first.query_id

        again = await client.query(SQL, "visits", epsilon=0.5)
        assert again.cached and again.epsilon_spent == 0.0
        assert again.rows == first.rows and again.release_of == first.query_id
        assert again.audit_seq > first.audit_seq
        assert (await client.estimate(SQL, "visits", epsilon=0.5)).cached

        default = await client.query("SELECT COUNT(*) AS n FROM visits", "visits")
        assert default.epsilon_spent == 0.1  # the tier's default_epsilon, never its cap

        (line,) = await client.budget()
        assert (line["dataset"], line["epsilon_spent"]) == ("visits", 0.6)
        assert line["epsilon_remaining"] == default.budget.epsilon_remaining == 4.4

        page = await client.history(limit=2)
        assert [q["query_id"] for q in page.queries] == [first.query_id, again.query_id]
        assert page.next_cursor is not None
        rest = await client.history(limit=2, cursor=page.next_cursor)
        assert [q["query_id"] for q in rest.queries] == [default.query_id]
        assert rest.next_cursor is None


async def test_to_records_and_to_pandas(make_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, client, _ = await researcher(make_gateway)
    async with client:
        result = await client.query(SQL, "visits", epsilon=0.5)
    records = result.to_records()
    assert len(records) == len(result.rows)
    assert [list(r.values()) for r in records] == [list(row) for row in result.rows]
    assert all(set(r) == {"region", "n", "mean_cost"} for r in records)

    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError) as info:
        result.to_pandas()
    assert str(info.value) == PANDAS_HINT
    assert "enclave-gateway[pandas]" in str(info.value)


def test_to_pandas_builds_a_frame_when_pandas_is_installed() -> None:
    pytest.importorskip("pandas")
    result = QueryResult.from_json(
        {
            "query_id": "q_1",
            "dataset": "visits",
            "columns": ["region", "n"],
            "rows": [["east", 12], ["west", 30]],
            "epsilon_spent": 0.5,
            "delta_spent": 0.0,
            "cached": False,
            "accuracy": {"n": {"ci95": 3.2}},
            "suppressed_groups": 0,
            "budget": {"epsilon_remaining": 4.5, "delta_remaining": 1e-6, "renews": None},
            "audit_seq": 3,
        }
    )
    frame = result.to_pandas()
    assert list(frame.columns) == ["region", "n", "n_ci95"] and frame["n"].sum() == 42
    assert list(frame["n_ci95"]) == [3.2, 3.2]
    assert frame.attrs["accuracy"]["n"]["ci95"] == 3.2


async def _server_detail(gw: Any, sql: str, epsilon: float | None, dataset: str) -> str:
    resp = await gw.query(sql, epsilon=epsilon, dataset=dataset)
    return str((await resp.json(content_type=None))["detail"])


@pytest.mark.parametrize(
    ("sql", "epsilon", "dataset", "expected"),
    [
        ("SELECT * FROM visits", 0.5, "visits", UnsupportedQuery),
        ("SELECT COUNT(*) FROM visits", 2.0, "visits", TierRefused),
        ("SELECT COUNT(*) FROM visits", 0.5, "nosuch", NotFound),
    ],
)
async def test_refusals_become_typed_errors_with_the_servers_detail(
    make_gateway: Any, sql: str, epsilon: float, dataset: str, expected: type[EnclaveError]
) -> None:
    gw, client, _ = await researcher(make_gateway)
    async with client:
        with pytest.raises(expected) as info:
            await client.query(sql, dataset, epsilon)
    assert type(info.value) is expected
    assert info.value.status == expected.status
    assert info.value.detail == await _server_detail(gw, sql, epsilon, dataset)
    assert any(n.startswith("request id ") for n in info.value.__notes__)


async def test_suspended_licence_is_licence_refused(make_gateway: Any) -> None:
    _, client, _ = await researcher(make_gateway, status="suspended")
    async with client:
        with pytest.raises(LicenceRefused, match="suspended") as info:
            await client.query(SQL, "visits", 0.5)
    assert info.value.status == 403


async def test_budget_exhausted_keeps_the_reason(make_gateway: Any) -> None:
    gw, client, _ = await researcher(make_gateway)
    await set_tier(gw, budget={"epsilon": 0.75}, max_epsilon_per_query=0.5)
    async with client:
        with pytest.warns(LargeSpendWarning, match="spends epsilon 0.5, 67% of the 0.75 left"):
            await client.query("SELECT COUNT(*) AS n FROM visits", "visits", 0.5)
        with pytest.raises(BudgetExhausted) as info:  # refused before the share is weighed
            await client.query(SQL, "visits", 0.5)
        assert (await client.estimate(SQL, "visits", 0.5)).within_budget is False
    assert isinstance(info.value, Forbidden) and info.value.status == 403
    assert "remaining epsilon 0.25" in info.value.detail
    assert info.value.layer == "licence"  # the problem's ``layer`` member, read back


async def test_rate_limited_carries_retry_after(make_gateway: Any) -> None:
    gw, client, _ = await researcher(make_gateway)
    await set_tier(gw, rate_limit_per_minute=1)
    async with client:
        await client.estimate(SQL, "visits", 0.5)
        with pytest.raises(RateLimited) as info:
            await client.estimate(SQL, "visits", 0.5)
    assert 1 <= info.value.retry_after <= 60 and info.value.status == 429


async def test_bad_token_is_401_and_the_token_never_appears(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    token = gw.tokens("alice", ["researcher"], ttl_s=-120)  # expired, validly signed
    client = EnclaveClient(url_of(gw), token)
    async with client:
        with pytest.raises(AuthenticationError) as info:
            await client.datasets()
    err = info.value
    assert type(err) is InvalidToken and err.status == 401
    shown = " ".join(
        [str(err), repr(err), *err.__notes__, repr(client), repr(Client("http://x", token))]
    )
    assert token not in shown and token[-20:] not in shown


def test_every_problem_type_maps_back_to_its_class() -> None:
    """Render each class with the server's renderer and read it back."""
    most_specific = {cls.type: cls for cls in all_error_classes()}
    for cls in all_error_classes():
        if issubclass(cls, PolicyFileError | ConfigError):
            err: EnclaveError = cls(["first problem", "second problem"])
        elif issubclass(cls, RateLimited):
            err = cls("slow down", retry_after=17)
        else:
            err = cls(f"detail of {cls.__name__}")
        resp = problem_response(err, "req-1")
        assert isinstance(resp.body, bytes)
        back = error_from_response(resp.status, resp.headers, resp.body)
        assert type(back) is most_specific[cls.type], cls
        assert back.detail == err.detail and back.status == cls.status
        if isinstance(back, RateLimited):
            assert back.retry_after == 17
        if isinstance(back, PolicyFileError | ConfigError):
            assert back.problems == ["first problem", "second problem"]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, b'{"type": "https://x/problems/brand-new", "detail": "d"}', Forbidden),
        (400, b'{"type": "https://x/problems/budget-exhausted", "detail": "d"}', BadRequest),
        (429, b"", RateLimited),
        (418, b"<html>I am a teapot</html>", BadRequest),
        (502, b"<html>Bad Gateway</html>", EnclaveError),
        (503, b"[1, 2]", ServiceUnavailable),
    ],
)
def test_unknown_types_and_non_json_bodies_fall_back_by_status(
    status: int, body: bytes, expected: type[EnclaveError]
) -> None:
    err = error_from_response(status, CIMultiDict({"retry-after": "9"}), body)
    assert type(err) is expected
    assert "<html>" not in err.detail
    if expected.status != status:
        assert f"HTTP status {status}" in err.__notes__
    if isinstance(err, RateLimited):
        assert err.retry_after == 9


async def test_transport_failures_are_enclave_errors(aiohttp_server: Any) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def proxy_error(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>upstream down</html>", content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://attacker.invalid/steal")

    app = web.Application()
    app.router.add_get("/slow/v1/datasets", slow)
    app.router.add_get("/proxy/v1/datasets", proxy_error)
    app.router.add_get("/moved/v1/datasets", redirect)
    server = await aiohttp_server(app)
    base = str(server.make_url("/"))

    async with EnclaveClient(base + "slow", "tok", timeout=0.2) as client:
        with pytest.raises(QueryTimeout):
            await client.datasets()
    async with EnclaveClient(base + "proxy/", "tok") as client:
        with pytest.raises(EnclaveError) as info:
            await client.datasets()
        assert "HTTP status 502" in info.value.__notes__
    async with EnclaveClient(base + "moved", "tok") as client:
        with pytest.raises(EnclaveError) as info:
            await client.datasets()  # not followed: the token would go to the Location
        assert "HTTP status 307" in info.value.__notes__

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with EnclaveClient(f"http://127.0.0.1:{port}", "secret-token") as client:
        with pytest.raises(ServiceUnavailable) as unreachable:
            await client.datasets()
    assert unreachable.value.__context__ is None and unreachable.value.__cause__ is None
    assert "secret-token" not in str(unreachable.value)


async def test_a_given_session_is_left_open(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    session = gw.client.session
    async with EnclaveClient(url_of(gw), gw.tokens(), session=session) as client:
        assert len(await client.datasets()) == 1
    assert not session.closed


def test_constructor_rejects_bad_arguments() -> None:
    for url in ("ftp://x", "http://", "http://user:pw@x", "http://x/?a=1", "localhost:8080"):
        with pytest.raises(ValueError, match="url"):
            EnclaveClient(url, "t")
    with pytest.raises(ValueError, match="token"):
        EnclaveClient("http://x", "two words")
    with pytest.raises(ValueError, match="timeout"):
        EnclaveClient("http://x", "t", timeout=0)


async def test_sync_client_refuses_inside_a_running_loop(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)
    client = Client(url_of(gw), token)
    with pytest.raises(RuntimeError) as info:
        client.datasets()
    assert str(info.value) == INSIDE_LOOP
    client.close()  # nothing was opened: closing is a no-op even here


async def test_sync_client_works_from_a_plain_thread(make_gateway: Any) -> None:
    gw, _, token = await researcher(make_gateway)

    def script() -> tuple[list[dict[str, Any]], QueryResult, QueryResult, int]:
        with Client(url_of(gw), token) as client:
            names = client.datasets()
            first = client.query(SQL, "visits", 0.5)
            second = client.query(SQL, "visits", 0.5)
            est = client.estimate("SELECT COUNT(*) FROM visits", "visits", 0.25)
            assert est.epsilon == 0.25
            return names, first, second, len(client.history().queries)

    names, first, second, n_history = await asyncio.to_thread(script)
    assert [d["name"] for d in names] == ["visits"]
    assert second.cached and second.rows == first.rows
    assert n_history == 2

"""HTTP-level hardening on a real socket: whole bodies, 413/408, nesting and duplicate keys,
header and body read deadlines, one Authorization header, no token in the access log."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from enclave.web.body import MAX_DEPTH, depth
from tests.conftest import Gateway, MakeGateway

ESTIMATE = "/v1/queries/estimate"
SQL = "SELECT COUNT(*) FROM visits"


async def exchange(gw: Gateway, *parts: bytes, pause: float = 0.3) -> tuple[int, bytes]:
    """Send ``parts`` as separate writes ``pause`` seconds apart; (status, body) of the
    answer, or (0, b"") when the server closes without one."""
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def request_head(gw: Gateway, length: int | None, **headers: str) -> bytes:
    lines = [
        f"POST {ESTIMATE} HTTP/1.1",
        "Host: localhost",
        "Connection: close",
        "Content-Type: application/json",
        f"Authorization: Bearer {gw.tokens('alice', ('researcher',))}",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def problem(body: bytes) -> dict[str, Any]:
    # a Connection: close answer may still be chunked; the JSON object is all we need
    start, end = body.index(b"{"), body.rindex(b"}") + 1
    parsed = json.loads(body[start:end])
    assert isinstance(parsed, dict)
    return parsed


async def test_a_body_split_across_segments_is_read_whole(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    await gw.licence()
    body = json.dumps({"dataset": "visits", "sql": SQL, "epsilon": 0.5}).encode()
    status, answer = await exchange(
        gw, request_head(gw, len(body)) + body[:20], body[20:], pause=0.3
    )
    assert status == 200, answer
    assert problem(answer)["dataset"] == "visits"


async def test_a_chunked_body_over_the_limit_gets_413(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(server={"max_body_bytes": 1000})
    chunk = b'{"sql": "' + b"x" * 600
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 3
    status, answer = await exchange(
        gw, request_head(gw, None, Transfer_Encoding="chunked"), *parts, pause=0.05
    )
    assert status == 413
    assert problem(answer)["type"].endswith("/payload-too-large")


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 20_000])
async def test_deep_nesting_is_refused_with_400(make_gateway: MakeGateway, levels: int) -> None:
    gw = await make_gateway(server={"max_body_bytes": 100_000})
    headers = {**gw.auth(), "Content-Type": "application/json"}
    resp = await gw.client.post(ESTIMATE, data="[" * levels + "]" * levels, headers=headers)
    assert resp.status == 400
    assert "nests" in (await resp.json(content_type=None))["detail"]


async def test_nesting_at_the_limit_reaches_validation(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    nested: Any = 1
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    body = {"dataset": "visits", "sql": SQL, "extra": nested}
    assert depth(body) == MAX_DEPTH
    resp = await gw.client.post(ESTIMATE, json=body, headers=gw.auth())
    detail = (await resp.json(content_type=None))["detail"]
    assert resp.status == 400
    assert "unknown field" in detail  # parsed fine; refused by the request's own rules


async def test_duplicate_keys_are_refused_naming_the_key(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    await gw.licence()
    raw = '{"dataset": "visits", "sql": "SELECT COUNT(*) FROM visits", "dataset": "other"}'
    resp = await gw.client.post(
        ESTIMATE, data=raw, headers={**gw.auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json(content_type=None))["detail"] == 'the body repeats the key "dataset"'


async def test_a_slow_body_is_cut_off_with_408(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(server={"body_timeout_s": 0.5})
    status, answer = await exchange(gw, request_head(gw, 100) + b'{"dataset": ', pause=0)
    assert status == 408
    assert problem(answer)["type"].endswith("/request-timeout")


async def test_slow_headers_close_the_connection(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(server={"header_timeout_s": 0.5})
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /v1/budget HTTP/1.1\r\nHost: localhost\r\n")  # never finished
        await writer.drain()
        # the server hangs up (no answer at all) well before this generous bound
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_two_authorization_headers_are_refused(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    await gw.licence()
    good = gw.tokens("alice", ("researcher",))
    raw = (
        "GET /v1/budget HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Authorization: Bearer {good}\r\nAuthorization: Bearer {good}\r\n\r\n"
    ).encode()
    status, answer = await exchange(gw, raw)
    assert status == 401
    assert problem(answer)["detail"] == "send exactly one Authorization header"


async def test_access_token_in_the_query_is_not_logged(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway()
    token = gw.tokens("alice", ("researcher",))
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    resp = await gw.client.get(f"/v1/budget?access_token={token}&limit=5")
    assert resp.status == 401  # tokens are read from the Authorization header only
    await asyncio.sleep(0.05)  # the access line is written after the answer
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/v1/budget?access_token=REDACTED&limit=5" in line for line in lines), lines
    assert not any(token in line or token[:40] in line for line in lines)

"""Reading JSON bodies: size-capped (413), JSON only (415), strict (no NaN/Infinity; 400)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from enclave.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from enclave.web.keys import config_key


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


async def read_json(request: web.Request) -> Any:
    if request.content_type not in ("application/json", ""):
        raise UnsupportedMediaType("send the body as application/json")
    limit = request.app[config_key].server.max_body_bytes
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not valid JSON") from None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))

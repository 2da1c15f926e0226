"""Reading JSON (and CSV) bodies: whole, size-capped, on a deadline, strict.

- **Whole.** ``request.read()`` reads until the body ends, however many TCP segments it
  arrives in (a read of "what has arrived so far" refuses a valid body split by the network).
- **Size-capped (413).** The app's ``client_max_size`` is ``server.max_body_bytes``: a body
  that grows past it, declared or chunked, is refused with 413 as soon as it does.
- **On a deadline (408).** The whole body must arrive within ``server.body_timeout_s``; a
  client trickling bytes cannot hold a request open for longer.
- **JSON only (415), strict (400).** No NaN/Infinity, no duplicate keys in an object
  (``strict_json.py``), no nesting deeper than ``MAX_DEPTH``, and no string (key or value)
  that could not be kept (``inputs.text_problem``: NUL, lone surrogates), each one listed.
  The decoder's own recursion is bounded by Python's limit (far deeper bodies raise
  ``RecursionError`` in C, refused as the same 400); the depth check itself is iterative.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from enclave.errors import BadRequest, RequestTimeout, UnsupportedMediaType
from enclave.inputs import invalid, text_problem
from enclave.strict_json import DuplicateKey, loads_strict
from enclave.web.keys import config_key

MAX_DEPTH = 64
_SHOWN_KEY = 80  # characters of a duplicate key quoted back in the refusal


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_body(raw: bytes) -> Any:
    """Bytes → JSON value, or ``BadRequest`` saying what is wrong."""
    too_deep = BadRequest(f"the body nests arrays or objects deeper than {MAX_DEPTH} levels")
    try:
        value = loads_strict(raw.decode("utf-8"))
    except DuplicateKey as dup:
        shown = dup.key if len(dup.key) <= _SHOWN_KEY else dup.key[:_SHOWN_KEY] + "…"
        raise BadRequest(f"the body repeats the key {json.dumps(shown)}") from None
    except RecursionError:
        raise too_deep from None
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not valid JSON") from None
    if depth(value) > MAX_DEPTH:
        raise too_deep
    if problems := string_problems(value):
        raise invalid(problems)
    return value


def string_problems(value: Any) -> list[str]:
    """Every string in ``value``, key or value, that ``text_problem`` refuses, by where it is
    (``queries[0].sql``), in the body's order, without recursion."""
    problems: list[str] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if (problem := text_problem(node)) is not None:
                problems.append(f"{where or '(the body)'}: {problem}")
        elif isinstance(node, list):
            stack.extend(reversed([(child, f"{where}[{i}]") for i, child in enumerate(node)]))
        elif isinstance(node, dict):
            for key in node:
                if (problem := text_problem(key)) is not None:
                    problems.append(f"{_at(where, key)} (a key): {problem}")
            stack.extend(reversed([(child, _at(where, key)) for key, child in node.items()]))
    return problems


def _at(where: str, key: str) -> str:
    return f"{where}.{_shown(key)}" if where else _shown(key)


def _shown(key: str) -> str:
    """A caller's key, cut short and printable, for a problem's text."""
    short = key[:_SHOWN_KEY]
    shown = short if short.isprintable() and short.isascii() else ascii(short)
    return shown + ("…" if len(key) > _SHOWN_KEY else "")


async def read_json(request: web.Request) -> Any:
    if request.content_type not in ("application/json", ""):
        raise UnsupportedMediaType("send the body as application/json")
    return parse_body(await _read(request))


async def read_csv_text(request: web.Request) -> str:
    """A ``text/csv`` body as text (UTF-8, a leading byte-order mark dropped), whole and
    size-capped like a JSON body."""
    if request.content_type != "text/csv":
        raise UnsupportedMediaType("send the body as text/csv")
    try:
        return (await _read(request)).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None


async def _read(request: web.Request) -> bytes:
    timeout = request.app[config_key].server.body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await request.read()  # HTTPRequestEntityTooLarge past client_max_size: 413
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} seconds") from None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))

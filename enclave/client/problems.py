"""problem+json answers → the classes of ``enclave.errors``, on the client side.

The server renders every refusal from the one error tree (``web/problem.py``); the client
reads it back into the same classes, so a researcher's code can ``except BudgetExhausted``
whether it runs beside the gateway or across the internet.

Lookup order, and why:

1. The ``type`` slug (the last path segment of the problem's ``type`` URI) names the class,
   provided that class has the status the response carries. Where two classes share a slug
   (``AuthenticationError`` and ``InvalidToken``), the most specific one wins.
2. Otherwise the status picks the broadest class with that status (403 → ``Forbidden``), so a
   newer server's new problem type still lands on a class the caller already handles.
3. A status the gateway never sends (a proxy's 502, a 418) falls back to ``BadRequest`` for
   4xx and ``EnclaveError`` otherwise. The class's ``status`` then differs from the wire, so
   the real status is attached as an exception note (``add_note``).

No new subclasses of ``EnclaveError`` are defined here on purpose: the tree is enumerated by
``all_error_classes()`` (error-shape tests, OpenAPI), and a class defined outside
``errors.py`` would appear there only when this module happened to be imported.

The exception keeps the server's ``detail`` (the refusal's reason) verbatim; a body that is
not problem+json is never echoed (it may be a proxy's HTML page), only its status is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from enclave.errors import (
    BadRequest,
    BudgetExhausted,
    ConfigError,
    EnclaveError,
    PolicyFileError,
    RateLimited,
    SpendNeedsConfirmation,
    all_error_classes,
)

DEFAULT_RETRY_AFTER = 60


@cache
def _by_slug() -> dict[str, type[EnclaveError]]:
    # all_error_classes() is breadth-first from the root: deeper classes overwrite their
    # parents when they share a slug, so the most specific class wins.
    return {cls.type: cls for cls in all_error_classes()}


@cache
def _by_status() -> dict[int, type[EnclaveError]]:
    out: dict[int, type[EnclaveError]] = {}
    for cls in all_error_classes():  # root first: the broadest class of a status wins
        out.setdefault(cls.status, cls)
    return out


def slug_of(type_uri: str) -> str:
    """``https://enclave-gateway.org/problems/budget-exhausted`` → ``budget-exhausted``."""
    return type_uri.rstrip("/").rsplit("/", 1)[-1]


def error_class(status: int, type_uri: str | None) -> type[EnclaveError]:
    """The class for a response's status and problem ``type`` (see the module docstring)."""
    if type_uri:
        cls = _by_slug().get(slug_of(type_uri))
        if cls is not None and cls.status == status:
            return cls
    cls = _by_status().get(status)
    if cls is not None:
        return cls
    return BadRequest if 400 <= status < 500 else EnclaveError


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> EnclaveError:
    """Build the exception for one error response (status ≥ 300 that is not an answer)."""
    problem = _problem(body)
    cls = error_class(status, _str(problem.get("type")))
    detail = _str(problem.get("detail")) or ""
    if not problem:
        detail = f"the gateway answered HTTP {status} without a problem description"
    err: EnclaveError
    if issubclass(cls, RateLimited):
        err = cls(detail, retry_after=_retry_after(headers, problem))
    elif issubclass(cls, BudgetExhausted):
        err = cls(detail, layer=_str(problem.get("layer")) or "licence")
    elif issubclass(cls, PolicyFileError | ConfigError):  # these take a list of problems
        problems = problem.get("problems")
        listed = [p for p in problems if isinstance(p, str)] if isinstance(problems, list) else []
        err = cls(listed or [detail or cls.title])
    elif issubclass(cls, SpendNeedsConfirmation):
        err = cls(
            detail,
            cost=_pair(problem.get("cost")),
            remaining=_pair(problem.get("remaining")),
            share=_number(problem.get("share")),
            max_share=_number(problem.get("max_share")),
        )
    else:
        err = cls(detail)
    if cls.status != status:
        err.add_note(f"HTTP status {status}")
    request_id = _str(problem.get("request_id"))
    if request_id:
        err.add_note(f"request id {request_id}")
    return err


def _problem(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else 0.0


def _pair(value: Any) -> tuple[float, float]:
    """``{"epsilon": e, "delta": d}`` → ``(e, d)``; a missing part reads as 0."""
    got = value if isinstance(value, dict) else {}
    return _number(got.get("epsilon")), _number(got.get("delta"))


def _retry_after(headers: Mapping[str, str], problem: Mapping[str, Any]) -> int:
    """Seconds from ``Retry-After`` (delta-seconds form), else the body, else a default."""
    raw = headers.get("Retry-After", "").strip()
    if raw.isdigit():
        return int(raw)
    body_value = problem.get("retry_after")
    if isinstance(body_value, int) and not isinstance(body_value, bool):
        return body_value
    return DEFAULT_RETRY_AFTER

"""The one renderer of errors: ``EnclaveError`` → ``application/problem+json`` (RFC 9457).

The status, type and title come from the error's class (MRO lookup through the tree in
``errors.py``); ``detail`` is the error's message, written to be safe to show. Anything else
becomes a 500 that names only the request id; its log line names the exception's type and
where it was raised (``errors.describe``), never its message, which could carry data. When
the caller is authenticated, a refusal is audited here before the response is sent; if that
record cannot be written the answer is 503.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from enclave.errors import (
    AuditUnavailable,
    BudgetExhausted,
    EnclaveError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    SpendNeedsConfirmation,
    describe,
)
from enclave.web.keys import audit_ctx_key, metrics_key, request_id_key, store_key

log = logging.getLogger("enclave.web")
PROBLEM_TYPE = "application/problem+json"


def problem_response(err: EnclaveError, request_id: str) -> web.Response:
    body: dict[str, Any] = {
        "type": err.type_uri(),
        "title": err.title,
        "status": err.status,
        "detail": err.detail,
        "request_id": request_id,
    }
    problems = getattr(err, "problems", None)
    if problems:
        body["problems"] = list(problems)
    headers: dict[str, str] = {}
    if isinstance(err, BudgetExhausted):
        body["layer"] = err.layer
    if isinstance(err, RateLimited | ServiceUnavailable):
        headers["Retry-After"] = str(err.retry_after)
        body["retry_after"] = err.retry_after
    if isinstance(err, SpendNeedsConfirmation):
        body.update(err.extensions())
    if err.status == 401:
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{err.title}"'
        )
    return web.Response(
        status=err.status,
        text=json.dumps(body),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def internal_error(request_id: str) -> web.Response:
    body = {
        "type": EnclaveError.type_uri(),
        "title": EnclaveError.title,
        "status": 500,
        "detail": f"internal error; quote request id {request_id}",
        "request_id": request_id,
    }
    return web.Response(status=500, text=json.dumps(body), content_type=PROBLEM_TYPE)


def from_http_exception(exc: web.HTTPException) -> EnclaveError:
    if exc.status == 413:
        return PayloadTooLarge("the request body is larger than the server accepts")
    if exc.status == 404:
        return NotFound("no such resource")
    if exc.status == 405:
        return MethodNotAllowed("method not allowed on this resource")
    err = EnclaveError(exc.reason or "request failed")
    return err


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.get(request_id_key, "")
    try:
        return await handler(request)
    except EnclaveError as err:
        return await _refuse(request, err, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _refuse(request, from_http_exception(exc), request_id)
    except Exception as exc:
        log.error("unhandled error (request %s): %s", request_id, describe(exc))
        return await _refuse(request, EnclaveError(), request_id, internal=True)


async def _refuse(
    request: web.Request, err: EnclaveError, request_id: str, internal: bool = False
) -> web.Response:
    actx = request.get(audit_ctx_key)
    quiet = isinstance(err, RateLimited) and not err.audit  # a flood must not fill the log
    if actx is not None and not actx.audited and actx.actor and not quiet:
        reason = err.detail if not internal else "internal error"
        try:
            await request.app[store_key].append(actx.draft(err.outcome, reason=reason))
            actx.audited = True
        except Exception as exc:
            log.error("could not audit a refusal (request %s): %s", request_id, describe(exc))
            if not isinstance(err, ServiceUnavailable):
                err = AuditUnavailable("the audit record could not be written")
            internal = False
    request.app[metrics_key].record_refusal(err.type)
    if internal:
        return internal_error(request_id)
    return problem_response(err, request_id)

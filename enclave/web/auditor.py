"""Auditor endpoints: read, filter, verify, export and summarize the audit log; the public key
of the gateway's signed chain heads. Role ``auditor`` only; there is no endpoint (for anyone)
that edits or deletes an audit record.

Reads are not audited (the contract lists the audited actions); an export is, as
``audit.export``, appended *before* the first byte is streamed, and the export ends at that
record, so every export contains the record of its own making.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from enclave.audit import export
from enclave.audit.record import ACTIONS, OUTCOMES
from enclave.audit.signing import HeadSigner, load_or_create_signer
from enclave.errors import BadRequest, InvalidCursor, describe
from enclave.models import iso, parse_time
from enclave.store.base import AuditFilter
from enclave.web.body import json_response
from enclave.web.keys import audit_ctx_key, config_key, store_key
from enclave.web.roles import requires_role

log = logging.getLogger("enclave.web")
routes = web.RouteTableDef()
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_TEXT = 256
EVENT_PARAMS = frozenset(
    {"actor", "dataset", "action", "outcome", "licence_id", "since", "until", "limit", "cursor"}
)


async def signer_for(request: web.Request) -> HeadSigner:
    """The gateway's head-signing key (read from the state folder; created on first use)."""
    state_dir = request.app[config_key].engine.state_dir
    return await asyncio.to_thread(load_or_create_signer, state_dir)


@routes.get("/v1/audit/events")
@requires_role("auditor")
async def list_events(request: web.Request) -> web.Response:
    query = request.query
    unknown = sorted(set(query) - EVENT_PARAMS)
    if unknown:
        raise BadRequest("unknown query parameters: " + ", ".join(unknown[:10]))
    since, until = parse_window(query.get("since"), query.get("until"))
    flt = AuditFilter(
        actor=_text(query, "actor"),
        dataset=_text(query, "dataset"),
        action=_choice(query, "action", ACTIONS),
        outcome=_choice(query, "outcome", OUTCOMES),
        licence_id=_text(query, "licence_id"),
        since=since,
        until=until,
    )
    limit = _limit(query.get("limit"))
    after = _cursor(query.get("cursor"))
    records = await request.app[store_key].audit_events(flt, after_seq=after, limit=limit)
    next_cursor = str(records[-1].seq) if len(records) == limit else None
    return json_response({"events": [r.to_json() for r in records], "next_cursor": next_cursor})


@routes.get("/v1/audit/verify")
@requires_role("auditor")
async def verify_log(request: web.Request) -> web.Response:
    result, _ = await export.verify_store(request.app[store_key])
    body: dict[str, Any] = result.to_json()
    if result.valid:
        signer = await signer_for(request)
        body["signed_head"] = signer.sign(result.count, result.head).to_json()
    else:
        body["count"] = result.count  # records that verified before the break
    return json_response(body)


@routes.get("/v1/audit/key")
@requires_role("auditor")
async def public_key(request: web.Request) -> web.Response:
    return json_response((await signer_for(request)).key_json())


@routes.get("/v1/audit/export")
@requires_role("auditor")
async def export_log(request: web.Request) -> web.StreamResponse:
    fmt = request.query.get("format", "jsonl")
    if fmt not in export.FORMATS:
        raise BadRequest("format must be jsonl or csv")
    store = request.app[store_key]
    signer = await signer_for(request)
    actx = request[audit_ctx_key]
    actx.action = "audit.export"
    record = await store.append(actx.draft("ok", detail={"format": fmt}))
    actx.audited = True
    upto = record.seq
    resp = web.StreamResponse(
        headers={
            "Content-Disposition": f'attachment; filename="audit-{upto}.{fmt}"',
            "Enclave-Audit-Seq": str(upto),
        }
    )
    resp.content_type = export.MEDIA_TYPES[fmt]
    resp.charset = "utf-8"
    chunks: AsyncIterator[bytes]
    if fmt == "csv":
        result, _ = await export.verify_store(store, upto)
        head = signer.sign(result.count, result.head) if result.valid else None
        resp.headers["Enclave-Audit-Valid"] = "true" if result.valid else "false"
        if head is not None:
            resp.headers["Enclave-Signed-Head"] = json.dumps(head.to_json(), separators=(",", ":"))
        chunks = export.stream_csv(store, upto)
    else:
        chunks = export.stream_jsonl(store, upto, signer.sign)
    await resp.prepare(request)
    try:
        async for chunk in chunks:
            await resp.write(chunk)
    except ConnectionResetError:
        log.info("audit export %s: the client went away", actx.request_id)
        return resp
    except Exception as exc:
        # Headers are sent: no problem document is possible. Stop without the trailer, so
        # the export is visibly incomplete, and log why.
        log.error("audit export %s failed while streaming: %s", actx.request_id, describe(exc))
        return resp
    await resp.write_eof()
    return resp


@routes.get("/v1/audit/summary")
@requires_role("auditor")
async def summary(request: web.Request) -> web.Response:
    since, until = parse_window(request.query.get("since"), request.query.get("until"))
    rows = await export.summarize(request.app[store_key], since, until)
    items = [r.to_json() for r in rows]
    totals = {
        key: sum(item[key] for item in items)
        for key in ("epsilon_spent", "delta_spent", "releases", "cache_hits", "refusals", "errors")
    }
    return json_response(
        {
            "since": iso(since) if since else None,
            "until": iso(until) if until else None,
            "rows": items,
            "totals": totals,
        }
    )


def parse_window(
    since_raw: str | None, until_raw: str | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    since = _time(since_raw, "since")
    until = _time(until_raw, "until")
    if since is not None and until is not None and since >= until:
        raise BadRequest("since must be earlier than until")
    return since, until


def _time(raw: str | None, name: str) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 40:
            raise ValueError
        return parse_time(raw)
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 date or timestamp, e.g. 2026-01-31T00:00:00Z"
        ) from None


def _text(query: Any, name: str) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{name} is longer than {MAX_TEXT} characters")
    return str(value)


def _choice(query: Any, name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadRequest(f"{name} must be one of: " + ", ".join(allowed))
    return str(value)


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def _cursor(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise InvalidCursor("the cursor is not one this server issued")
    return int(raw)

"""Auditor endpoints: read, filter, verify, export and summarize the audit log; the public key
of the gateway's signed chain heads. Role ``auditor`` only; there is no endpoint (for anyone)
that edits or deletes an audit record.

Reads are not audited (the documented audited actions do not include them); an export is, as
``audit.export``, appended *before* the first byte is streamed, and the export ends at that
record, so every export contains the record of its own making.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from enclave.audit import export
from enclave.audit.log import AuditFilter
from enclave.audit.record import ACTIONS, OUTCOMES
from enclave.audit.signing import HeadSigner, load_or_create_signer
from enclave.errors import describe
from enclave.models import iso
from enclave.web.body import json_response
from enclave.web.keys import audit_ctx_key, config_key, services_key, store_key
from enclave.web.params import QueryParams
from enclave.web.roles import requires_role
from enclave.web.steward import licence_budget_json

log = logging.getLogger("enclave.web")
routes = web.RouteTableDef()
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
    params = QueryParams(request.query, EVENT_PARAMS)
    since, until = params.window()
    flt = AuditFilter(
        actor=params.text("actor"),
        dataset=params.text("dataset"),
        action=params.choice("action", ACTIONS),
        outcome=params.choice("outcome", OUTCOMES),
        licence_id=params.text("licence_id"),
        since=since,
        until=until,
    )
    limit, after = params.limit(), params.cursor()
    params.done()
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
    params = QueryParams(request.query, {"format"})
    fmt = params.choice("format", export.FORMATS, default="jsonl") or "jsonl"
    params.done()
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


@routes.get("/v1/audit/licences/{id}/budget")
@requires_role("auditor")
async def get_licence_budget(request: web.Request) -> web.Response:
    """What the admin route of the same name answers: every budget layer of one licence."""
    return json_response(await licence_budget_json(request.app[services_key], request))


@routes.get("/v1/audit/summary")
@requires_role("auditor")
async def summary(request: web.Request) -> web.Response:
    params = QueryParams(request.query, {"since", "until"})
    since, until = params.window()
    params.done()
    rows = await request.app[store_key].audit_summary(since, until)
    return json_response(
        {
            "since": iso(since) if since else None,
            "until": iso(until) if until else None,
            "rows": [r.to_json() for r in rows],
            "totals": export.summary_totals(rows),
        }
    )

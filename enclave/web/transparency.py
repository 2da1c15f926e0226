"""``GET /v1/transparency``: the transparency report (``docs/transparency.md``).

Auditors only, unless ``transparency.public`` is true; then anyone may read it, and a request
counts against the per-address rate limit (the route skips authentication, so the middleware
does not count it). Parameters ``from``, ``to`` (dates, ``to`` exclusive), ``period``
(``month|quarter|year|all``) and ``format`` (``json|csv|html``); one 400 lists every problem.
Reads are not audited (the report is a function of the log; auditing it would change it).
A report is answered again from ``ReportCache`` while the log has not grown (up to a minute),
so polling the page does not re-read the whole log each time.
"""

from __future__ import annotations

import json

from aiohttp import web

from enclave.audit import transparency_render as render
from enclave.audit.transparency_params import parse_params
from enclave.config import Config
from enclave.report import ReportCache
from enclave.web.auditor import signer_for
from enclave.web.keys import config_key, report_cache_key, services_key, store_key
from enclave.web.params import QueryParams
from enclave.web.roles import public, requires_role

PATH = "/v1/transparency"
PARAMS = frozenset({"from", "to", "period", "format"})


def register(app: web.Application, config: Config) -> None:
    """Public or auditor-only, as ``transparency.public`` says (fixed when the app is made)."""
    handler = public_report if config.transparency.public else auditor_report
    app.router.add_get(PATH, handler)
    app[report_cache_key] = ReportCache()


@requires_role("auditor")
async def auditor_report(request: web.Request) -> web.Response:
    return await _report(request)


@public
async def public_report(request: web.Request) -> web.Response:
    limits = request.app[config_key].limits
    limiter = request.app[services_key].limiter
    by_addr = f"addr:{request.remote or 'unknown'}"
    limiter.refuse_blocked(by_addr)
    await limiter.hit({by_addr: limits.per_address_per_minute})
    return await _report(request)


async def _report(request: web.Request) -> web.Response:
    query = QueryParams(request.query, PARAMS)
    fmt = query.choice("format", render.FORMATS, default="json") or "json"
    params, problems = parse_params(
        query.text("from", 10), query.text("to", 10), query.text("period", 10)
    )
    query.problems += problems
    query.done()
    store = request.app[store_key]
    signer = await signer_for(request)
    report = await request.app[report_cache_key].report(store, params, signer.sign)
    resp = web.Response(body=render.render(report, fmt), content_type=render.MEDIA_TYPES[fmt])
    resp.charset = "utf-8"
    resp.headers["Enclave-Audit-Seq"] = str(report["upto"])
    resp.headers["Enclave-Signed-Head"] = json.dumps(report["signed_head"], separators=(",", ":"))
    if fmt == "html":
        resp.headers["Content-Security-Policy"] = render.HTML_CSP
    if fmt == "csv":
        name = f"transparency-{report['upto']}.csv"
        resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp

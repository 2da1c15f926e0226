"""Public operational endpoints: liveness, readiness, metrics.

``/readyz`` answers 503 while the state store does not answer within ``READY_TIMEOUT_S`` (a
load balancer then sends traffic to another replica) and names it: ``checks.store`` says
``unavailable`` and ``store`` says which kind (``sqlite`` or ``postgresql``, never the URL).
The process stays up meanwhile; the store reconnects by itself when the database returns.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from enclave.metrics import CONTENT_TYPE
from enclave.web.body import json_response
from enclave.web.keys import metrics_key, services_key
from enclave.web.roles import public

routes = web.RouteTableDef()
log = logging.getLogger("enclave.web")
READY_TIMEOUT_S = 3.0


@routes.get("/healthz")
@public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
@public
async def readyz(request: web.Request) -> web.Response:
    svc = request.app[services_key]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.store.ping(), READY_TIMEOUT_S)
        checks["store"] = "ok"
        specs = await asyncio.wait_for(svc.registry.datasets(), READY_TIMEOUT_S)
    except Exception as exc:
        log.warning("readiness: the state store is unavailable (%s)", type(exc).__name__)
        checks["store"] = "unavailable"
        specs = []
    for spec in (s for s in specs if not s.retired):
        ok = await svc.warehouse.check(spec)
        checks[f"dataset:{spec.name}"] = "ok" if ok else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    kind = "postgresql" if svc.config.store.url.startswith("postgres") else "sqlite"
    return json_response(
        {"status": "ready" if ready else "not ready", "store": kind, "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

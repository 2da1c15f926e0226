"""Public operational endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import logging

from aiohttp import web

from enclave.metrics import CONTENT_TYPE
from enclave.web.body import json_response
from enclave.web.keys import metrics_key, services_key
from enclave.web.roles import public

routes = web.RouteTableDef()
log = logging.getLogger("enclave.web")


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
        await svc.store.ping()
        checks["store"] = "ok"
        for spec in await svc.registry.datasets():
            ok = await svc.warehouse.check(spec)
            checks[f"dataset:{spec.name}"] = "ok" if ok else "unavailable"
    except Exception:
        log.warning("readiness check failed", exc_info=True)
        checks["store"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

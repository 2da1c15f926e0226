"""Public operational endpoints: liveness, readiness, metrics.

``/readyz`` answers 503 while the state store does not answer within ``READY_TIMEOUT_S`` (a
load balancer then sends traffic to another replica) and names it: ``checks.store`` says
``unavailable`` and ``store`` says which kind (``sqlite`` or ``postgresql``, never the URL).
The process stays up meanwhile; the store reconnects by itself when the database returns.

Datasets do not gate readiness (every replica reads the same sources, so one broken dataset
would take them all out of rotation), but are reported truthfully: ``datasets`` counts them
per state (``ok``, ``preparing``, ``not prepared``, ``failed``, ``unavailable``; see
``Warehouse.status``) and ``status`` is ``degraded`` (still 200) when any is not ``ok``.
Names are shown only to a caller with a valid admin or auditor token (``dataset_states``):
an anonymous caller learns no dataset name, as hidden datasets look missing elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp import web

from enclave.auth.principal import authenticate
from enclave.metrics import CONTENT_TYPE
from enclave.web.body import json_response
from enclave.web.keys import jwks_key, metrics_key, services_key
from enclave.web.roles import public

routes = web.RouteTableDef()
log = logging.getLogger("enclave.web")
READY_TIMEOUT_S = 3.0
DATASET_STATES = ("ok", "preparing", "not prepared", "failed", "unavailable")
_DETAIL_ROLES = frozenset({"admin", "auditor"})


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
    specs = [s for s in specs if not s.retired]  # a retired dataset answers no queries
    states = await asyncio.gather(*(svc.warehouse.status(spec) for spec in specs))
    counts: Counter[str] = Counter(states)
    kind = "postgresql" if svc.config.store.url.startswith("postgres") else "sqlite"
    ready = checks["store"] == "ok"
    body: dict[str, object] = {
        "status": "degraded" if ready and counts.keys() - {"ok"} else "ready",
        "store": kind,
        "checks": checks,
        "datasets": {state: counts.get(state, 0) for state in DATASET_STATES},
    }
    if not ready:
        body["status"] = "not ready"
    elif await _may_see_names(request):
        body["dataset_states"] = {s.name: state for s, state in zip(specs, states, strict=True)}
    return json_response(body, status=200 if ready else 503)


async def _may_see_names(request: web.Request) -> bool:
    """Whether the caller sent a valid admin or auditor token (anything else: counts only)."""
    header = request.headers.get("Authorization")
    if header is None:
        return False
    svc = request.app[services_key]
    try:
        principal = await authenticate(
            header, request.app[jwks_key], svc.config.auth, svc.store.is_revoked
        )
    except Exception:  # an invalid token, or the store or JWKS down: counts only
        return False
    return bool(principal.roles & _DETAIL_ROLES)


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

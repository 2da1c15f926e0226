"""``create_app(config)``: the one application factory (sync, no I/O, no argv or env).

Resources open and close in ``cleanup_ctx`` order: OpenDP features, the store, the JWKS cache,
the DuckDB warehouse, then the services bundle (which seeds the registry from the policy files
at first start and bounds every dataset version before the first request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from enclave.auth.jwks import JwksCache
from enclave.config import Config
from enclave.dp.mechanisms import enable_dp
from enclave.engine.bounding import load_or_create_key
from enclave.engine.warehouse import Warehouse
from enclave.metrics import Metrics
from enclave.policy.registry import registry_for
from enclave.ratelimit import RateLimiter
from enclave.services import Services
from enclave.store import open_store
from enclave.store.base import Store
from enclave.web import (
    admin,
    auditor,
    console,
    governance,
    health,
    jobs,
    openapi,
    researcher,
    steward,
    transparency,
)
from enclave.web.access_log import RedactingAccessLogger
from enclave.web.keys import (
    config_key,
    jwks_key,
    metrics_key,
    services_key,
    store_key,
    warehouse_key,
)
from enclave.web.middleware import auth_middleware, request_id_middleware, security_headers
from enclave.web.problem import problem_middleware

log = logging.getLogger("enclave.web")
TRUNCATION_SECRET = "truncation-seed"  # noqa: S105 (the name under which it is stored)
LINGER_S = 2.0  # seconds an unread body is drained after an early answer
# any other method is labelled "other", so a client cannot mint label values
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def create_app(
    config: Config, *, worker: int = 1, metrics_dir: Path | None = None
) -> web.Application:
    """The gateway application. ``worker``: this process's number among ``server.processes``
    worker processes; ``metrics_dir``: their shared Prometheus directory (``web/workers.py``;
    both only label and merge metrics)."""
    app = web.Application(
        middlewares=[
            metrics_middleware,
            request_id_middleware,
            problem_middleware,
            auth_middleware,
        ],
        client_max_size=config.server.max_body_bytes,
        handler_args=handler_args(config),
    )
    app[config_key] = config
    app[metrics_key] = Metrics(worker=str(worker), multiprocess_dir=metrics_dir)
    app.cleanup_ctx.extend(
        [dp_ctx, store_ctx, jwks_ctx, warehouse_ctx, services_ctx, jobs.jobs_ctx]
    )
    app.add_routes(health.routes)
    app.add_routes(researcher.routes)
    app.add_routes(jobs.routes)
    app.add_routes(admin.routes)
    app.add_routes(steward.routes)
    app.add_routes(governance.routes)
    app.add_routes(auditor.routes)
    app.add_routes(openapi.routes)
    console.register(app, config)
    transparency.register(app, config)
    app.on_response_prepare.append(security_headers)
    return app


def handler_args(config: Config) -> dict[str, Any]:
    """Connection settings for aiohttp's request handler, whoever runs the app.

    aiohttp's keep-alive timer starts when a connection opens and again after each answer,
    and closes the connection if a complete request head has not arrived by then: so
    ``keepalive_timeout`` is the header read deadline (and the idle limit between requests).
    After an answer sent before the body was read (401, 408, 413), the rest of the body is
    drained for at most ``LINGER_S`` before the connection closes.
    """
    return {
        "keepalive_timeout": config.server.header_timeout_s,
        "lingering_time": LINGER_S,
        "access_log_class": RedactingAccessLogger,
    }


async def dp_ctx(app: web.Application) -> AsyncIterator[None]:
    enable_dp()
    yield


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[config_key].store.url)
    await store.open()
    store.observe_commits(app[metrics_key].record_commit)
    app[store_key] = store
    try:
        yield
    finally:
        await store.close()


async def jwks_ctx(app: web.Application) -> AsyncIterator[None]:
    jwks = JwksCache(app[config_key].auth)
    app[jwks_key] = jwks
    try:
        yield
    finally:
        await jwks.close()


async def warehouse_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[config_key].engine
    key = await shared_truncation_key(app[store_key], engine.state_dir)
    warehouse = Warehouse(engine, key=key)
    await warehouse.open()
    app[warehouse_key] = warehouse
    try:
        yield
    finally:
        await warehouse.close()


async def shared_truncation_key(store: Store, state_dir: Path) -> bytes:
    """The truncation seed every replica and worker bounds with: the first one stored wins."""
    local = await asyncio.to_thread(load_or_create_key, state_dir)
    return await store.shared_secret(TRUNCATION_SECRET, local)


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[config_key]
    registry = registry_for(app[store_key], cfg)
    await registry.seed()
    svc = Services(
        config=cfg,
        store=app[store_key],
        registry=registry,
        warehouse=app[warehouse_key],
        limiter=RateLimiter(app[store_key]),
    )
    app[services_key] = svc
    # retired datasets answer no queries: no need to bound them
    await svc.warehouse.start_all([s for s in await registry.datasets() if not s.retired])
    yield


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route template (never the raw path), method and status."""
    start = time.perf_counter()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    method = request.method if request.method in KNOWN_METHODS else "other"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away; not a server error
        raise
    finally:
        metrics = request.app[metrics_key]
        metrics.requests.labels(name, method, str(status)).inc()
        metrics.worker_requests.inc()
        metrics.latency.labels(name).observe(time.perf_counter() - start)

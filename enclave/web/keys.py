"""Every typed AppKey and RequestKey of the web layer (no string keys anywhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from enclave.auth.jwks import JwksCache
    from enclave.config import Config
    from enclave.engine.warehouse import Warehouse
    from enclave.metrics import Metrics
    from enclave.policy.registry import Registry
    from enclave.services import Services
    from enclave.store.base import Store
    from enclave.audit.context import AuditContext
    from enclave.models import Principal

config_key = web.AppKey["Config"]("config")
services_key = web.AppKey["Services"]("services")
store_key = web.AppKey["Store"]("store")
warehouse_key = web.AppKey["Warehouse"]("warehouse")
registry_key = web.AppKey["Registry"]("registry")
jwks_key = web.AppKey["JwksCache"]("jwks")

request_id_key = web.RequestKey[str]("request_id")
principal_key = web.RequestKey["Principal"]("principal")
audit_ctx_key = web.RequestKey["AuditContext"]("audit_ctx")
metrics_key = web.AppKey["Metrics"]("metrics")

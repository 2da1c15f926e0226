"""Every typed AppKey and RequestKey of the web layer (no string keys anywhere)."""

from __future__ import annotations

from aiohttp import web

from enclave.audit.context import AuditContext
from enclave.auth.jwks import JwksCache
from enclave.config import Config
from enclave.engine.warehouse import Warehouse
from enclave.jobs.runner import JobRunner
from enclave.metrics import Metrics
from enclave.models import Principal
from enclave.report import ReportCache
from enclave.services import Services
from enclave.store.base import Store

config_key = web.AppKey("config", Config)
services_key = web.AppKey("services", Services)
store_key = web.AppKey("store", Store)
warehouse_key = web.AppKey("warehouse", Warehouse)
jwks_key = web.AppKey("jwks", JwksCache)
metrics_key = web.AppKey("metrics", Metrics)
report_cache_key = web.AppKey("report_cache", ReportCache)
runner_key = web.AppKey("runner", JobRunner)

request_id_key = web.RequestKey("request_id", str)
principal_key = web.RequestKey("principal", Principal)
audit_ctx_key = web.RequestKey("audit_ctx", AuditContext)

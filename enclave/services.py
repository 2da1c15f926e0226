"""The resources one request needs, in one typed bundle (no aiohttp here).

The web layer builds this in ``create_app``'s cleanup contexts; the CLI builds the parts it
needs. ``pipeline.py`` receives it, so the domain never reaches into the web application.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from enclave.config import Config
from enclave.engine.warehouse import Warehouse
from enclave.models import utcnow
from enclave.policy.registry import Registry
from enclave.ratelimit import RateLimiter
from enclave.store.base import Store


@dataclass
class Services:
    config: Config
    store: Store
    registry: Registry
    warehouse: Warehouse
    limiter: RateLimiter  # counts in ``store``: shared by every replica on it
    clock: Callable[[], dt.datetime] = utcnow

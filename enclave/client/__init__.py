"""The researcher's client for Enclave Gateway.

``EnclaveClient`` (async, on ``aiohttp.ClientSession``) and ``Client`` (blocking) call the
researcher endpoints; error responses come back as the ``enclave.errors`` classes the server
raised (``BudgetExhausted``, ``RateLimited`` with ``retry_after``, ...), with its ``detail``.
"""

from __future__ import annotations

from enclave.client.aio import (
    DEFAULT_CONFIRM_SHARE,
    DEFAULT_TIMEOUT_S,
    EnclaveClient,
    LargeSpendWarning,
    SpendNotConfirmed,
)
from enclave.client.problems import error_class, error_from_response
from enclave.client.results import BatchEstimate, Budget, Estimate, HistoryPage, QueryResult
from enclave.client.sync import Client

__all__ = [
    "DEFAULT_CONFIRM_SHARE",
    "DEFAULT_TIMEOUT_S",
    "BatchEstimate",
    "Budget",
    "Client",
    "EnclaveClient",
    "Estimate",
    "HistoryPage",
    "LargeSpendWarning",
    "QueryResult",
    "SpendNotConfirmed",
    "error_class",
    "error_from_response",
]

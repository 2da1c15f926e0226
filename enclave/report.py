"""The transparency report of a store: what ``GET /v1/transparency`` and ``enclave report``
both call. The computation itself is pure and lives in ``audit/transparency.py``; this reads
the records it needs through the same record stream an export uses (``export.records_upto``),
so a report and an export of the same prefix agree record for record.

The gateway signs only a head it has just verified: the chain is verified up to the current
last record (``upto``) first, and a log that does not verify gets no report (503).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from enclave.audit import export
from enclave.audit.signing import SignedHead
from enclave.audit.transparency import Tally
from enclave.audit.transparency_params import ReportParams
from enclave.errors import AuditUnavailable
from enclave.store.base import Store


async def store_report(store: Store, params: ReportParams, signer: export.Signer) -> dict[str, Any]:
    """The report over every record up to the store's current last one, with its signed head."""
    upto, _ = await store.audit_head()
    result, _ = await export.verify_store(store, upto)
    if not result.valid or result.count != upto:
        raise AuditUnavailable("the audit log does not verify, so no report can be signed")
    head: SignedHead = signer(result.count, result.head)
    tally = Tally()
    async for record in export.records_upto(store, upto):
        tally.feed(record)
    return tally.report(params, head.to_json())


class ReportCache:
    """The last few reports, by parameters and by the log's head (seq and hash) they were made
    over. A report is answered again while the log has not grown since, for at most ``ttl_s``
    (so a chain damaged in place is verified again soon). Each process keeps its own."""

    def __init__(
        self, size: int = 8, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._size, self._ttl, self._clock = size, ttl_s, clock
        self._items: dict[tuple[ReportParams, int, str], tuple[float, dict[str, Any]]] = {}

    async def report(
        self, store: Store, params: ReportParams, signer: export.Signer
    ) -> dict[str, Any]:
        seq, hash_ = await store.audit_head()
        now = self._clock()
        hit = self._items.get((params, seq, hash_))
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        made = await store_report(store, params, signer)
        head = made["signed_head"]
        self._items[(params, head["seq"], head["hash"])] = (now, made)
        while len(self._items) > self._size:
            del self._items[next(iter(self._items))]  # the oldest
        return made

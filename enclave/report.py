"""The transparency report of a store: what ``GET /v1/transparency`` and ``enclave report``
both call. The computation itself is pure and lives in ``audit/transparency.py``; this reads
the records it needs through the same record stream an export uses (``export.records_upto``),
so a report and an export of the same prefix agree record for record.

The gateway signs only a head it has just verified: the chain is verified up to the current
last record (``upto``) first, and a log that does not verify gets no report (503).
"""

from __future__ import annotations

from typing import Any

from enclave.audit import export
from enclave.audit.signing import SignedHead
from enclave.audit.transparency import ReportParams, Tally
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

"""Why a licence is suspended or revoked, read from the audit log (the one record of changes).

The log already keeps every status change with its actor, time and required reason, so the
licence does not keep a second copy that could disagree with it: admins are shown the latest
status change of a licence that is not active.
"""

from __future__ import annotations

from typing import Any

from enclave.audit.log import AuditFilter, AuditLog
from enclave.models import Licence

PAGE = 500


async def status_reason(store: AuditLog, licence: Licence) -> dict[str, Any] | None:
    """``{"status", "reason", "by", "at", "audit_seq"}`` of the change that set the licence's
    current status, or ``None`` for an active licence (or one whose change was not recorded)."""
    if licence.status == "active":
        return None
    flt = AuditFilter(action="licence.update", outcome="ok", licence_id=licence.id)
    found: dict[str, Any] | None = None
    after = 0
    while page := await store.audit_events(flt, after_seq=after, limit=PAGE):
        for record in page:
            changes = (record.detail or {}).get("changes") or {}
            if changes.get("status") == licence.status:
                found = {
                    "status": licence.status,
                    "reason": record.reason,
                    "by": record.actor,
                    "at": record.ts,
                    "audit_seq": record.seq,
                }
        after = page[-1].seq
        if len(page) < PAGE:
            break
    return found

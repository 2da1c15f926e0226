"""What a request has learned so far, for its audit record.

The pipeline fills this in as it resolves the licence, tier, dataset and plan, so that a
refusal at any stage is audited with everything known at that point (``web/problem.py``
writes that record). ``audited`` is set once a record has been appended, so a request never
appends two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from enclave.audit.record import AuditDraft


@dataclass
class AuditContext:
    request_id: str
    client: str | None
    action: str = "request"
    actor: str | None = None
    roles: tuple[str, ...] = ()
    licence_id: str | None = None
    tier: str | None = None
    dataset: str | None = None
    sql: str | None = None
    epsilon: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    audited: bool = False

    def draft(
        self,
        outcome: str,
        *,
        reason: str | None = None,
        epsilon: float | None = None,
        delta: float = 0.0,
        cached: bool = False,
        result_sha256: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditDraft:
        merged = {**self.detail, **(detail or {})}
        return AuditDraft(
            action=self.action,
            outcome=outcome,
            actor=self.actor or "",
            roles=self.roles,
            request_id=self.request_id,
            licence_id=self.licence_id,
            tier=self.tier,
            dataset=self.dataset,
            sql=self.sql,
            epsilon=self.epsilon if epsilon is None else epsilon,
            delta=delta,
            cached=cached,
            reason=reason,
            client=self.client,
            result_sha256=result_sha256,
            detail=merged or None,
        )

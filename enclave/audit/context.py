"""What a request has learned so far, for its audit record.

The pipeline fills this in as it resolves the licence, tier, dataset and plan, so that a
refusal at any stage is audited with everything known at that point (``web/problem.py``
writes that record). ``audited`` is set once a record has been appended, so a request never
appends two.

Caller-supplied text is capped in the record (``limits.audit_sql_chars`` for the SQL,
``limits.audit_name_chars`` for the dataset name and the path): a capped field keeps its
first characters, and ``detail`` then holds the SHA-256 and length of the whole text
(``sql_sha256``/``sql_length``, ``dataset_sha256``/``dataset_length``,
``path_sha256``/``path_length``), so an auditor can still match it and a client cannot grow
the audit log by sending long text.
"""

from __future__ import annotations

import hashlib
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
    max_sql: int = 2000
    max_name: int = 200

    def origin(self) -> dict[str, Any]:
        """Who asked, kept with work done later (a job) for its audit records."""
        return {"request_id": self.request_id, "client": self.client, "roles": list(self.roles)}

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
        sql = cap(self.sql, self.max_sql, "sql", merged)
        dataset = cap(self.dataset, self.max_name, "dataset", merged)
        path = merged.get("path")
        if isinstance(path, str):
            merged["path"] = cap(path, self.max_name, "path", merged)
        return AuditDraft(
            action=self.action,
            outcome=outcome,
            actor=self.actor or "",
            roles=self.roles,
            request_id=self.request_id,
            licence_id=self.licence_id,
            tier=self.tier,
            dataset=dataset,
            sql=sql,
            epsilon=self.epsilon if epsilon is None else epsilon,
            delta=delta,
            cached=cached,
            reason=reason,
            client=self.client,
            result_sha256=result_sha256,
            detail=merged or None,
        )


def cap(text: str | None, limit: int, name: str, detail: dict[str, Any]) -> str | None:
    """``text`` cut to ``limit`` characters; when cut, its SHA-256 and length go in ``detail``."""
    if text is None or len(text) <= limit:
        return text
    whole = text.encode("utf-8", "surrogatepass")
    detail[f"{name}_sha256"] = hashlib.sha256(whole).hexdigest()
    detail[f"{name}_length"] = len(text)
    return text[:limit]

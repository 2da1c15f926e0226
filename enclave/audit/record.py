"""The audit record of the contract, and the draft a caller hands to the store.

The store assigns ``seq``, ``ts``, ``prev_hash`` and ``hash`` inside the same transaction as
any budget charge (see ``store/base.py``). ``detail`` is an addition to the contract's record:
admin changes put before/after digests and reasons there; it is hashed like every other field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ACTIONS: tuple[str, ...] = (
    "query",
    "query.estimate",
    "licence.create",
    "licence.update",
    "tier.update",
    "dataset.update",
    "revocation.create",
    "audit.export",
    "dataset.dummy",  # addition: dummy rows from a dataset's public metadata (free)
    "synthetic",  # addition: a DP synthetic table (docs/synthetic.md)
    "request",  # addition: any other authenticated request that was refused
)
OUTCOMES: tuple[str, ...] = ("ok", "denied", "error")
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditDraft:
    action: str
    outcome: str
    actor: str
    roles: tuple[str, ...] = ()
    request_id: str = ""
    licence_id: str | None = None
    tier: str | None = None
    dataset: str | None = None
    sql: str | None = None
    epsilon: float = 0.0
    delta: float = 0.0
    cached: bool = False
    reason: str | None = None
    client: str | None = None
    result_sha256: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str  # RFC 3339 UTC, milliseconds, "Z"
    request_id: str
    actor: str
    roles: list[str]
    licence_id: str | None
    tier: str | None
    action: str
    dataset: str | None
    sql: str | None
    epsilon: float
    delta: float
    cached: bool
    outcome: str
    reason: str | None
    client: str | None
    result_sha256: str | None
    prev_hash: str
    hash: str
    detail: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        values: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**values)

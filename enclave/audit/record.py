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
    "request",  # addition: any other authenticated request that was refused
    "licence.grant",  # addition: a budget top-up for one licence and dataset (with a reason)
    "licence.import",  # addition: a refused bulk import (an accepted one is licence.create)
    "dataset.schema",  # addition: column names and types proposed from a data file's schema
    "proposal.create",  # addition: a change that raises risk, waiting for a second admin
    "proposal.approve",  # addition: a second admin approved (and so applied) a proposal
    "proposal.reject",  # addition: a proposal rejected (or withdrawn by its proposer)
    "proposal.expire",  # addition: a proposal undecided past its expiry (actor "system")
    "dataset.freeze",  # addition: incident control, every query of a dataset refused
    "dataset.unfreeze",  # addition: a freeze lifted (always through an approved proposal)
    "organisation.suspend",  # addition: every active licence of an organisation suspended
    "organisation.reactivate",  # addition: those licences reactivated (approved proposal)
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

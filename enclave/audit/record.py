"""The audit record, and the draft a caller hands to the store.

``AuditRecord`` is the one declaration of the record's fields: their order here is the column
order of the ``audit`` table, of an export line and of the CSV header (``FIELDS``), and every
encoding (``audit/rows.py``, ``audit/chain.py``) is built from it. The store assigns ``seq``,
``ts``, ``prev_hash`` and ``hash`` inside the same transaction as any budget charge (see
``store/base.py``). ``detail`` holds what an admin change adds (before/after digests,
reasons); it is hashed like every other field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
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
    "dataset.dummy",  # dummy rows from a dataset's public metadata (free)
    "request",  # any other authenticated request that was refused
    "licence.grant",  # a budget top-up for one licence and dataset (with a reason)
    "licence.import",  # a refused bulk import (an accepted one is licence.create)
    "dataset.schema",  # column names and types proposed from a data file's schema
    "proposal.create",  # a change that raises risk, waiting for a second admin
    "proposal.approve",  # a second admin approved (and so applied) a proposal
    "proposal.reject",  # a proposal rejected (or withdrawn by its proposer)
    "proposal.expire",  # a proposal undecided past its expiry (actor "system")
    "dataset.freeze",  # incident control: every query of a dataset refused
    "dataset.unfreeze",  # a freeze lifted (always through an approved proposal)
    "organisation.suspend",  # every active licence of an organisation suspended
    "organisation.reactivate",  # those licences reactivated (approved proposal)
    "synthetic",  # a DP synthetic table (docs/synthetic.md)
    "query.submit",  # a query queued as a job (free); its run is audited "query"
)
OUTCOMES: tuple[str, ...] = ("ok", "denied", "error")
GENESIS_HASH = "0" * 64
# The reasons of a query record with outcome "error" whose cost was charged (``charged.py``);
# the transparency report counts their epsilon and delta as released privacy loss.
FAILED_REASON = "release failed after the data was read; charged"
TIMEOUT_REASON = "query timed out after the engine started; charged"
SYNTHETIC_FAILED_REASON = "synthetic release failed after the data was read; charged"


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
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        """The record an export line holds (missing members as None; the caller checks)."""
        values: dict[str, Any] = {name: data.get(name) for name in FIELDS}
        return cls(**values)


#: The record's fields in declaration order: the ``audit`` table's columns, an export line's
#: members, the CSV header.
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AuditRecord))
#: Each field's declared type, as text (``"str | None"``): it picks the field's encoders.
KINDS: dict[str, str] = {f.name: str(f.type) for f in fields(AuditRecord)}
#: Fields a database stores as JSON text (the rest map to one column type each).
JSON_FIELDS: frozenset[str] = frozenset({"roles", "detail"})


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON text, as stored (``roles``, ``detail``, and the store's own
    JSON columns); NaN and infinity refused (PostgreSQL ``jsonb`` would too)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )

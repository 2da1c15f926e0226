"""JSON Schemas of four-eyes proposals and incident controls (``web/governance.py``).
Merged into ``openapi_schemas``."""

from __future__ import annotations

from typing import Any

from enclave.governance.proposal import STATUSES
from enclave.inputs import MAX_TEXT_CHARS

Schema = dict[str, Any]
_STR: Schema = {"type": "string"}
_NULL_STR: Schema = {"type": ["string", "null"]}
_NULL_INT: Schema = {"type": ["integer", "null"]}
KINDS = (
    "tier.update", "dataset.update", "licence.create", "licence.update", "licence.grant",
    "dataset.unfreeze", "organisation.reactivate",
)  # fmt: skip


def _obj(props: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {"type": "object", "properties": props, "required": list(required), **extra}


def governance_schemas() -> dict[str, Schema]:
    proposal = _obj(
        {
            "id": _STR,
            "kind": {"enum": list(KINDS)},
            "target": _STR,
            "body": {"type": "object", "description": "the change as requested"},
            "base": {**_STR, "description": "the target's state the change was checked on"},
            "risks": {"type": "array", "items": _STR},
            "reason": _STR,
            "proposer": _STR,
            "created_at": _STR,
            "expires_at": _STR,
            "status": {"enum": list(STATUSES)},
            "decided_by": _NULL_STR,
            "decided_reason": _NULL_STR,
            "decided_at": _NULL_STR,
            "audit_seq": {"type": "integer"},
            "decision_seq": _NULL_INT,
        },
        ("id", "kind", "target", "risks", "reason", "proposer", "expires_at", "status"),
    )
    return {
        "Proposal": proposal,
        "ProposalList": _obj({"proposals": {"type": "array", "items": proposal}}, ("proposals",)),
        "ProposalDecision": {
            "allOf": [
                proposal,
                _obj(
                    {"applied_seq": {**_NULL_INT, "description": "the change's audit record"}},
                    ("applied_seq",),
                ),
            ]
        },
        "ReasonRequest": _obj(
            {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}},
            ("reason",),
            additionalProperties=False,
        ),
        "OrganisationSuspension": _obj(
            {
                "organisation": _STR,
                "suspended": {"type": "array", "items": _STR},
                "audit_seq": {"type": "integer"},
            },
            ("organisation", "suspended", "audit_seq"),
        ),
    }

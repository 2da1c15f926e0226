"""JSON Schemas of the steward's tools (``web/steward.py``): per-licence spend, grants, bulk
import and registering a dataset from a file. Merged into ``openapi_schemas``."""

from __future__ import annotations

from typing import Any

from enclave.inputs import MAX_TEXT_CHARS
from enclave.ledger.charge import LAYER_NAMES
from enclave.licence_grants import GRANT_LAYERS
from enclave.models import COLUMN_TYPES

Schema = dict[str, Any]
_STR: Schema = {"type": "string"}
_DECIMAL: Schema = {
    "type": "string",
    "pattern": "^[0-9]+(\\.[0-9]+)?$",
    "description": "an exact decimal, as text",
}
_NUMBER_IN: Schema = {"anyOf": [{"type": "number"}, {"type": "string"}]}


def _obj(props: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {"type": "object", "properties": props, "required": list(required), **extra}


def _amounts(*names: str) -> dict[str, Schema]:
    return {f"{dim}_{n}": _DECIMAL for n in names for dim in ("epsilon", "delta")}


def steward_schemas() -> dict[str, Schema]:
    budget = _obj(
        {
            "dataset": _STR,
            **_amounts("tier_budget", "granted", "limit", "spent", "remaining"),
            "period_start": {"type": ["string", "null"]},
            "renews": {"type": ["string", "null"]},
            "layers": {
                "type": "array",
                "items": _obj(
                    {
                        "layer": {"enum": list(LAYER_NAMES)},
                        "key": _STR,
                        **_amounts("limit", "spent", "remaining"),
                        "period_start": {"type": ["string", "null"]},
                    },
                    ("layer", "key", "epsilon_limit", "epsilon_spent", "epsilon_remaining"),
                ),
                "description": "every budget layer that applies, the licence first",
            },
        },
        ("dataset", "epsilon_limit", "epsilon_spent", "epsilon_remaining", "layers"),
    )
    grant = _obj(
        {
            "licence_id": _STR,
            "dataset": _STR,
            "epsilon": _DECIMAL,
            "delta": _DECIMAL,
            "layer": {"enum": list(GRANT_LAYERS)},
            "subject": _STR,
            "reason": _STR,
            "actor": _STR,
            "created_at": _STR,
            "audit_seq": {"type": "integer"},
        },
        ("licence_id", "dataset", "epsilon", "delta", "reason", "actor", "audit_seq"),
    )
    proposed = _obj(
        {
            "name": _STR,
            "source_type": _STR,
            "type": {"enum": [*COLUMN_TYPES, None]},
            "needs": {"enum": ["bounds", "values", None]},
        },
        ("name", "source_type", "type", "needs"),
    )
    return {
        "LicenceBudget": _obj(
            {"licence_id": _STR, "tier": _STR, "budgets": {"type": "array", "items": budget}},
            ("licence_id", "tier", "budgets"),
        ),
        "Grant": grant,
        "GrantList": _obj({"grants": {"type": "array", "items": grant}}, ("grants",)),
        "GrantRequest": _obj(
            {
                "dataset": _STR,
                "epsilon": _NUMBER_IN,
                "delta": _NUMBER_IN,
                "reason": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                "layer": {
                    "enum": list(GRANT_LAYERS),
                    "description": "licence (default): this licence's limit; subject: the "
                    "subject's limit across all their licences, past and present",
                },
            },
            ("dataset", "epsilon", "reason"),
            additionalProperties=False,
        ),
        "LicenceCsv": {
            "type": "string",
            "description": "CSV with a header: subject, organization, tier, datasets (names "
            "separated by ;), purpose, jurisdiction, valid_until, and optionally valid_from, id",
        },
        "ImportResult": _obj(
            {
                "dry_run": {"type": "boolean"},
                "count": {"type": "integer"},
                "licences": {"type": "array", "items": {"type": "object"}},
            },
            ("dry_run", "count", "licences"),
        ),
        "DataFiles": _obj(
            {"files": {"type": "array", "items": _STR}},
            ("files",),
            description="Parquet and CSV files, relative to policies.data_dir",
        ),
        "SchemaProposal": _obj(
            {"source": _STR, "columns": {"type": "array", "items": proposed}},
            ("source", "columns"),
            description="names and types from the file's schema only: never a value",
        ),
    }

"""JSON Schemas (OpenAPI 3.1 dialect = JSON Schema 2020-12) of the gateway's bodies.

Built from the same constants the code validates against (column types, aggregate kinds,
licence statuses, audit actions, the error tree), so an enumeration cannot drift from the
code. Response objects leave ``additionalProperties`` open: the API may gain fields,
and a client should ignore fields it does not know. Request bodies the server checks strictly
(unknown fields refused) say so with ``additionalProperties: false``.
"""

from __future__ import annotations

from typing import Any

from enclave.audit.record import ACTIONS, FIELDS, OUTCOMES
from enclave.audit.record import KINDS as AUDIT_KINDS
from enclave.audit.transparency import REPORT_KIND, REPORT_VERSION
from enclave.audit.transparency_params import PERIODS
from enclave.errors import all_error_classes
from enclave.inputs import MAX_NAME_CHARS, MAX_PATH_CHARS, MAX_TEXT_CHARS, MAX_TIME_CHARS
from enclave.ledger.budget import MAX_PERIOD_DAYS
from enclave.ledger.charge import LAYER_NAMES
from enclave.models import AGG_KINDS, COLUMN_TYPES, LICENCE_STATUSES
from enclave.query.request import MAX_BATCH, MAX_CI95, MAX_TARGETS
from enclave.web.openapi_governance import governance_schemas
from enclave.web.openapi_steward import steward_schemas

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    out.update(extra)
    return out


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _nullable(type_: str, **extra: Any) -> Schema:
    return {"type": [type_, "null"], **extra}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
NAME: Schema = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}
JURISDICTION: Schema = {"type": "string", "pattern": "^[A-Z]{2}$"}
HEX64: Schema = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
CELL: Schema = {"type": ["string", "number", "integer", "boolean", "null"]}
SHORT_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS}
LONG_TEXT: Schema = {"type": "string", "maxLength": MAX_TEXT_CHARS}
WHEN_INPUT: Schema = {
    "anyOf": [
        {"type": "string", "format": "date-time", "maxLength": MAX_TIME_CHARS},
        {"type": "string", "format": "date"},
    ],
    "description": "ISO 8601 date or timestamp, UTC if no zone; years 1970 to 9999",
}
EXACT_DECIMAL: Schema = {
    "type": "string",
    "pattern": "^[0-9]+(\\.[0-9]+)?$",
    "description": "an exact decimal, as text (never rounded to a float)",
}


def problem_type_uris() -> list[str]:
    """Every distinct problem ``type`` URI the gateway can answer with (the tree's order)."""
    seen: list[str] = []
    for cls in all_error_classes():
        if cls.type_uri() not in seen:
            seen.append(cls.type_uri())
    return seen


def problem_catalogue() -> list[dict[str, Any]]:
    """One entry per class of the error tree (``x-problem-types`` in the components)."""
    return [
        {
            "class": cls.__name__,
            "type": cls.type_uri(),
            "title": cls.title,
            "status": cls.status,
            "audit_outcome": cls.outcome,
        }
        for cls in all_error_classes()
    ]


def _problem() -> Schema:
    return _obj(
        {
            "type": {"type": "string", "format": "uri", "enum": problem_type_uris()},
            "title": STR,
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": STR,
            "request_id": STR,
            "problems": {**_array(STR), "description": "every validation problem found"},
            "retry_after": {**INT, "description": "seconds, as in Retry-After (429 and 503)"},
            "cost": {
                **_obj({"epsilon": NUM, "delta": NUM}),
                "description": "spend-needs-confirmation only: what the run would spend",
            },
            "remaining": {
                **_obj({"epsilon": NUM, "delta": NUM}),
                "description": "spend-needs-confirmation only: the budget left",
            },
            "share": {**NUM, "description": "spend-needs-confirmation only: cost / remaining"},
            "max_share": {**NUM, "description": "spend-needs-confirmation only: as requested"},
            "layer": {
                "enum": list(LAYER_NAMES),
                "description": "budget-exhausted only: the budget layer the query would pass",
            },
        },
        ("type", "title", "status", "detail"),
        description="RFC 9457 problem details; never a data value or an engine message.",
    )


def _column() -> Schema:
    return _obj(
        {
            "type": {"enum": list(COLUMN_TYPES)},
            "bounds": {**_array({"type": ["number", "string"]}), "minItems": 2, "maxItems": 2},
            "values": _array(STR),
        },
        ("type",),
    )


def _dataset_fields(with_source: bool) -> dict[str, Schema]:
    props: dict[str, Schema] = {
        "name": NAME,
        "description": LONG_TEXT,
        "privacy_unit": STR,
        "max_rows_per_unit": {"type": "integer", "minimum": 1},
        "min_tier": {"oneOf": [NAME, {**_array(NAME), "minItems": 1}]},
        "allowed_jurisdictions": {"type": ["array", "null"], "items": JURISDICTION},
        "columns": {"type": "object", "additionalProperties": ref("Column")},
        "version": INT,
        "frozen": {**STR, "description": "a freeze's reason: every query refused (423)"},
        "total_budget": _obj(
            {"epsilon": _EPSILON, "delta": _DELTA},
            ("epsilon",),
            additionalProperties=False,
            description="everyone's lifetime spend on this dataset (the dataset budget layer)",
        ),
    }
    if with_source:
        props["source"] = {
            **STR,
            "maxLength": MAX_PATH_CHARS,
            "description": "relative to the policy folder; must lie inside policies.data_dir",
        }
    return props


BINDING_LAYER: Schema = {
    "enum": list(LAYER_NAMES),
    "description": "the budget layer with the least left; an organisation or dataset "
    "layer's remaining is rounded down to a tenth of its limit",
}
_DELTA: Schema = {
    "type": "number",
    "minimum": 0,
    "exclusiveMaximum": 1,
    "description": "a multiple of 1e-15 (the ledger's delta grid)",
}
_EPSILON: Schema = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 1_000_000,
    "description": "a multiple of 0.000001 (the ledger's epsilon grid)",
}


def _tier_fields() -> dict[str, Schema]:
    return {
        "name": NAME,
        "description": LONG_TEXT,
        "aggregates": {**_array({"enum": list(AGG_KINDS)}), "minItems": 1},
        "max_epsilon_per_query": _EPSILON,
        "min_epsilon_per_query": {
            **_EPSILON,
            "description": "smallest epsilon a query may spend (default 0.001, or "
            "max_epsilon_per_query if smaller); a multiple of 0.000001",
        },
        "default_epsilon": {
            **_EPSILON,
            "description": "spent by a query that gives neither epsilon nor accuracy (default "
            "0.1, kept within [min_epsilon_per_query, max_epsilon_per_query]); a multiple of "
            "0.000001",
        },
        "budget": _obj(
            {
                "epsilon": _EPSILON,
                "delta": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMaximum": 1,
                    "description": "a multiple of 1e-15 (the ledger's delta grid)",
                },
                "period_days": _nullable("integer", minimum=1, maximum=MAX_PERIOD_DAYS),
            },
            additionalProperties=False,
        ),
        "min_noisy_count": {"type": "integer", "minimum": 0},
        "group_by": _obj(
            {
                "max_columns": {"type": "integer", "minimum": 0},
                "max_groups": {"type": "integer", "minimum": 1},
                "allow_undeclared_keys": BOOL,
            },
            additionalProperties=False,
        ),
        "filters": BOOL,
        "rate_limit_per_minute": {"type": "integer", "minimum": 1},
        "allowed_jurisdictions": _array(JURISDICTION),
        "level": {"type": "integer", "minimum": 0},
        "version": INT,
        "synthetic": _obj(
            {"allowed": BOOL, "max_epsilon": _EPSILON},
            additionalProperties=False,
            description="DP synthetic data (docs/synthetic.md): off unless allowed; "
            "max_epsilon (required when allowed) caps one release",
        ),
        "organisation_budget": _obj(
            {"epsilon": _EPSILON, "delta": _DELTA},
            ("epsilon",),
            additionalProperties=False,
            description="one organisation's lifetime spend per dataset on licences of this "
            "tier (the organisation budget layer)",
        ),
    }


_VERSIONED = {
    "created_at": TIME,
    "changed_by": STR,
    "versions": {**_array(INT), "description": "every stored version; GET ?version=N reads one"},
}
_WRITE_IGNORED = ("versions", "created_at", "changed_by")
_WRITE_EXTRAS: dict[str, Any] = {
    **{k: {"description": "ignored"} for k in _WRITE_IGNORED},
    "version": {
        "type": "integer",
        "description": "lost-update guard: the version being replaced; a stale one is 409",
    },
    "reason": {
        **LONG_TEXT,
        "description": "why; required when a tier's budget or max_epsilon_per_query changes "
        "(recorded in the audit record)",
    },
}


def _licence_fields(write: bool = False) -> dict[str, Schema]:
    when = WHEN_INPUT if write else TIME
    return {
        "id": {"type": "string", "pattern": "^lic_[A-Za-z0-9_]{1,64}$"},
        "subject": SHORT_TEXT if write else STR,
        "organization": SHORT_TEXT if write else STR,
        "tier": NAME,
        "datasets": _array(NAME),
        "purpose": {**LONG_TEXT, "minLength": 1} if write else STR,
        "jurisdiction": JURISDICTION,
        "valid_from": when,
        "valid_until": {
            **when,
            "description": "a date alone means the end of that day (UTC): the licence is "
            "usable through 2027-12-31 when valid_until is 2027-12-31",
        },
        "status": {"enum": list(LICENCE_STATUSES)},
    }


def _budget_left() -> Schema:
    return _obj(
        {
            "epsilon_remaining": NUM,
            "delta_remaining": NUM,
            "renews": _nullable("string"),
            "binding_layer": BINDING_LAYER,
        },
        ("epsilon_remaining", "delta_remaining", "renews", "binding_layer"),
    )


def _query_fields() -> dict[str, Schema]:
    """The fields of one query (a query body, or an item of a batch)."""
    return {
        "sql": {"type": "string", "minLength": 1},
        "epsilon": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1_000_000,
            "description": "rounded up to a multiple of 0.000001; outside the tier's "
            "[min_epsilon_per_query, max_epsilon_per_query]: refused. Omitted (and no "
            "accuracy): the tier's default_epsilon",
        },
        "accuracy": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_TARGETS,
            "description": "instead of epsilon: per output column (COUNT, COUNT DISTINCT, "
            "SUM), the largest ci95 wanted; the smallest grid epsilon that meets every target "
            "is used (422 accuracy-unreachable if none within the tier's cap does)",
            "additionalProperties": _obj(
                {"ci95": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CI95}},
                ("ci95",),
                additionalProperties=False,
            ),
        },
    }


def _epsilon_note() -> dict[str, Schema]:
    return {
        "epsilon_source": {
            "enum": ["request", "accuracy", "tier_default", "batch_split"],
            "description": "how the epsilon was set: given, chosen for accuracy targets, the "
            "tier's default_epsilon, or a batch's even split of total_epsilon",
        },
        "epsilon_chosen_for": {
            "type": "object",
            "description": "accuracy requests: each target and the ci95 the chosen epsilon "
            "achieves",
            "additionalProperties": _obj({"ci95": NUM, "achieved_ci95": NUM}),
        },
    }


def _accuracy() -> Schema:
    entry = _obj(
        {
            "ci95": _nullable(
                "number",
                description="half-width of a 95% interval for the noise alone; null for "
                "quantiles (and for an AVG in an estimate)",
            ),
            "resolution": {
                **NUM,
                "description": "quantiles: the largest spacing of the candidate grid",
            },
            "candidates": {**NUM, "description": "quantiles: number of candidates"},
            "rank_error95": {
                **NUM,
                "description": "quantiles: with probability >= 95% the released candidate's "
                "score |(1-q)*below - q*above| exceeds the best candidate's by at most this "
                "many bounded rows",
            },
        },
        ("ci95",),
    )
    return {
        "type": "object",
        "description": "per aggregate column: accuracy stated from public parameters only",
        "additionalProperties": entry,
    }


def _bounding() -> Schema:
    return _obj(
        {
            "privacy_unit": STR,
            "max_rows_per_unit": {"type": "integer", "minimum": 1},
            "counts": {"const": "bounded rows"},
            "statement": STR,
        },
        ("privacy_unit", "max_rows_per_unit", "counts", "statement"),
        description="every aggregate is over the bounded table (at most max_rows_per_unit "
        "rows per unit): COUNT(*) counts bounded rows",
    )


def _audit_record() -> Schema:
    """Built from the record's one declaration (``AuditRecord``): a schema per declared type,
    and the few fields with a tighter rule."""
    by_kind: dict[str, Schema] = {
        "int": {"type": "integer"},
        "str": STR,
        "str | None": _nullable("string"),
        "float": NUM,
        "bool": BOOL,
        "list[str]": _array(STR),
        "dict[str, Any] | None": _nullable("object"),
    }
    tighter: dict[str, Schema] = {
        "seq": {"type": "integer", "minimum": 1},
        "ts": TIME,
        "action": {"enum": list(ACTIONS)},
        "outcome": {"enum": list(OUTCOMES)},
        "prev_hash": HEX64,
        "hash": HEX64,
    }
    props = {name: tighter.get(name, by_kind[AUDIT_KINDS[name]]) for name in FIELDS}
    return _obj(props, ("seq", "ts", "actor", "action", "outcome", "prev_hash", "hash"))


def _summary_row(keys: tuple[str, ...]) -> Schema:
    counts = ("releases", "cache_hits", "refusals", "errors")
    props: dict[str, Schema] = {"epsilon_spent": EXACT_DECIMAL, "delta_spent": EXACT_DECIMAL}
    props.update({name: {"type": "integer", "minimum": 0} for name in counts})
    if keys:
        props.update({"actor": STR, "dataset": _nullable("string")})
    return _obj(props, (*keys, "epsilon_spent", "delta_spent", *counts))


def _transparency_report() -> Schema:
    day = {"type": "string", "format": "date"}
    decimal = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}
    count = {"type": "integer", "minimum": 0}

    def counts(*names: str) -> Schema:
        return _obj({n: count for n in names}, names)

    dataset = _obj(
        {
            "dataset": {**_nullable("string"), "description": "null: refusals of other names"},
            "epsilon": decimal,
            "delta": decimal,
            "queries": counts("released", "cached", "refused", "failed"),
            "incidents": counts("freezes", "licence_suspensions", "licence_revocations"),
            "active_licences": _array(
                _obj({"tier": STR, "jurisdiction": STR, "count": count},
                     ("tier", "jurisdiction", "count"))
            ),
        },
        ("dataset", "epsilon", "delta", "queries", "incidents", "active_licences"),
    )  # fmt: skip
    period = _obj(
        {
            "label": STR,
            "from": day,
            "to": day,
            "licences_as_of": TIME,
            "organisation_suspensions": count,
            "datasets": _array(dataset),
        },
        ("label", "from", "to", "licences_as_of", "organisation_suspensions", "datasets"),
    )
    return _obj(
        {
            "report": {"const": REPORT_KIND},
            "version": {"const": REPORT_VERSION},
            "from": day,
            "to": day,
            "period": {"enum": list(PERIODS)},
            "upto": count,
            "signed_head": ref("SignedHead"),
            "periods": _array(period),
        },
        ("report", "version", "from", "to", "period", "upto", "signed_head", "periods"),
        description="the transparency report (docs/transparency.md); no names of people",
    )


def component_schemas() -> dict[str, Schema]:
    """Every named schema, referenced from the operations as ``#/components/schemas/<name>``."""
    query_item = _obj(
        {
            "query_id": _nullable("string"),
            "ts": TIME,
            "dataset": _nullable("string"),
            "sql": _nullable("string"),
            "epsilon": NUM,
            "delta": NUM,
            "cached": BOOL,
            "outcome": {"enum": list(OUTCOMES)},
            "reason": _nullable("string"),
            "audit_seq": INT,
        },
        ("ts", "outcome", "audit_seq"),
    )
    budget_entry = _obj(
        {
            "dataset": NAME,
            "licence_id": STR,
            "licence_status": {"enum": list(LICENCE_STATUSES)},
            "tier": NAME,
            "epsilon_spent": NUM,
            "delta_spent": NUM,
            "epsilon_remaining": NUM,
            "delta_remaining": NUM,
            "epsilon_limit": NUM,
            "delta_limit": NUM,
            "renews": _nullable("string"),
            "binding_layer": BINDING_LAYER,
        },
        ("dataset", "epsilon_spent", "delta_spent", "epsilon_remaining", "delta_remaining"),
    )
    licence = _licence_fields()
    licence_in = _licence_fields(write=True)
    return {
        **steward_schemas(),
        **governance_schemas(),
        "Problem": _problem(),
        "Column": _column(),
        "DatasetPublic": _obj(_dataset_fields(False), ("name", "privacy_unit", "columns")),
        "DatasetList": _obj({"datasets": _array(ref("DatasetPublic"))}, ("datasets",)),
        "QueryRequest": _obj(
            {
                "dataset": {"type": "string", "minLength": 1},
                **_query_fields(),
                "max_share": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "runs only (an estimate ignores it): refuse the run, free and "
                    "before any data is read, if it would spend more than this share of the "
                    "budget left (the larger of the epsilon and delta shares): 409 "
                    "spend-needs-confirmation, which gives the cost, what is left and the share",
                },
            },
            ("dataset", "sql"),
            additionalProperties=False,
        ),
        "BatchRequest": _obj(
            {
                "dataset": {"type": "string", "minLength": 1},
                "queries": {
                    **_array(_obj(_query_fields(), ("sql",), additionalProperties=False)),
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                },
                "total_epsilon": {
                    **_EPSILON,
                    "description": "split evenly over the queries (rounded down to the grid, "
                    "capped at max_epsilon_per_query); the queries then give no epsilon or "
                    "accuracy",
                },
            },
            ("dataset", "queries"),
            additionalProperties=False,
        ),
        "BatchEstimate": _obj(
            {
                "dataset": STR,
                "queries": _array(
                    _obj(
                        {
                            "epsilon": NUM,
                            "delta": NUM,
                            "plan_epsilon": NUM,
                            "plan_delta": NUM,
                            **_epsilon_note(),
                            "accuracy": ref("Accuracy"),
                            "cached": BOOL,
                            "within_budget": {**BOOL, "description": "this query alone fits"},
                        },
                        ("epsilon", "delta", "accuracy", "cached", "within_budget"),
                    )
                ),
                "epsilon": {**NUM, "description": "the batch's total cost (cached repeats: 0)"},
                "delta": NUM,
                "within_budget": {**BOOL, "description": "the whole batch fits the budget left"},
                "split": {
                    "type": ["object", "null"],
                    "description": "total_epsilon's even split, if one was asked for",
                    "properties": {
                        "total_epsilon": NUM,
                        "rule": {"enum": ["even"]},
                        "epsilon_per_query": NUM,
                    },
                },
                "budget": ref("BudgetLeft"),
                "audit_seq": INT,
                "bounding": ref("Bounding"),
            },
            ("dataset", "queries", "epsilon", "delta", "within_budget", "budget"),
        ),
        "Accuracy": _accuracy(),
        "Bounding": _bounding(),
        "BudgetLeft": _budget_left(),
        "QueryResult": _obj(
            {
                "query_id": STR,
                "dataset": STR,
                "columns": _array(STR),
                "rows": _array(_array(CELL)),
                "epsilon_spent": NUM,
                "delta_spent": NUM,
                "cached": BOOL,
                "accuracy": ref("Accuracy"),
                "suppressed_groups": {"type": "integer", "minimum": 0},
                "budget": ref("BudgetLeft"),
                "audit_seq": INT,
                "release_of": {**STR, "description": "cached repeats: the original query_id"},
                **_epsilon_note(),
                "bounding": ref("Bounding"),
            },
            (
                "query_id",
                "dataset",
                "columns",
                "rows",
                "epsilon_spent",
                "delta_spent",
                "cached",
                "accuracy",
                "suppressed_groups",
                "budget",
                "audit_seq",
            ),
        ),  # fmt: skip
        "Estimate": _obj(
            {
                "dataset": STR,
                "epsilon": {**NUM, "description": "what running it would charge (0 if cached)"},
                "delta": NUM,
                "plan_epsilon": NUM,
                "plan_delta": NUM,
                "accuracy": ref("Accuracy"),
                "cached": BOOL,
                "within_budget": BOOL,
                **_epsilon_note(),
                "budget": ref("BudgetLeft"),
                "audit_seq": INT,
                "bounding": ref("Bounding"),
            },
            ("dataset", "epsilon", "delta", "accuracy", "cached", "budget"),
        ),
        "SyntheticRequest": _obj(
            {
                "dataset": {"type": "string", "minLength": 1},
                "columns": {**_array(STR), "minItems": 2, "maxItems": 10},
                "epsilon": {
                    **_EPSILON,
                    "description": "required; at most the tier's synthetic "
                    "max_epsilon; rounded up to a multiple of 0.000001",
                },
                "rows": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "bins": {
                    "type": "integer",
                    "minimum": 2,
                    "maximum": 64,
                    "description": "bins per numeric column (default 10)",
                },
            },
            ("dataset", "columns", "epsilon", "rows"),
            additionalProperties=False,
        ),
        "Job": _obj(
            {
                "id": STR,
                "kind": {"enum": ["synthetic", "query"]},
                "state": {"enum": ["queued", "running", "done", "failed"]},
                "progress": {"type": "number", "minimum": 0, "maximum": 1},
                "dataset": STR,
                "request": {"type": "object"},
                "attempts": {"type": "integer", "minimum": 0},
                "created_at": STR,
                "updated_at": STR,
                "status_url": STR,
                "cached": {
                    **BOOL,
                    "description": "POST only: a repeat answered from the "
                    "release cache (nothing spent)",
                },
                "result": _obj(
                    {
                        "epsilon": NUM,
                        "delta": NUM,
                        "rows": INT,
                        "cached": {**BOOL, "description": "query: answered from the cache"},
                        "result_sha256": STR,
                        "files": {"type": "object", "additionalProperties": STR},
                    }
                ),
                "problem": {"type": "object"},
            },
            ("id", "kind", "state", "progress", "dataset", "status_url"),
        ),  # fmt: skip
        "QueryJobSubmitted": {"anyOf": [ref("Job"), ref("QueryResult")]},
        "BudgetList": _obj({"budgets": _array(budget_entry)}, ("budgets",)),
        "QueryHistory": _obj(
            {"queries": _array(query_item), "next_cursor": _nullable("string")},
            ("queries", "next_cursor"),
        ),
        "Licence": _obj(
            {
                **licence,
                "created_at": _nullable("string"),
                "updated_at": _nullable("string"),
                "status_reason": {
                    "type": ["object", "null"],
                    "description": "why a suspended or revoked licence is so (from the audit "
                    "log): status, reason, by, at, audit_seq; null when active",
                    "properties": {
                        "status": STR,
                        "reason": _nullable("string"),
                        "by": STR,
                        "at": STR,
                        "audit_seq": {"type": "integer"},
                    },
                },
            },
            tuple(licence),
        ),
        "LicenceList": _obj({"licences": _array(ref("Licence"))}, ("licences",)),
        "LicenceCreate": _obj(
            {
                **licence_in,
                "status": {"const": "active"},
                "reason": {
                    **LONG_TEXT,
                    "minLength": 1,
                    "description": "kept in the audit log; required for a reissue that waits "
                    "for a second admin (four-eyes)",
                },
            },
            (
                "subject",
                "organization",
                "tier",
                "datasets",
                "purpose",
                "jurisdiction",
                "valid_until",
            ),
            additionalProperties=False,
        ),  # fmt: skip
        "LicencePatch": _obj(
            {
                **{k: v for k, v in licence_in.items() if k not in ("id", "subject")},
                "reason": {
                    **LONG_TEXT,
                    "minLength": 1,
                    "description": "required when tier, datasets, validity, status or "
                    "organization change",
                },
            },
            minProperties=1,
            additionalProperties=False,
        ),
        "Tier": _obj(_tier_fields(), ("name", "aggregates", "max_epsilon_per_query", "budget")),
        "TierVersion": {"allOf": [ref("Tier"), _obj(_VERSIONED)]},
        "TierList": _obj({"tiers": _array(ref("Tier"))}, ("tiers",)),
        "TierInput": _obj(
            {**_tier_fields(), **_WRITE_EXTRAS},
            ("aggregates", "max_epsilon_per_query", "budget"),
            additionalProperties=False,
        ),
        "Dataset": _obj(_dataset_fields(True), ("name", "source", "privacy_unit", "columns")),
        "DatasetVersion": {"allOf": [ref("Dataset"), _obj(_VERSIONED)]},
        "DatasetAdminList": _obj({"datasets": _array(ref("Dataset"))}, ("datasets",)),
        "DatasetInput": _obj(
            {**_dataset_fields(True), **_WRITE_EXTRAS},
            ("source", "privacy_unit", "max_rows_per_unit", "min_tier", "columns"),
            additionalProperties=False,
        ),
        "RevocationRequest": _obj(
            {
                "jti": {"type": "string", "minLength": 1, "maxLength": 256},
                "reason": {**LONG_TEXT, "minLength": 1},
            },
            ("jti", "reason"),
            additionalProperties=False,
        ),
        "Revocation": _obj(
            {"jti": STR, "reason": STR, "revoked": {"const": True}}, ("jti", "revoked")
        ),
        "AuditRecord": _audit_record(),
        "AuditEvents": _obj(
            {"events": _array(ref("AuditRecord")), "next_cursor": _nullable("string")},
            ("events", "next_cursor"),
        ),
        "SignedHead": _obj(
            {"seq": INT, "hash": HEX64, "ts": TIME, "key_id": STR, "signature": STR},
            ("seq", "hash", "ts", "key_id", "signature"),
            description="a chain head signed with the gateway's Ed25519 key (GET /v1/audit/key)",
        ),
        "AuditVerify": {
            "oneOf": [
                _obj(
                    {
                        "valid": {"const": True},
                        "count": INT,
                        "head": HEX64,
                        "signed_head": ref("SignedHead"),
                    },
                    ("valid", "count", "head", "signed_head"),
                ),
                _obj(
                    {
                        "valid": {"const": False},
                        "first_bad_seq": INT,
                        "reason": STR,
                        "count": {**INT, "description": "records that verified before the break"},
                    },
                    ("valid", "first_bad_seq", "reason"),
                ),
            ]
        },  # fmt: skip
        "AuditSummary": _obj(
            {
                "since": _nullable("string"),
                "until": _nullable("string"),
                "rows": _array(_summary_row(("actor", "dataset"))),
                "totals": _summary_row(()),
            },
            ("since", "until", "rows", "totals"),
            description="epsilon spent, releases, cache hits and refusals per actor and dataset",
        ),
        "AuditKey": _obj(
            {
                "key_id": {**STR, "description": "RFC 7638 thumbprint of the public JWK"},
                "algorithm": {"const": "Ed25519"},
                "public_key_pem": STR,
                "jwk": {"type": "object"},
            },
            ("key_id", "algorithm", "public_key_pem"),
            description="the Ed25519 public key that signs chain heads",
        ),
        "TransparencyReport": _transparency_report(),
        "Health": _obj({"status": STR}, ("status",)),
        "ConsoleSettings": _obj(
            {
                "issuer": STR,
                "audience": STR,
                "roles_claim": STR,
                "oidc_client_id": _nullable("string"),
                "oidc_scopes": _array(STR),
            },
            ("issuer", "audience", "roles_claim", "oidc_client_id", "oidc_scopes"),
            description="public sign-in settings of the web console",
        ),
        "Ready": _obj(
            {
                "status": {"enum": ["ready", "degraded", "not ready"]},
                "checks": {"type": "object", "additionalProperties": STR},
                "store": {"enum": ["sqlite", "postgresql"]},
                "datasets": {
                    "type": "object",
                    "description": "How many datasets are in each state (no names)",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
                "dataset_states": {
                    "type": "object",
                    "description": "Each dataset's state; only for an admin or auditor token",
                    "additionalProperties": STR,
                },
            },
            ("status", "checks", "datasets"),
        ),
    }

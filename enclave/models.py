"""Frozen value types shared across the gateway's stages.

Epsilon and delta that are *charged* are ``Decimal`` values on the ledger's grid
(``ledger/grid.py``), which stores them as integer units: ten spends of 0.1 fit a budget of 1.0.
OpenDP works in floats; ``dp/mechanisms.py`` guarantees the float privacy loss it computes never
exceeds the Decimal that is charged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from enclave.ledger.grid import DEFAULT_EPSILON, DEFAULT_MIN_EPSILON, Amount

Role = Literal["researcher", "admin", "auditor"]
ROLES: tuple[str, ...] = ("researcher", "admin", "auditor")

ColumnType = Literal["identifier", "int", "float", "category", "date"]
COLUMN_TYPES: tuple[str, ...] = ("identifier", "int", "float", "category", "date")
FLOAT_DECIMALS = 6  # the bounded table stores clamped floats as DECIMAL(18|38, 6)
MAX_INT_SENSITIVITY = 2**53  # k * max(|low|, |high|) of an int column: exact in a float


def stored_float(value: float) -> Decimal:
    """The DECIMAL(p, 6) that DuckDB stores for the DOUBLE ``value``: ``value * 1e6`` computed
    in double arithmetic, rounded half away from zero (measured on DuckDB 1.x over 30,000
    values; ``tests/dp/test_stored_grid.py`` checks it against DuckDB). The cast is monotone,
    so a value clamped into ``[low, high]`` is stored within ``[stored_float(low),
    stored_float(high)]``: those, not the declared bounds, are what a sum adds per row."""
    scaled = Decimal(float(value) * 10.0**FLOAT_DECIMALS)
    return scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP).scaleb(-FLOAT_DECIMALS)


AggKind = Literal["count", "count_distinct_units", "sum", "avg", "quantile"]
AGG_KINDS: tuple[str, ...] = ("count", "count_distinct_units", "sum", "avg", "quantile")

LicenceStatus = Literal["active", "suspended", "revoked"]
LICENCE_STATUSES: tuple[str, ...] = ("active", "suspended", "revoked")


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by a verified token. Roles come only from the token."""

    subject: str
    roles: frozenset[str]
    jti: str | None = None
    expires_at: int | None = None  # the token's `exp`, seconds since the epoch
    issuer: str = ""

    def has(self, role: str) -> bool:
        return role in self.roles


def amount_json(amount: Amount) -> dict[str, float]:
    """A budget as policy files write it (``{epsilon, delta}``)."""
    return {"epsilon": amount.epsilon_float, "delta": amount.delta_float}


@dataclass(frozen=True)
class Licence:
    id: str
    subject: str
    organization: str
    tier: str
    datasets: tuple[str, ...]
    purpose: str
    jurisdiction: str
    valid_from: dt.datetime  # timezone-aware, UTC
    valid_until: dt.datetime  # timezone-aware, UTC
    status: LicenceStatus = "active"
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "organization": self.organization,
            "tier": self.tier,
            "datasets": list(self.datasets),
            "purpose": self.purpose,
            "jurisdiction": self.jurisdiction,
            "valid_from": iso(self.valid_from),
            "valid_until": iso(self.valid_until),
            "status": self.status,
            "created_at": iso(self.created_at) if self.created_at else None,
            "updated_at": iso(self.updated_at) if self.updated_at else None,
        }


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: ColumnType
    # int/float: (low, high) as numbers; date: (low, high) as datetime.date; else None
    bounds: tuple[Any, Any] | None = None
    values: tuple[str, ...] | None = None  # category: the declared values, in declared order

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.bounds is not None:
            out["bounds"] = [_jsonable(b) for b in self.bounds]
        if self.values is not None:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    source: str  # as written (relative to data_dir, or duckdb://...)
    source_path: str  # resolved absolute path of the file the data comes from
    privacy_unit: str
    max_rows_per_unit: int
    min_tier: tuple[str, ...]  # one name: it or any higher level; several: exactly those
    allowed_jurisdictions: tuple[str, ...] | None
    columns: tuple[ColumnSpec, ...]
    version: int = 1
    source_table: str | None = None  # for duckdb://file.duckdb#table sources
    retired: bool = False  # no new queries or estimates; history and spend are kept
    frozen: str | None = None  # an incident freeze's reason: every query refused while set
    total_budget: Amount | None = None  # everyone's lifetime spend on it (None: no limit)

    def column(self, name: str) -> ColumnSpec | None:
        """Case-insensitive lookup against the declared columns."""
        low = name.lower()
        for col in self.columns:
            if col.name.lower() == low:
                return col
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "privacy_unit": self.privacy_unit,
            "max_rows_per_unit": self.max_rows_per_unit,
            "min_tier": self.min_tier[0] if len(self.min_tier) == 1 else list(self.min_tier),
            "allowed_jurisdictions": (
                None if self.allowed_jurisdictions is None else list(self.allowed_jurisdictions)
            ),
            "columns": {c.name: c.to_json() for c in self.columns},
            "version": self.version,
            **({"retired": True} if self.retired else {}),
            **({"frozen": self.frozen} if self.frozen is not None else {}),
            **({"total_budget": amount_json(self.total_budget)} if self.total_budget else {}),
        }


@dataclass(frozen=True)
class Tier:
    name: str
    description: str
    aggregates: frozenset[str]
    max_epsilon_per_query: Decimal
    budget_epsilon: Decimal
    budget_delta: Decimal
    period_days: int | None = None
    min_epsilon_per_query: Decimal = DEFAULT_MIN_EPSILON
    default_epsilon: Decimal = DEFAULT_EPSILON  # spent when a query gives no epsilon or target
    min_noisy_count: int = 0
    group_by_max_columns: int = 2
    group_by_max_groups: int = 500
    allow_undeclared_keys: bool = False
    filters: bool = True
    rate_limit_per_minute: int = 60
    allowed_jurisdictions: tuple[str, ...] = ()  # empty = any
    level: int = 0  # orders tiers for a dataset's single `min_tier`
    version: int = 1
    synthetic_allowed: bool = False  # DP synthetic data (docs/synthetic.md)
    synthetic_max_epsilon: Decimal = Decimal(0)  # its cap per release
    # one organisation's lifetime spend per dataset on licences of this tier (None: no limit)
    organisation_budget_epsilon: Decimal | None = None
    organisation_budget_delta: Decimal | None = None

    @property
    def organisation_budget(self) -> Amount | None:
        if self.organisation_budget_epsilon is None:
            return None
        return Amount.limit(self.organisation_budget_epsilon, self.organisation_budget_delta or 0)

    def to_json(self) -> dict[str, Any]:
        budget: dict[str, Any] = {
            "epsilon": float(self.budget_epsilon),
            "delta": float(self.budget_delta),
        }
        if self.period_days is not None:
            budget["period_days"] = self.period_days
        return {
            "name": self.name,
            "description": self.description,
            "aggregates": sorted(self.aggregates, key=AGG_KINDS.index),
            "max_epsilon_per_query": float(self.max_epsilon_per_query),
            "min_epsilon_per_query": float(self.min_epsilon_per_query),
            "default_epsilon": float(self.default_epsilon),
            "budget": budget,
            "min_noisy_count": self.min_noisy_count,
            "group_by": {
                "max_columns": self.group_by_max_columns,
                "max_groups": self.group_by_max_groups,
                "allow_undeclared_keys": self.allow_undeclared_keys,
            },
            "filters": self.filters,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "allowed_jurisdictions": list(self.allowed_jurisdictions),
            "level": self.level,
            "version": self.version,
            "synthetic": (
                {"allowed": True, "max_epsilon": float(self.synthetic_max_epsilon)}
                if self.synthetic_allowed
                else {"allowed": False}
            ),
            **(
                {"organisation_budget": amount_json(org)}
                if (org := self.organisation_budget) is not None
                else {}
            ),
        }


@dataclass(frozen=True)
class Release:
    """A query's answer to the researcher: a noisy table released now, or again from the cache.

    The *stored release* (``charged.stored_release``: columns, rows, accuracy, suppressed
    groups, its charge, digest and query id) is what the release cache keeps; ``from_stored``
    builds the answer from it for both a new release and a cached repeat. ``epsilon`` and
    ``delta`` are what this answer charged (0 for a repeat); the JSON names them
    ``epsilon_spent`` and ``delta_spent``.
    """

    query_id: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    epsilon: Decimal
    delta: Decimal
    cached: bool
    accuracy: dict[str, dict[str, float | None]]
    suppressed_groups: int
    budget: dict[str, Any]
    audit_seq: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(
        cls,
        stored: dict[str, Any],
        *,
        query_id: str,
        dataset: str,
        cached: bool,
        budget: dict[str, Any],
        audit_seq: int,
        extra: dict[str, Any],
    ) -> Release:
        return cls(
            query_id=query_id,
            dataset=dataset,
            columns=tuple(stored["columns"]),
            rows=tuple(tuple(r) for r in stored["rows"]),
            epsilon=Decimal(0) if cached else Decimal(stored["epsilon"]),
            delta=Decimal(0) if cached else Decimal(stored["delta"]),
            cached=cached,
            accuracy=stored["accuracy"],
            suppressed_groups=stored["suppressed_groups"],
            budget=budget,
            audit_seq=audit_seq,
            extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "dataset": self.dataset,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
            "epsilon_spent": float(self.epsilon),
            "delta_spent": float(self.delta),
            "cached": self.cached,
            "accuracy": self.accuracy,
            "suppressed_groups": self.suppressed_groups,
            "budget": self.budget,
            "audit_seq": self.audit_seq,
            **self.extra,
        }


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(ts: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds and a `Z`, as in the audit record."""
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_time(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp or date; naive values are taken as UTC."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def time_text(value: dt.datetime) -> str:
    """A licence timestamp at full precision, in UTC (``iso()`` keeps milliseconds only)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def as_time(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return parse_time(time_text(value))
    return parse_time(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    return value

"""A synthetic-data request: the body of ``POST /v1/synthetic``, checked against the public
schema and the tier before anything is charged (docs/synthetic.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from enclave.errors import BadRequest, TierRefused
from enclave.models import DatasetSpec, Tier
from enclave.query.request import grid_epsilon
from enclave.query.sqlcheck import suggest
from enclave.synthetic.mst import SynthColumn, numeric_column

MIN_COLUMNS, MAX_COLUMNS = 2, 10  # MST joins columns by a tree: at least two
MAX_ROWS = 1_000_000
DEFAULT_BINS, MAX_BINS = 10, 64
MAX_KEYS = 200  # declared values of one category column (a two-way marginal has keys^2 cells)
FIELDS = frozenset({"dataset", "columns", "epsilon", "rows", "bins"})


@dataclass(frozen=True)
class SyntheticRequest:
    dataset: str
    columns: tuple[str, ...]
    epsilon: Decimal  # on the ledger's grid, rounded up (as queries)
    rows: int
    bins: int = DEFAULT_BINS

    @classmethod
    def from_json(cls, body: Any) -> SyntheticRequest:
        """One 400 lists every problem of the body's shape."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        problems: list[str] = []
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            problems.append(f"unknown field(s): {', '.join(map(str, unknown))}")
        dataset, columns = body.get("dataset"), body.get("columns")
        if not isinstance(dataset, str) or not dataset:
            problems.append("'dataset' must be a non-empty string")
        names: tuple[str, ...] = ()
        if (
            not isinstance(columns, list)
            or not MIN_COLUMNS <= len(columns) <= MAX_COLUMNS
            or not all(isinstance(c, str) and c for c in columns)
        ):
            problems.append(f"'columns' must list {MIN_COLUMNS} to {MAX_COLUMNS} column names")
        elif len({c.lower() for c in columns}) != len(columns):
            problems.append("'columns' names a column twice")
        else:
            names = tuple(columns)
        epsilon = None
        if "epsilon" not in body:
            problems.append(
                "'epsilon' is required (a synthetic release is never priced by default)"
            )
        else:
            epsilon = grid_epsilon(body["epsilon"], "'epsilon'", problems)
        rows = _int(body.get("rows"), "rows", 1, MAX_ROWS, problems)
        bins = _int(body.get("bins", DEFAULT_BINS), "bins", 2, MAX_BINS, problems)
        if problems:
            raise BadRequest("; ".join(problems))
        assert isinstance(dataset, str) and epsilon is not None  # noqa: S101 (checked above)
        assert rows is not None and bins is not None  # noqa: S101
        return cls(dataset=dataset, columns=names, epsilon=epsilon, rows=rows, bins=bins)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "columns": list(self.columns),
            "epsilon": str(self.epsilon),
            "rows": self.rows,
            "bins": self.bins,
        }

    def cache_key(self, spec: DatasetSpec) -> str:
        """Same dataset version, columns, epsilon, rows and bins: the same release."""
        text = json.dumps(
            {
                "kind": "synthetic",
                "dataset": spec.name,
                "version": spec.version,
                "columns": [c.lower() for c in self.columns],
                "epsilon": str(self.epsilon.normalize()),
                "rows": self.rows,
                "bins": self.bins,
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()


def _int(value: Any, name: str, low: int, high: int, problems: list[str]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"'{name}' must be an integer from {low} to {high}")
        return None
    return value


def check_tier(tier: Tier, epsilon: Decimal) -> None:
    """The tier allows synthetic releases, and this one within its cap (free refusals)."""
    if not tier.synthetic_allowed:
        raise TierRefused(f"tier '{tier.name}' does not allow synthetic data releases")
    if epsilon > tier.synthetic_max_epsilon:
        raise TierRefused(
            f"epsilon {epsilon} exceeds tier '{tier.name}''s synthetic cap "
            f"{tier.synthetic_max_epsilon}"
        )


def synth_columns(spec: DatasetSpec, req: SyntheticRequest) -> tuple[SynthColumn, ...]:
    """The chosen columns as MST keys, from the public schema only; one 400 lists every
    column that cannot be used (unknown ones with the closest declared names)."""
    problems: list[str] = []
    out: list[SynthColumn] = []
    declared = [c.name for c in spec.columns]
    for name in req.columns:
        col = spec.column(name)
        if col is None:
            close = suggest(name, declared)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            problems.append(f"unknown column '{name[:64]}'{hint}")
        elif col.type == "category":
            if not col.values:
                problems.append(f"{col.name}: a category needs declared values to be released")
            elif len(col.values) > MAX_KEYS:
                problems.append(f"{col.name}: more than {MAX_KEYS} declared values")
            else:
                out.append(SynthColumn(name=col.name, type="category", keys=col.values))
        elif col.type in ("int", "float") and col.bounds is not None:
            low, high = col.bounds
            out.append(numeric_column(col.name, col.type, low, high, req.bins))
        else:
            problems.append(
                f"{col.name}: {col.type} columns cannot be released "
                "(declared categories and bounded int/float columns can)"
            )
    if problems:
        raise BadRequest("; ".join(problems))
    return tuple(out)

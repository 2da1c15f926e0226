"""The bodies of ``POST /v1/queries``, ``/v1/queries/estimate`` and ``/estimate/batch``.

Each is validated where it is given: one 400 lists every problem. A query says how much to
spend in one of three ways (``EpsilonSource``):

- ``epsilon``: rounded *up* to the ledger's grid (``ledger/grid.py``), so what is charged is
  what is calibrated; bounded before any conversion (a huge integer never becomes a float);
- ``accuracy``: ``{"<output column>": {"ci95": <half-width>}}``; the gateway picks the
  smallest grid epsilon that meets every target (``dp/target.py``);
- neither: the tier's ``default_epsilon`` (never silently the tier's cap).

``max_share`` (a run only; an estimate ignores it): refuse the run, free and before any data
is read, when it would spend more than this share of the budget left (409
``spend-needs-confirmation``, ``pipeline.require_share``).

Giving both is a problem. A batch (``BatchRequest``) prices several queries on one dataset,
each with its own epsilon, accuracy or default, or splits one ``total_epsilon`` evenly over
queries that give neither (``split_total``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from enclave.errors import BadRequest
from enclave.inputs import MAX_NAME_CHARS
from enclave.ledger.grid import MAX_EPSILON, epsilon_up, epsilon_value

EpsilonSource = Literal["request", "accuracy", "tier_default", "batch_split"]
MAX_TARGETS = 64  # accuracy targets in one query (a query has at most that many columns)
MAX_CI95 = 1e15  # a target above any declared bound's reach is a typo
MAX_BATCH = 50  # queries priced in one batch estimate
_QUERY_FIELDS = frozenset({"dataset", "sql", "epsilon", "accuracy", "max_share"})
_ITEM_FIELDS = frozenset({"sql", "epsilon", "accuracy"})
_BATCH_FIELDS = frozenset({"dataset", "queries", "total_epsilon"})


@dataclass(frozen=True)
class QueryRequest:
    dataset: str
    sql: str
    epsilon: Decimal | None = None
    accuracy: dict[str, float] | None = None  # output column -> ci95 target
    #: refuse, free, a run that would spend more than this share of the budget left
    max_share: Decimal | None = None

    @classmethod
    def from_json(cls, body: Any) -> QueryRequest:
        """Validate a query body; one 400 lists every problem."""
        problems = _unknown(_object(body), _QUERY_FIELDS, "")
        dataset = _dataset(body.get("dataset"), problems)
        out = _query(body, "", problems)
        share = body.get("max_share")
        max_share = None if share is None else _share(share, problems)
        _raise(problems)
        return QueryRequest(dataset or "", *out, max_share=max_share)


@dataclass(frozen=True)
class BatchRequest:
    dataset: str
    queries: tuple[QueryRequest, ...]
    total_epsilon: Decimal | None = None

    @classmethod
    def from_json(cls, body: Any) -> BatchRequest:
        """Validate a batch body; one 400 lists every problem of every query."""
        problems = _unknown(_object(body), _BATCH_FIELDS, "")
        dataset = _dataset(body.get("dataset"), problems)
        items = body.get("queries")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            problems.append(f"'queries' must be a list of 1 to {MAX_BATCH} query objects")
            items = []
        total = body.get("total_epsilon")
        total_eps = None if total is None else grid_epsilon(total, "'total_epsilon'", problems)
        queries = []
        for i, item in enumerate(items):
            where = f"queries[{i}]"
            if not isinstance(item, dict):
                problems.append(f"{where} must be an object")
                continue
            problems.extend(_unknown(item, _ITEM_FIELDS, f"{where}: "))
            sql, eps, acc = _query(item, f"{where}: ", problems)
            if total is not None and (eps is not None or acc is not None):
                problems.append(
                    f"{where}: give 'epsilon' or 'accuracy' per query, or 'total_epsilon' for "
                    "the batch, not both"
                )
            queries.append(QueryRequest(dataset or "", sql, eps, acc))
        _raise(problems)
        return BatchRequest(dataset or "", tuple(queries), total_eps)

    def split_total(self, min_epsilon: Decimal, max_epsilon: Decimal) -> Decimal | None:
        """The even share of ``total_epsilon`` per query, rounded *down* to the grid (so the
        shares never add up to more than the total) and capped at the tier's
        ``max_epsilon_per_query``; a share below ``min_epsilon_per_query`` is refused."""
        if self.total_epsilon is None:
            return None
        units = epsilon_up(self.total_epsilon) // len(self.queries)
        share = min(epsilon_value(units), max_epsilon)
        if share < min_epsilon or units == 0:
            raise BadRequest(
                f"total_epsilon {self.total_epsilon} split evenly over {len(self.queries)} "
                f"queries gives {epsilon_value(units)} each, below the tier's "
                f"min_epsilon_per_query ({min_epsilon}); give a larger total or fewer queries"
            )
        return share


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _raise(problems: list[str]) -> None:
    if problems:
        raise BadRequest("; ".join(problems), problems)


def _dataset(value: Any, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append("'dataset' must be a non-empty string")
        return None
    return value


def _unknown(body: dict[str, Any], allowed: frozenset[str], at: str) -> list[str]:
    unknown = sorted(set(body) - allowed)
    return [f"{at}unknown field(s): {', '.join(map(str, unknown))}"] if unknown else []


def _query(
    body: dict[str, Any], at: str, problems: list[str]
) -> tuple[str, Decimal | None, dict[str, float] | None]:
    """``sql``, ``epsilon`` and ``accuracy`` of one query object (problems prefixed ``at``)."""
    sql, eps, acc = body.get("sql"), body.get("epsilon"), body.get("accuracy")
    if not isinstance(sql, str) or not sql.strip():
        problems.append(f"{at}'sql' must be a non-empty string")
        sql = ""
    if eps is not None and acc is not None:
        problems.append(f"{at}give either 'epsilon' or 'accuracy', not both")
    epsilon = None if eps is None else grid_epsilon(eps, f"{at}'epsilon'", problems)
    targets = None if acc is None else _targets(acc, at, problems)
    return sql, epsilon, targets


def grid_epsilon(eps: Any, label: str, problems: list[str]) -> Decimal | None:
    """A requested epsilon on the grid, rounded up; bounded *before* any conversion."""
    what = f"{label} must be a positive number no larger than {MAX_EPSILON}"
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        problems.append(what)
        return None
    if (isinstance(eps, float) and not math.isfinite(eps)) or not 0 < eps <= MAX_EPSILON:
        problems.append(what)
        return None
    return epsilon_value(epsilon_up(Decimal(repr(eps) if isinstance(eps, float) else eps)))


def _share(value: Any, problems: list[str]) -> Decimal | None:
    """``max_share``: a number from 0 to 1 (a share of the budget left)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        problems.append("'max_share' must be a number from 0 to 1")
        return None
    return Decimal(repr(value) if isinstance(value, float) else value)


def _targets(value: Any, at: str, problems: list[str]) -> dict[str, float] | None:
    """``{"<column>": {"ci95": <positive number>}}`` → ``{column: ci95}``."""
    shape = '{"<output column>": {"ci95": <positive number>}, ...}'
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_TARGETS:
        problems.append(f"{at}'accuracy' must be an object of 1 to {MAX_TARGETS} targets {shape}")
        return None
    out: dict[str, float] = {}
    for column, entry in value.items():
        name = f"{at}accuracy[{_short(column)!r}]"
        if len(column) > MAX_NAME_CHARS:
            problems.append(f"{name}: a column name has at most {MAX_NAME_CHARS} characters")
            continue
        if not isinstance(entry, dict) or set(entry) != {"ci95"}:
            problems.append(f'{name} must be {{"ci95": <positive number>}}')
            continue
        ci = entry["ci95"]
        if isinstance(ci, bool) or not isinstance(ci, int | float) or not 0 < ci <= MAX_CI95:
            problems.append(f"{name}.ci95 must be a positive number no larger than {MAX_CI95:g}")
            continue
        if isinstance(ci, float) and not math.isfinite(ci):  # pragma: no cover - bounded above
            continue
        out[column] = float(ci)
    return out if len(out) == len(value) else None


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"

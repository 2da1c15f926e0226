"""The typed query plan: what a user's SQL means, after parsing and name resolution.

A ``Plan`` is produced by ``query/parse.py`` from the SQL subset, checked by
``policy/decide.py``, priced by ``dp/mechanisms.py``, compiled by ``query/compile.py``.
All column names in a plan are the *declared* (canonical) names from the dataset spec.
Literal values are already typed (int, float, str, datetime.date, None).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from enclave.models import AggKind

if TYPE_CHECKING:
    from enclave.query.stats import Statistic

CompareOp = Literal["=", "!=", "<", "<=", ">", ">="]
Literal_ = int | float | str | dt.date


@dataclass(frozen=True)
class Comparison:
    column: str
    op: CompareOp
    value: Literal_


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Literal_, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    column: str
    low: Literal_
    high: Literal_
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False  # True: IS NOT NULL


@dataclass(frozen=True)
class And:
    items: tuple[Predicate, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Predicate, ...]


@dataclass(frozen=True)
class Not:
    item: Predicate


Predicate = Comparison | InList | Between | IsNull | And | Or | Not


@dataclass(frozen=True)
class Aggregate:
    kind: AggKind
    alias: str  # output column name (the user's alias, else a generated one)
    column: str | None = None  # None for count and count_distinct_units
    q: float | None = None  # quantile level in (0, 1); MEDIAN is 0.5


@dataclass(frozen=True)
class GroupColumn:
    column: str
    alias: str


SelectItem = GroupColumn | Aggregate


@dataclass(frozen=True)
class OrderItem:
    name: str  # an output column name (alias)
    descending: bool = False


@dataclass(frozen=True)
class Plan:
    dataset: str
    select: tuple[SelectItem, ...]
    group_by: tuple[str, ...] = ()
    where: Predicate | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        return tuple(s for s in self.select if isinstance(s, Aggregate))

    @property
    def output_columns(self) -> tuple[str, ...]:
        return tuple(s.alias for s in self.select)

    def filter_columns(self) -> tuple[str, ...]:
        """Every column named in WHERE, in first-seen order."""
        seen: list[str] = []

        def walk(p: Predicate) -> None:
            if isinstance(p, And | Or):
                for item in p.items:
                    walk(item)
            elif isinstance(p, Not):
                walk(p.item)
            elif p.column not in seen:
                seen.append(p.column)

        if self.where is not None:
            walk(self.where)
        return tuple(seen)

    def normalized(self) -> str:
        """Canonical text of the plan: the release-cache key (with dataset version, epsilon).

        Computed once per Plan (a frozen value; the pipeline asks for it three times a query).
        """
        return self._normalized

    @functools.cached_property
    def _normalized(self) -> str:
        return json.dumps(_plain(self), sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        out = {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
        out["_"] = type(value).__name__
        return out
    if isinstance(value, float) and value.is_integer():
        return {"num": repr(value)}
    return value


@dataclass(frozen=True)
class CompiledQuery:
    """DuckDB SQL written by the gateway from a plan; user text never appears in it.

    ``stats`` are the result columns after the group columns, in order: the statistics
    declared in ``query/stats.py`` (names, kinds, and what the engine computes for each).
    """

    sql: str
    params: tuple[Any, ...]
    group_columns: tuple[str, ...]
    stats: tuple[Statistic, ...]
    # declared key combinations, in release order; None when keys are not declared
    # (allow_undeclared_keys: groups come from the data via DP partition selection)
    declared_keys: tuple[tuple[Any, ...], ...] | None


@dataclass(frozen=True)
class ExactGroups:
    """Exact per-group statistics. Never leaves the process, never logged, never stored."""

    group_columns: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...]
    stats: dict[str, tuple[Any, ...]]  # stat name -> one value per key (same order as keys)

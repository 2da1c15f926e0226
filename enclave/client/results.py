"""What the client returns: frozen values parsed from the gateway's JSON.

Parsing is tolerant of fields a newer server adds (they stay in ``raw``) and strict about the
fields the API documents: a missing or mistyped one raises ``EnclaveError`` naming the
field, rather than a ``KeyError`` deep inside the caller's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enclave.errors import EnclaveError

PANDAS_HINT = (
    "QueryResult.to_pandas() needs pandas, which is not installed; "
    "install it with: pip install 'enclave-gateway[pandas]'"
)


@dataclass(frozen=True)
class Budget:
    """The budget left on the licence and dataset a query or estimate was charged to: what
    is left of the binding budget layer (licence, subject, organisation or dataset)."""

    epsilon_remaining: float
    delta_remaining: float
    renews: str | None  # RFC 3339 time of the next renewal; None: the budget never renews
    binding_layer: str | None = None  # None from a gateway without layered budgets

    @classmethod
    def from_json(cls, body: Any) -> Budget:
        data = _mapping(body, "budget")
        return cls(
            epsilon_remaining=_num(data, "epsilon_remaining"),
            delta_remaining=_num(data, "delta_remaining"),
            renews=_opt_str(data, "renews"),
            binding_layer=_opt_str(data, "binding_layer"),
        )


@dataclass(frozen=True)
class QueryResult:
    """A differentially private release (``POST /v1/queries``).

    ``accuracy[column]["ci95"]`` is the half-width of a 95% interval for the noise alone (not
    sampling error); it is ``None`` where the gateway cannot state one, and grouping columns
    have no entry. ``release_of`` names the original query when ``cached`` is true.
    """

    query_id: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    accuracy: Mapping[str, Mapping[str, float | None]]
    epsilon_spent: float
    delta_spent: float
    cached: bool
    suppressed_groups: int
    budget: Budget
    audit_seq: int
    release_of: str | None = None
    epsilon_source: str | None = None  # request, accuracy, tier_default (None: older server)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> QueryResult:
        data = _mapping(body, "answer")
        columns = tuple(str(c) for c in _list(data, "columns"))
        rows = tuple(tuple(_row(r)) for r in _list(data, "rows"))
        if any(len(r) != len(columns) for r in rows):
            raise EnclaveError("the gateway's answer has rows that do not match its columns")
        return cls(
            query_id=_string(data, "query_id"),
            dataset=_string(data, "dataset"),
            columns=columns,
            rows=rows,
            accuracy=_accuracy(data.get("accuracy")),
            epsilon_spent=_num(data, "epsilon_spent"),
            delta_spent=_num(data, "delta_spent"),
            cached=_bool(data, "cached"),
            suppressed_groups=_int(data, "suppressed_groups"),
            budget=Budget.from_json(data.get("budget")),
            audit_seq=_int(data, "audit_seq"),
            release_of=_opt_str(data, "release_of"),
            epsilon_source=_opt_str(data, "epsilon_source"),
            raw=dict(data),
        )

    def ci95(self, column: str) -> float | None:
        """The noise's 95% half-width for ``column``; None for grouping columns."""
        return (self.accuracy.get(column) or {}).get("ci95")

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row, keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` of the rows, with a ``<column>_ci95`` column after each
        column the gateway gave accuracy for (the noise's 95% half-width; NaN where it cannot
        be stated, e.g. quantiles); ``attrs`` carries the accuracy and the cost.

        pandas is an optional extra (``enclave-gateway[pandas]``), imported only here.
        """
        try:
            pd = importlib.import_module("pandas")
        except ImportError as exc:
            raise ImportError(PANDAS_HINT) from exc
        names: list[str] = []
        cells: list[list[Any]] = [[] for _ in self.rows]
        for i, column in enumerate(self.columns):
            names.append(column)
            for out, row in zip(cells, self.rows, strict=True):
                out.append(row[i])
            if column in self.accuracy and f"{column}_ci95" not in self.columns:
                names.append(f"{column}_ci95")
                ci = self.ci95(column)
                for out in cells:
                    out.append(float("nan") if ci is None else ci)
        frame = pd.DataFrame.from_records(cells, columns=names)
        frame.attrs.update(
            query_id=self.query_id,
            accuracy={k: dict(v) for k, v in self.accuracy.items()},
            epsilon_spent=self.epsilon_spent,
            delta_spent=self.delta_spent,
            cached=self.cached,
        )
        return frame


@dataclass(frozen=True)
class Estimate:
    """A dry run (``POST /v1/queries/estimate``): nothing touched, nothing spent.

    ``epsilon``/``delta`` are what running the query now would cost (0 when it would be a
    cached repeat); ``plan_epsilon``/``plan_delta`` are the plan's price regardless.
    ``epsilon_source`` says how the epsilon was set (``request``, ``accuracy``,
    ``tier_default``, ``batch_split``); for accuracy requests ``epsilon_chosen_for`` maps
    each target column to ``{"ci95": target, "achieved_ci95": ...}``.
    """

    dataset: str
    epsilon: float
    delta: float
    plan_epsilon: float
    plan_delta: float
    accuracy: Mapping[str, Mapping[str, float | None]]
    cached: bool
    within_budget: bool
    budget: Budget
    audit_seq: int
    epsilon_source: str | None = None
    epsilon_chosen_for: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any, dataset: str | None = None) -> Estimate:
        """``dataset`` fills in for a batch's items, which do not repeat it."""
        data = _mapping(body, "answer")
        if dataset is not None:
            data = {"dataset": dataset, **data}
        return cls(
            dataset=_string(data, "dataset"),
            epsilon=_num(data, "epsilon"),
            delta=_num(data, "delta"),
            plan_epsilon=_num(data, "plan_epsilon"),
            plan_delta=_num(data, "plan_delta"),
            accuracy=_accuracy(data.get("accuracy")),
            cached=_bool(data, "cached"),
            within_budget=_bool(data, "within_budget"),
            budget=Budget.from_json(data.get("budget")),
            audit_seq=_int(data, "audit_seq"),
            epsilon_source=_opt_str(data, "epsilon_source"),
            epsilon_chosen_for=_accuracy(data.get("epsilon_chosen_for")),
            raw=dict(data),
        )

    @property
    def share_of_remaining(self) -> float:
        """What running the query now would spend, as a share of the epsilon left (1.0 when
        nothing is left and it would spend something)."""
        left = self.budget.epsilon_remaining
        if self.epsilon <= 0:
            return 0.0
        return 1.0 if left <= 0 else self.epsilon / left


@dataclass(frozen=True)
class BatchEstimate:
    """Several queries priced together (``POST /v1/queries/estimate/batch``): nothing spent.

    ``queries`` are the per-query estimates (their ``budget`` is the batch's: the budget left
    before any of them); ``epsilon``/``delta`` the batch's total; ``within_budget`` whether
    the whole batch fits; ``split`` the even split of a ``total_epsilon``, if one was asked.
    """

    dataset: str
    queries: tuple[Estimate, ...]
    epsilon: float
    delta: float
    within_budget: bool
    budget: Budget
    audit_seq: int
    split: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> BatchEstimate:
        data = _mapping(body, "answer")
        dataset = _string(data, "dataset")
        shared = {"budget": data.get("budget"), "audit_seq": data.get("audit_seq")}
        items = tuple(
            Estimate.from_json({**_mapping(q, "queries"), **shared}, dataset)
            for q in _list(data, "queries")
        )
        split = data.get("split")
        return cls(
            dataset=dataset,
            queries=items,
            epsilon=_num(data, "epsilon"),
            delta=_num(data, "delta"),
            within_budget=_bool(data, "within_budget"),
            budget=Budget.from_json(data.get("budget")),
            audit_seq=_int(data, "audit_seq"),
            split=None if split is None else _mapping(split, "split"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class HistoryPage:
    """One page of the caller's own past queries, oldest first (``GET /v1/queries``)."""

    queries: tuple[Mapping[str, Any], ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Any) -> HistoryPage:
        data = _mapping(body, "answer")
        items = tuple(_mapping(q, "history entry") for q in _list(data, "queries"))
        return cls(queries=items, next_cursor=_opt_str(data, "next_cursor"))


def _bad(name: str) -> EnclaveError:
    return EnclaveError(f"the gateway's answer lacks a valid '{name}'")


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(name)
    return value


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    if not isinstance(value, list):
        raise _bad(name)
    return value


def _row(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _bad("rows")
    return value


def _num(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name)
    return float(value)


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name)
    return value


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if not isinstance(value, bool):
        raise _bad(name)
    return value


def _string(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise _bad(name)
    return value


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(name)
    return value


def _accuracy(value: Any) -> dict[str, dict[str, float | None]]:
    if value is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for column, entry in _mapping(value, "accuracy").items():
        stats = _mapping(entry, "accuracy")
        out[str(column)] = {
            str(k): (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None)
            for k, v in stats.items()
        }
    return out

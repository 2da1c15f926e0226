"""Tier and dataset definitions: validation, the JSON/YAML form, and loading a policy folder.

The same validators serve three callers: ``enclave policy check``, the first-start seed of the
registry, and the admin ``PUT /v1/admin/tiers|datasets/{name}`` endpoints. They never stop at
the first problem: every problem is collected as ``"<where>: <field>: <what>"`` and raised
together in one ``PolicyFileError``, so an admin fixes a file in one pass.

Decisions worth knowing:

- Files are read with ``yaml.safe_load`` only. PyYAML silently keeps the last of two equal
  keys, so the file is also composed (``yaml.compose``, safe, no object construction) to report
  duplicate keys with their line.
- Numbers: ``bool`` is never a number; NaN and infinities are refused, also as text. PyYAML
  reads ``1e-6`` (no dot) as a *string*, so epsilon/delta/float bounds also accept text that is
  a plain decimal or scientific number; anything else is a wrong type. Epsilon and delta become
  ``Decimal`` via ``repr(float)`` so ``0.1`` stays exactly ``0.1`` in the ledger.
- A dataset ``source`` is resolved against the dataset file's folder with symlinks followed,
  and must then lie inside ``data_dir``: ``..`` escapes, absolute paths elsewhere, symlinks out
  and URLs are refused. Wildcards are refused: a source names one file.
- ``version`` is accepted and ignored on input (the store assigns it); tiers carry an extra
  ``level`` (default 0) that orders them for a dataset's single ``min_tier``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import yaml

from enclave.errors import PolicyFileError
from enclave.models import AGG_KINDS, COLUMN_TYPES, ColumnSpec, ColumnType, DatasetSpec, Tier

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
JURISDICTION_RE = re.compile(r"[A-Z]{2}")
_NUMBER_TEXT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

TIER_FIELDS = frozenset(
    {"name", "description", "aggregates", "max_epsilon_per_query", "budget", "min_noisy_count",
     "group_by", "filters", "rate_limit_per_minute", "allowed_jurisdictions", "level", "version"}
)  # fmt: skip
BUDGET_FIELDS = frozenset({"epsilon", "delta", "period_days"})
GROUP_BY_FIELDS = frozenset({"max_columns", "max_groups", "allow_undeclared_keys"})
DATASET_FIELDS = frozenset(
    {"name", "description", "source", "privacy_unit", "max_rows_per_unit", "min_tier",
     "allowed_jurisdictions", "columns", "version"}
)  # fmt: skip
COLUMN_FIELDS = frozenset({"type", "bounds", "values"})
_MISSING = object()


class _Problems:
    """Collects problems under one ``where`` prefix."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, field: str, what: str) -> None:
        self.items.append(f"{self.where}: {field}: {what}" if self.where else f"{field}: {what}")

    def raise_if_any(self) -> None:
        if self.items:
            raise PolicyFileError(self.items)


def _mapping(p: _Problems, value: Any, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    """Return ``value`` as a mapping with only ``allowed`` keys (others are reported)."""
    if not isinstance(value, dict):
        p.add(field or "(top level)", "must be a mapping")
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{field}.{key}" if field else str(key)
        if not isinstance(key, str) or key not in allowed:
            p.add(name, "unknown field")
        else:
            out[key] = item
    return out


def _decimal(p: _Problems, value: Any, field: str, what: str) -> Decimal | None:
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value)) if math.isfinite(value) else None
    elif isinstance(value, str) and _NUMBER_TEXT_RE.fullmatch(value.strip()):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = None
    else:
        number = None
    if number is None or not math.isfinite(float(number)):
        p.add(field, what)
        return None
    return number


def _int(p: _Problems, value: Any, field: str, minimum: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        p.add(field, f"must be an integer >= {minimum}")
        return None
    return value


def _bool(p: _Problems, value: Any, field: str) -> bool | None:
    if not isinstance(value, bool):
        p.add(field, "must be true or false")
        return None
    return value


def _text(p: _Problems, value: Any, field: str) -> str | None:
    if not isinstance(value, str):
        p.add(field, "must be text")
        return None
    return value


def _name(p: _Problems, value: Any, field: str) -> str | None:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        p.add(field, "must match [a-z][a-z0-9_]{0,62}")
        return None
    return value


def _jurisdictions(p: _Problems, value: Any, field: str) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        p.add(field, "must be a list of 2-letter upper-case country codes")
        return None
    ok = True
    for i, code in enumerate(value):
        if not isinstance(code, str) or not JURISDICTION_RE.fullmatch(code):
            p.add(f"{field}[{i}]", "must be a 2-letter upper-case country code")
            ok = False
    if ok and len(set(value)) != len(value):
        p.add(field, "lists a code twice")
        ok = False
    return tuple(value) if ok else None


# --- tiers ----------------------------------------------------------------------------------


def tier_from_dict(data: dict[str, Any], where: str = "") -> Tier:
    """Validate a tier body (YAML file or admin JSON) and build the ``Tier`` (version 1)."""
    p = _Problems(where)
    d = _mapping(p, data, "", TIER_FIELDS)
    for required in ("name", "aggregates", "max_epsilon_per_query", "budget"):
        if required not in d and isinstance(data, dict):
            p.add(required, "required")
    name = _name(p, d["name"], "name") if "name" in d else None
    description = _text(p, d.get("description", ""), "description")

    aggregates: frozenset[str] | None = None
    if "aggregates" in d:
        aggs = d["aggregates"]
        if not isinstance(aggs, list) or not aggs:
            p.add("aggregates", f"must be a non-empty list of: {', '.join(AGG_KINDS)}")
        elif bad := [a for a in aggs if not isinstance(a, str) or a not in AGG_KINDS]:
            p.add("aggregates", f"unknown kind {bad[0]!r}; allowed: {', '.join(AGG_KINDS)}")
        elif len(set(aggs)) != len(aggs):
            p.add("aggregates", "lists a kind twice")
        else:
            aggregates = frozenset(aggs)

    positive = "must be a finite positive number"
    max_eps = None
    if "max_epsilon_per_query" in d:
        max_eps = _decimal(p, d["max_epsilon_per_query"], "max_epsilon_per_query", positive)
        if max_eps is not None and max_eps <= 0:
            p.add("max_epsilon_per_query", positive)
            max_eps = None

    budget = _mapping(p, d.get("budget", {}), "budget", BUDGET_FIELDS)
    eps = delta = None
    if "epsilon" in budget:
        eps = _decimal(p, budget["epsilon"], "budget.epsilon", positive)
        if eps is not None and eps <= 0:
            p.add("budget.epsilon", positive)
            eps = None
    elif "budget" in d:
        p.add("budget.epsilon", "required")
    delta_what = "must be a finite number in [0, 1)"
    delta = _decimal(p, budget.get("delta", 0), "budget.delta", delta_what)
    if delta is not None and not Decimal(0) <= delta < 1:
        p.add("budget.delta", delta_what)
        delta = None
    period = budget.get("period_days")
    period_days = None if period is None else _int(p, period, "budget.period_days", 1)
    if max_eps is not None and eps is not None and max_eps > eps:
        p.add("max_epsilon_per_query", "must not exceed budget.epsilon")

    group_by = _mapping(p, d.get("group_by", {}), "group_by", GROUP_BY_FIELDS)
    max_columns = _int(p, group_by.get("max_columns", 2), "group_by.max_columns", 0)
    max_groups = _int(p, group_by.get("max_groups", 500), "group_by.max_groups", 1)
    undeclared = _bool(
        p, group_by.get("allow_undeclared_keys", False), "group_by.allow_undeclared_keys"
    )
    if undeclared and delta == 0:
        p.add(
            "group_by.allow_undeclared_keys",
            "needs budget.delta > 0 (partition selection spends delta)",
        )
    min_noisy = _int(p, d.get("min_noisy_count", 0), "min_noisy_count", 0)
    filters = _bool(p, d.get("filters", True), "filters")
    rate = _int(p, d.get("rate_limit_per_minute", 60), "rate_limit_per_minute", 1)
    juris = _jurisdictions(p, d.get("allowed_jurisdictions") or [], "allowed_jurisdictions")
    level = _int(p, d.get("level", 0), "level", 0)

    p.raise_if_any()
    assert name is not None and description is not None and aggregates is not None  # noqa: S101
    assert max_eps is not None and eps is not None and delta is not None  # noqa: S101
    assert max_columns is not None and max_groups is not None and undeclared is not None  # noqa: S101
    assert min_noisy is not None and filters is not None and rate is not None  # noqa: S101
    assert juris is not None and level is not None  # noqa: S101
    return Tier(
        name=name,
        description=description,
        aggregates=aggregates,
        max_epsilon_per_query=max_eps,
        budget_epsilon=eps,
        budget_delta=delta,
        period_days=period_days,
        min_noisy_count=min_noisy,
        group_by_max_columns=max_columns,
        group_by_max_groups=max_groups,
        allow_undeclared_keys=undeclared,
        filters=filters,
        rate_limit_per_minute=rate,
        allowed_jurisdictions=juris,
        level=level,
    )


def tier_to_dict(tier: Tier) -> dict[str, Any]:
    """The JSON/YAML form (what admins GET and PUT); ``tier_from_dict`` reads it back."""
    return tier.to_json()


# --- datasets -------------------------------------------------------------------------------


def dataset_from_dict(
    data: dict[str, Any],
    *,
    base_dir: Path,
    data_dir: Path,
    where: str = "",
    require_source: bool = True,
) -> DatasetSpec:
    """Validate a dataset body and build the ``DatasetSpec`` (version 1).

    ``base_dir`` is the folder a relative ``source`` is resolved against (the dataset file's
    folder); ``require_source=False`` lets a missing data file pass (not one outside data_dir).
    """
    p = _Problems(where)
    d = _mapping(p, data, "", DATASET_FIELDS)
    for required in ("name", "source", "privacy_unit", "max_rows_per_unit", "min_tier",
                     "columns"):  # fmt: skip
        if required not in d and isinstance(data, dict):
            p.add(required, "required")
    name = _name(p, d["name"], "name") if "name" in d else None
    description = _text(p, d.get("description", ""), "description")
    max_rows = (
        _int(p, d["max_rows_per_unit"], "max_rows_per_unit", 1) if "max_rows_per_unit" in d else 1
    )

    min_tier: tuple[str, ...] | None = None
    if "min_tier" in d:
        raw = d["min_tier"]
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names:
            p.add("min_tier", "must be a tier name or a non-empty list of tier names")
        else:
            checked = [_name(p, n, f"min_tier[{i}]") for i, n in enumerate(names)]
            if len(set(names)) != len(names):
                p.add("min_tier", "lists a tier twice")
            elif all(c is not None for c in checked):
                min_tier = tuple(names)

    juris: tuple[str, ...] | None = None
    if d.get("allowed_jurisdictions") is not None:
        juris = _jurisdictions(p, d["allowed_jurisdictions"], "allowed_jurisdictions")
        if juris == ():
            p.add("allowed_jurisdictions", "must list at least one code, or be omitted")

    columns = _columns(p, d.get("columns", {}) if "columns" in d else {})
    unit = d.get("privacy_unit")
    if "privacy_unit" in d:
        declared = {c.name: c for c in columns}
        if not isinstance(unit, str):
            p.add("privacy_unit", "must be text")
        elif unit not in declared:
            p.add("privacy_unit", "must name a declared column")
        elif declared[unit].type != "identifier":
            p.add("privacy_unit", "must be a column of type identifier")
    identifiers = [c.name for c in columns if c.type == "identifier"]
    if len(identifiers) > 1:
        p.add("columns", "declares more than one identifier column; declare only the privacy unit")

    source = d.get("source")
    resolved: tuple[str, str | None] | None = None
    if "source" in d:
        resolved = _source(p, source, base_dir, data_dir, require_source)

    p.raise_if_any()
    assert name is not None and description is not None and max_rows is not None  # noqa: S101
    assert min_tier is not None and resolved is not None  # noqa: S101
    assert isinstance(source, str) and isinstance(unit, str)  # noqa: S101
    return DatasetSpec(
        name=name,
        description=description,
        source=source,
        source_path=resolved[0],
        privacy_unit=unit,
        max_rows_per_unit=max_rows,
        min_tier=min_tier,
        allowed_jurisdictions=juris,
        columns=tuple(columns),
        source_table=resolved[1],
    )


def _columns(p: _Problems, value: Any) -> list[ColumnSpec]:
    if not isinstance(value, dict) or not value:
        p.add("columns", "must be a non-empty mapping of column name to definition")
        return []
    out: list[ColumnSpec] = []
    seen: set[str] = set()
    for name, body in value.items():
        field = f"columns.{name}"
        if not isinstance(name, str) or not COLUMN_RE.fullmatch(name):
            p.add(field, "column name must match [A-Za-z_][A-Za-z0-9_]{0,62}")
            continue
        if name.lower() in seen:
            p.add(field, "declared twice (names are case-insensitive)")
            continue
        seen.add(name.lower())
        col = _column(p, name, _mapping(p, body, field, COLUMN_FIELDS), field)
        if col is not None:
            out.append(col)
    return out


def _column(p: _Problems, name: str, d: dict[str, Any], field: str) -> ColumnSpec | None:
    kind = d.get("type")
    if kind not in COLUMN_TYPES:
        p.add(f"{field}.type", f"must be one of: {', '.join(COLUMN_TYPES)}")
        return None
    before = len(p.items)
    bounds = values = None
    if kind in ("int", "float", "date"):
        if "bounds" not in d:
            p.add(f"{field}.bounds", f"required for {kind} columns")
        else:
            bounds = _bounds(p, d["bounds"], kind, f"{field}.bounds")
    elif "bounds" in d:
        p.add(f"{field}.bounds", f"not allowed for {kind} columns")
    if kind == "category":
        values = _values(p, d.get("values"), f"{field}.values")
    elif "values" in d:
        p.add(f"{field}.values", "only category columns declare values")
    if len(p.items) > before:
        return None
    return ColumnSpec(name=name, type=cast(ColumnType, kind), bounds=bounds, values=values)


def _bounds(p: _Problems, value: Any, kind: str, field: str) -> tuple[Any, Any] | None:
    if not isinstance(value, list) or len(value) != 2:
        p.add(field, "must be a list [low, high]")
        return None
    parsed: list[Any] = []
    for i, item in enumerate(value):
        if kind == "int":
            if isinstance(item, bool) or not isinstance(item, int):
                p.add(f"{field}[{i}]", "must be an integer")
                return None
            parsed.append(item)
        elif kind == "float":
            number = _decimal(p, item, f"{field}[{i}]", "must be a finite number")
            if number is None:
                return None
            parsed.append(float(number))
        else:
            day = _date(item)
            if day is None:
                p.add(f"{field}[{i}]", "must be a date YYYY-MM-DD")
                return None
            parsed.append(day)
    if not parsed[0] < parsed[1]:
        p.add(field, "low must be less than high")
        return None
    return (parsed[0], parsed[1])


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _values(p: _Problems, value: Any, field: str) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value:
        p.add(field, "category columns must declare a non-empty list of values")
        return None
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            p.add(f"{field}[{i}]", "must be non-empty text (quote yes/no/on/off/numbers in YAML)")
            return None
    if len(set(value)) != len(value):
        p.add(field, "lists a value twice")
        return None
    return tuple(value)


def _source(
    p: _Problems, value: Any, base_dir: Path, data_dir: Path, require: bool
) -> tuple[str, str | None] | None:
    """Resolve a source to (absolute path inside data_dir, duckdb table or None)."""
    what = "must be a .parquet or .csv file, or duckdb://file.duckdb#table"
    if not isinstance(value, str) or not value.strip():
        p.add("source", what)
        return None
    table: str | None = None
    text = value
    if value.startswith("duckdb://"):
        text, _, table = value[len("duckdb://") :].partition("#")
        if not COLUMN_RE.fullmatch(table):
            p.add("source", "duckdb:// sources must end with #table (a plain table name)")
            return None
        if not text.endswith(".duckdb"):
            p.add("source", what)
            return None
    elif _SCHEME_RE.match(value):
        p.add("source", "URLs are not allowed; name a file inside the data folder")
        return None
    elif not value.lower().endswith((".parquet", ".csv")):
        p.add("source", what)
        return None
    if any(ch in text for ch in "*?[{\x00"):
        p.add("source", "must name one file (no wildcards)")
        return None
    try:
        path = (base_dir / text).resolve()
        root = data_dir.resolve()
    except (OSError, RuntimeError, ValueError):
        p.add("source", "cannot be resolved")
        return None
    if not path.is_relative_to(root) or path == root:
        p.add("source", "must lie inside the data folder (after resolving .. and symlinks)")
        return None
    if require and not path.is_file():
        p.add("source", "file not found in the data folder")
        return None
    return str(path), table


def dataset_to_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The JSON/YAML form (as the contract's YAML, dates as ISO text); round-trips."""
    return spec.to_json()


# --- a policy folder ------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySet:
    tiers: dict[str, Tier] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def load_policy_dir(
    policies_dir: Path, data_dir: Path, *, require_source: bool = True
) -> PolicySet:
    """Read ``tiers/*.yaml`` and ``datasets/*.yaml``; collect every problem, never raise."""
    out = PolicySet()
    tier_files: set[str] = set()
    for kind in ("tiers", "datasets"):
        folder = policies_dir / kind
        if not folder.is_dir():
            out.problems.append(f"{kind}/: folder not found under {policies_dir}")
            continue
        for stray in sorted(folder.glob("*.yml")):
            out.problems.append(f"{kind}/{stray.name}: ignored: policy files end in .yaml")
        for path in sorted(folder.glob("*.yaml")):
            where = f"{kind}/{path.name}"
            if kind == "tiers":
                tier_files.add(path.stem)
            data = _read_yaml(path, where, out.problems)
            if data is None:
                continue
            if isinstance(data, dict) and data.get("name") != path.stem:
                out.problems.append(f"{where}: name: must equal the file name ({path.stem!r})")
                continue
            try:
                if kind == "tiers":
                    out.tiers[path.stem] = tier_from_dict(data, where)
                else:
                    out.datasets[path.stem] = dataset_from_dict(
                        data, base_dir=folder, data_dir=data_dir, where=where,
                        require_source=require_source,
                    )  # fmt: skip
            except PolicyFileError as exc:
                out.problems.extend(exc.problems)
    for name, spec in out.datasets.items():
        for tier in spec.min_tier:
            if tier not in tier_files:
                out.problems.append(f"datasets/{name}.yaml: min_tier: unknown tier {tier!r}")
    return out


def _read_yaml(path: Path, where: str, problems: list[str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{where}: cannot read ({type(exc).__name__})")
        return None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problems.append(f"{where}: {line}invalid YAML ({getattr(exc, 'problem', None) or exc})")
        return None
    dupes = _duplicate_keys(node)
    problems.extend(f"{where}: line {line}: duplicate key {key!r}" for line, key in dupes)
    if dupes:
        return None
    if not isinstance(data, dict):
        problems.append(f"{where}: must be a YAML mapping")
        return None
    return data


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    stack, seen_nodes = [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in keys:
                    found.append((key_node.start_mark.line + 1, key))
                keys.add(key)
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return sorted(found)

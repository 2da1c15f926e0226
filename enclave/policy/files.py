"""Tier and dataset definitions: validation, the JSON/YAML form, and loading a policy folder.

The same validators serve four callers: ``enclave policy check``, the first-start seed of the
registry, the admin ``PUT /v1/admin/tiers|datasets/{name}`` endpoints and ``enclave policy
export`` (whose files must pass them again). They never stop at the first problem: every
problem is collected as ``"<where>: <field>: <what>"`` and raised together in one
``PolicyFileError``, so an admin fixes a file in one pass. The per-field readers (numbers,
bounds, columns, source confinement) live in ``fields.py``; their rules are documented there.

Decisions worth knowing:

- Files are read with ``yaml.safe_load`` only. PyYAML silently keeps the last of two equal
  keys, so the file is also composed (``yaml.compose``, safe, no object construction) to report
  duplicate keys with their line.
- ``version`` is accepted and ignored on input (the store assigns it); tiers carry an extra
  ``level`` (default 0) that orders them for a dataset's single ``min_tier``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from enclave.errors import PolicyFileError
from enclave.ledger.budget import MAX_PERIOD_DAYS
from enclave.ledger.grid import DEFAULT_MIN_EPSILON
from enclave.models import AGG_KINDS, DatasetSpec, Tier
from enclave.policy.fields import (
    Problems,
    check_sensitivity,
    read_bool,
    read_columns,
    read_delta,
    read_epsilon,
    read_int,
    read_jurisdictions,
    read_mapping,
    read_name,
    read_source,
    read_text,
)

TIER_FIELDS = frozenset(
    {"name", "description", "aggregates", "max_epsilon_per_query", "min_epsilon_per_query",
     "budget", "min_noisy_count",
     "group_by", "filters", "rate_limit_per_minute", "allowed_jurisdictions", "level", "version",
     "synthetic"}
)  # fmt: skip
BUDGET_FIELDS = frozenset({"epsilon", "delta", "period_days"})
GROUP_BY_FIELDS = frozenset({"max_columns", "max_groups", "allow_undeclared_keys"})
SYNTHETIC_FIELDS = frozenset({"allowed", "max_epsilon"})
DATASET_FIELDS = frozenset(
    {"name", "description", "source", "privacy_unit", "max_rows_per_unit", "min_tier",
     "allowed_jurisdictions", "columns", "version", "retired"}
)  # fmt: skip

# --- tiers ----------------------------------------------------------------------------------


def tier_from_dict(data: dict[str, Any], where: str = "") -> Tier:
    """Validate a tier body (YAML file or admin JSON) and build the ``Tier`` (version 1)."""
    p = Problems(where)
    d = read_mapping(p, data, "", TIER_FIELDS)
    for required in ("name", "aggregates", "max_epsilon_per_query", "budget"):
        if required not in d and isinstance(data, dict):
            p.add(required, "required")
    name = read_name(p, d["name"], "name") if "name" in d else None
    description = read_text(p, d.get("description", ""), "description")

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

    max_eps = None
    if "max_epsilon_per_query" in d:
        max_eps = read_epsilon(p, d["max_epsilon_per_query"], "max_epsilon_per_query")
    min_eps = None
    if "min_epsilon_per_query" in d:
        min_eps = read_epsilon(p, d["min_epsilon_per_query"], "min_epsilon_per_query")
    elif max_eps is not None:
        min_eps = min(DEFAULT_MIN_EPSILON, max_eps)
    if min_eps is not None and max_eps is not None and min_eps > max_eps:
        p.add("min_epsilon_per_query", "must not exceed max_epsilon_per_query")

    budget = read_mapping(p, d.get("budget", {}), "budget", BUDGET_FIELDS)
    eps = None
    if "epsilon" in budget:
        eps = read_epsilon(p, budget["epsilon"], "budget.epsilon")
    elif "budget" in d:
        p.add("budget.epsilon", "required")
    delta = read_delta(p, budget.get("delta", 0), "budget.delta")
    period = budget.get("period_days")
    period_days = (
        None if period is None else read_int(p, period, "budget.period_days", 1, MAX_PERIOD_DAYS)
    )
    if max_eps is not None and eps is not None and max_eps > eps:
        p.add("max_epsilon_per_query", "must not exceed budget.epsilon")

    group_by = read_mapping(p, d.get("group_by", {}), "group_by", GROUP_BY_FIELDS)
    max_columns = read_int(p, group_by.get("max_columns", 2), "group_by.max_columns", 0)
    max_groups = read_int(p, group_by.get("max_groups", 500), "group_by.max_groups", 1)
    undeclared = read_bool(
        p, group_by.get("allow_undeclared_keys", False), "group_by.allow_undeclared_keys"
    )
    if undeclared and delta == 0:
        p.add(
            "group_by.allow_undeclared_keys",
            "needs budget.delta > 0 (partition selection spends delta)",
        )
    min_noisy = read_int(p, d.get("min_noisy_count", 0), "min_noisy_count", 0)
    filters = read_bool(p, d.get("filters", True), "filters")
    rate = read_int(p, d.get("rate_limit_per_minute", 60), "rate_limit_per_minute", 1)
    raw_juris = d.get("allowed_jurisdictions")
    juris = read_jurisdictions(p, [] if raw_juris is None else raw_juris, "allowed_jurisdictions")
    level = read_int(p, d.get("level", 0), "level", 0)
    synthetic = _synthetic(p, d.get("synthetic", {}))

    p.raise_if_any()
    assert name is not None and description is not None and aggregates is not None  # noqa: S101
    assert max_eps is not None and eps is not None and delta is not None  # noqa: S101
    assert min_eps is not None  # noqa: S101
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
        min_epsilon_per_query=min_eps,
        min_noisy_count=min_noisy,
        group_by_max_columns=max_columns,
        group_by_max_groups=max_groups,
        allow_undeclared_keys=undeclared,
        filters=filters,
        rate_limit_per_minute=rate,
        allowed_jurisdictions=juris,
        level=level,
        synthetic_allowed=synthetic[0],
        synthetic_max_epsilon=synthetic[1],
    )


def _synthetic(p: Problems, value: Any) -> tuple[bool, Decimal]:
    """``synthetic: {allowed, max_epsilon}`` (docs/synthetic.md): off unless allowed, and
    then capped by ``max_epsilon`` (required; the budget still limits what is spent)."""
    d = read_mapping(p, value, "synthetic", SYNTHETIC_FIELDS)
    allowed = read_bool(p, d.get("allowed", False), "synthetic.allowed")
    cap = None
    if "max_epsilon" in d:
        cap = read_epsilon(p, d["max_epsilon"], "synthetic.max_epsilon")
    elif allowed:
        p.add("synthetic.max_epsilon", "required when synthetic.allowed is true")
    return bool(allowed), cap if cap is not None else Decimal(0)


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
    forbidden: Sequence[Path] = (),
) -> DatasetSpec:
    """Validate a dataset body and build the ``DatasetSpec`` (version 1).

    ``base_dir`` is the folder a relative ``source`` is resolved against (the dataset file's
    folder); ``require_source=False`` lets a missing data file pass (not one outside data_dir);
    ``forbidden`` lists paths a source may never name, even inside data_dir (the state store).
    """
    p = Problems(where)
    d = read_mapping(p, data, "", DATASET_FIELDS)
    for required in ("name", "source", "privacy_unit", "max_rows_per_unit", "min_tier",
                     "columns"):  # fmt: skip
        if required not in d and isinstance(data, dict):
            p.add(required, "required")
    name = read_name(p, d["name"], "name") if "name" in d else None
    description = read_text(p, d.get("description", ""), "description")
    max_rows = (
        read_int(p, d["max_rows_per_unit"], "max_rows_per_unit", 1)
        if "max_rows_per_unit" in d
        else 1
    )

    min_tier: tuple[str, ...] | None = None
    if "min_tier" in d:
        raw = d["min_tier"]
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names:
            p.add("min_tier", "must be a tier name or a non-empty list of tier names")
        else:
            checked = [read_name(p, n, f"min_tier[{i}]") for i, n in enumerate(names)]
            if any(c is None for c in checked):
                pass  # each bad entry is listed above (and may not even be hashable)
            elif len(set(names)) != len(names):
                p.add("min_tier", "lists a tier twice")
            else:
                min_tier = tuple(names)

    juris: tuple[str, ...] | None = None
    if d.get("allowed_jurisdictions") is not None:
        juris = read_jurisdictions(p, d["allowed_jurisdictions"], "allowed_jurisdictions")
        if juris == ():
            p.add("allowed_jurisdictions", "must list at least one code, or be omitted")

    columns = read_columns(p, d.get("columns", {}) if "columns" in d else {})
    if max_rows is not None:
        check_sensitivity(p, columns, max_rows)
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

    retired = d.get("retired", False)
    if not isinstance(retired, bool):
        p.add("retired", "must be true or false")
    source = d.get("source")
    resolved: tuple[str, str | None] | None = None
    if "source" in d:
        resolved = read_source(p, source, base_dir, data_dir, require_source, forbidden)

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
        retired=retired is True,
    )


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
    policies_dir: Path,
    data_dir: Path,
    *,
    require_source: bool = True,
    forbidden: Sequence[Path] = (),
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
                        require_source=require_source, forbidden=forbidden,
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

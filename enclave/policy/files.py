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
  duplicate keys with their line. Anchors and aliases are refused (a few lines of them can
  stand for billions of values), and a value PyYAML cannot construct (``2026-13-45``, an
  integer of thousands of digits) or nesting past the interpreter's depth is a problem, never a
  crash.
- ``version`` is accepted and ignored on input (the store assigns it); tiers carry an extra
  ``level`` (default 0) that orders them for a dataset's single ``min_tier``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from enclave.errors import PolicyFileError
from enclave.ledger.budget import MAX_PERIOD_DAYS
from enclave.ledger.grid import DEFAULT_EPSILON, DEFAULT_MIN_EPSILON, Amount
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

DATASET_FIELDS = frozenset(
    {"name", "description", "source", "privacy_unit", "max_rows_per_unit", "min_tier",
     "allowed_jurisdictions", "columns", "version", "retired", "frozen", "total_budget"}
)  # fmt: skip

# --- tiers ----------------------------------------------------------------------------------


REQUIRED: Any = object()  # a TierField default: the key must be given
Reader = Callable[[Problems, Any, str], Any]


@dataclass(frozen=True)
class TierField:
    """One key of a tier body: where it sits, the ``Tier`` attribute it fills, how it is read.

    ``default``: the value used when the key is absent (read like a given one), ``REQUIRED``
    when it must be given, or ``None`` for an optional key without a value (``nullable`` keys
    also take an explicit null as absent).
    """

    key: str  # dotted path in the body: "budget.epsilon" sits in the "budget" mapping
    attr: str
    read: Reader
    default: Any = REQUIRED
    nullable: bool = False


def _int(minimum: int, maximum: int | None = None) -> Reader:
    return lambda p, value, field: read_int(p, value, field, minimum, maximum)


def read_aggregates(p: Problems, value: Any, field: str) -> frozenset[str] | None:
    allowed = ", ".join(AGG_KINDS)
    if not isinstance(value, list) or not value:
        p.add(field, f"must be a non-empty list of: {allowed}")
    elif bad := [a for a in value if not isinstance(a, str) or a not in AGG_KINDS]:
        p.add(field, f"unknown kind {bad[0]!r}; allowed: {allowed}")
    elif len(set(value)) != len(value):
        p.add(field, "lists a kind twice")
    else:
        return frozenset(value)
    return None


#: Every tier key, in the order problems are reported. A new tier setting is one row here, one
#: ``Tier`` attribute (with its ``to_json``) and, if it relates to others, a line in
#: ``_tier_rules``.
TIER_TABLE: tuple[TierField, ...] = (
    TierField("name", "name", read_name),
    TierField("description", "description", read_text, ""),
    TierField("aggregates", "aggregates", read_aggregates),
    TierField("max_epsilon_per_query", "max_epsilon_per_query", read_epsilon),
    TierField("min_epsilon_per_query", "min_epsilon_per_query", read_epsilon, None),
    TierField("default_epsilon", "default_epsilon", read_epsilon, None),
    TierField("budget.epsilon", "budget_epsilon", read_epsilon),
    TierField("budget.delta", "budget_delta", read_delta, 0),
    TierField("budget.period_days", "period_days", _int(1, MAX_PERIOD_DAYS), None, True),
    TierField("group_by.max_columns", "group_by_max_columns", _int(0), 2),
    TierField("group_by.max_groups", "group_by_max_groups", _int(1), 500),
    TierField("group_by.allow_undeclared_keys", "allow_undeclared_keys", read_bool, False),
    TierField("min_noisy_count", "min_noisy_count", _int(0), 0),
    TierField("filters", "filters", read_bool, True),
    TierField("rate_limit_per_minute", "rate_limit_per_minute", _int(1), 60),
    TierField("allowed_jurisdictions", "allowed_jurisdictions", read_jurisdictions, [], True),
    TierField("level", "level", _int(0), 0),
    TierField("synthetic.allowed", "synthetic_allowed", read_bool, False),
    TierField("synthetic.max_epsilon", "synthetic_max_epsilon", read_epsilon, None, True),
    TierField("organisation_budget.epsilon", "organisation_budget_epsilon", read_epsilon, None),
    TierField("organisation_budget.delta", "organisation_budget_delta", read_delta, None, True),
)
TIER_IGNORED = frozenset({"version"})  # accepted on input, assigned by the store


def tier_from_dict(data: dict[str, Any], where: str = "") -> Tier:
    """Validate a tier body (YAML file or admin JSON) and build the ``Tier`` (version 1)."""
    p = Problems(where)
    is_mapping = isinstance(data, dict)
    names = {f.key.partition(".")[0] for f in TIER_TABLE}
    top = read_mapping(p, data, "", frozenset(names | TIER_IGNORED))
    sections: dict[str, dict[str, Any] | None] = {"": top}
    for name in sorted({f.key.rpartition(".")[0] for f in TIER_TABLE} - {""}):
        inner = [f for f in TIER_TABLE if f.key.startswith(name + ".")]
        required = any(f.default is REQUIRED for f in inner)
        if name in top:
            keys = frozenset(f.key.rpartition(".")[2] for f in inner)
            sections[name] = read_mapping(p, top[name], name, keys)
        elif required and is_mapping:
            p.add(name, "required")
            sections[name] = None  # its fields are not asked for again
        else:
            sections[name] = {}
    values: dict[str, Any] = {}
    for fld in TIER_TABLE:
        section, _, key = fld.key.rpartition(".")
        values[fld.attr] = _read_field(p, fld, sections[section], key, is_mapping)
    _tier_rules(p, values)
    p.raise_if_any()
    return Tier(**values)


def _read_field(
    p: Problems, fld: TierField, container: dict[str, Any] | None, key: str, report: bool
) -> Any:
    if container is None:
        return None
    if key in container and not (fld.nullable and container[key] is None):
        return fld.read(p, container[key], fld.key)
    if fld.default is REQUIRED:
        if report:
            p.add(fld.key, "required")
        return None
    return None if fld.default is None else fld.read(p, fld.default, fld.key)


def _tier_rules(p: Problems, v: dict[str, Any]) -> None:
    """Rules between tier fields (each field's own range is checked by its reader)."""
    max_eps, budget_eps = v["max_epsilon_per_query"], v["budget_epsilon"]
    if v["min_epsilon_per_query"] is None and max_eps is not None:
        v["min_epsilon_per_query"] = min(DEFAULT_MIN_EPSILON, max_eps)
    min_eps = v["min_epsilon_per_query"]
    if min_eps is not None and max_eps is not None and min_eps > max_eps:
        p.add("min_epsilon_per_query", "must not exceed max_epsilon_per_query")
    if v["default_epsilon"] is None and min_eps is not None and max_eps is not None:
        v["default_epsilon"] = min(max(DEFAULT_EPSILON, min_eps), max_eps)
    default = v["default_epsilon"]
    if default is not None and min_eps is not None and max_eps is not None:
        if not min_eps <= default <= max_eps:
            p.add(
                "default_epsilon",
                f"must lie within [min_epsilon_per_query, max_epsilon_per_query] "
                f"= [{min_eps}, {max_eps}]",
            )
    if max_eps is not None and budget_eps is not None and max_eps > budget_eps:
        p.add("max_epsilon_per_query", "must not exceed budget.epsilon")
    if v["organisation_budget_delta"] is not None and v["organisation_budget_epsilon"] is None:
        p.add("organisation_budget.epsilon", "required when organisation_budget is given")
    if v["allow_undeclared_keys"] and v["budget_delta"] == 0:
        p.add(
            "group_by.allow_undeclared_keys",
            "needs budget.delta > 0 (partition selection spends delta)",
        )
    # DP synthetic data (docs/synthetic.md): off unless allowed, and then capped
    if v["synthetic_max_epsilon"] is None:
        if v["synthetic_allowed"]:
            p.add("synthetic.max_epsilon", "required when synthetic.allowed is true")
        v["synthetic_max_epsilon"] = Decimal(0)


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
    frozen = d.get("frozen")  # the freeze's reason (incident control, ``docs/governance.md``)
    if frozen is not None and (read_text(p, frozen, "frozen") is None or not frozen.strip()):
        p.add("frozen", "must be the freeze's reason (non-empty text), or absent")
    total = read_total_budget(p, d["total_budget"]) if d.get("total_budget") is not None else None
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
        frozen=frozen if isinstance(frozen, str) else None,
        total_budget=total,
    )


def read_total_budget(p: Problems, value: Any) -> Amount | None:
    """A dataset's ``total_budget: {epsilon, delta}`` (epsilon required, delta default 0),
    on the ledger's grid like every budget."""
    body = read_mapping(p, value, "total_budget", frozenset({"epsilon", "delta"}))
    if "epsilon" not in body:
        if isinstance(value, dict):
            p.add("total_budget.epsilon", "required")
        return None
    epsilon = read_epsilon(p, body["epsilon"], "total_budget.epsilon")
    delta = read_delta(p, body.get("delta", 0), "total_budget.delta")
    if epsilon is None or delta is None:
        return None
    return Amount.limit(epsilon, delta)


def dataset_to_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The JSON/YAML form (the policy files' YAML layout, dates as ISO text); round-trips."""
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


NO_ALIASES = "anchors and aliases are not allowed (write each value out)"


def _read_yaml(path: Path, where: str, problems: list[str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{where}: cannot read ({type(exc).__name__})")
        return None
    try:
        aliases = [
            event.start_mark.line + 1 if event.start_mark is not None else 0
            for event in yaml.parse(text, Loader=yaml.SafeLoader)
            if isinstance(event, yaml.AliasEvent)
        ]
        problems.extend(f"{where}: line {line}: {NO_ALIASES}" for line in sorted(set(aliases)))
        if aliases:
            return None
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problems.append(f"{where}: {line}invalid YAML ({getattr(exc, 'problem', None) or exc})")
        return None
    except RecursionError:
        problems.append(f"{where}: nests lists or mappings too deeply")
        return None
    except (ValueError, OverflowError) as exc:  # PyYAML's date and integer constructors
        problems.append(f"{where}: a value cannot be read ({exc})")
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

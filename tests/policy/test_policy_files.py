"""Tier and dataset validation, the JSON form round trip, loading a folder, ``policy check``."""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import duckdb
import pytest
import yaml
from click.testing import CliRunner

from enclave.errors import PolicyFileError
from enclave.ledger.grid import Amount
from enclave.policy.fields import Problems, read_decimal
from enclave.policy.files import (
    dataset_from_dict,
    dataset_to_dict,
    load_policy_dir,
    tier_from_dict,
    tier_to_dict,
)
from enclave.policy.registry import state_paths

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
_GRID = "must be a number in (0, 1000000], a multiple of 0.000001"
E_EPS = "budget.epsilon: " + _GRID
E_DELTA = "budget.delta: must be a number in [0, 1), a multiple of 1e-15"

TIER: dict[str, Any] = {
    "name": "standard",
    "description": "Accredited researchers.",
    "aggregates": ["count", "count_distinct_units", "sum", "avg", "quantile"],
    "max_epsilon_per_query": 1.0,
    "budget": {"epsilon": 5.0, "delta": 1.0e-6},
    "min_noisy_count": 10,
    "group_by": {"max_columns": 2, "max_groups": 500, "allow_undeclared_keys": False},
    "filters": True,
    "rate_limit_per_minute": 60,
    "allowed_jurisdictions": ["GB", "IE"],
}

DATASET: dict[str, Any] = {
    "name": "visits",
    "description": "Synthetic hospital visits.",
    "source": "../data/visits.parquet",
    "privacy_unit": "person_id",
    "max_rows_per_unit": 5,
    "min_tier": "standard",
    "allowed_jurisdictions": ["GB", "IE"],
    "columns": {
        "person_id": {"type": "identifier"},
        "age": {"type": "int", "bounds": [0, 110]},
        "sex": {"type": "category", "values": ["F", "M"]},
        "cost": {"type": "float", "bounds": [0, 50000]},
        "visit_date": {"type": "date", "bounds": [dt.date(2015, 1, 1), dt.date(2025, 12, 31)]},
    },
}


def with_change(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``path`` (dotted) set to ``value``, or removed if DELETE."""
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


DELETE = object()


def write_parquet(select: str, path: Path) -> None:
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    finally:
        con.close()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(datasets folder, data folder) with a real Parquet file at data/visits.parquet."""
    base = tmp_path / "datasets"
    data = tmp_path / "data"
    base.mkdir()
    data.mkdir()
    write_parquet("SELECT range AS person_id FROM range(10)", data / "visits.parquet")
    return base, data


def problems_of_tier(body: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyFileError) as info:
        tier_from_dict(body, where="tiers/standard.yaml")
    return info.value.problems


# --- tiers ----------------------------------------------------------------------------------


def test_valid_tier_builds_and_round_trips() -> None:
    tier = tier_from_dict(TIER, where="tiers/standard.yaml")
    assert tier.max_epsilon_per_query == Decimal("1.0")
    assert tier.budget_delta == Decimal("0.000001")
    assert tier.aggregates == frozenset(TIER["aggregates"])
    assert tier.level == 0 and tier.version == 1
    assert tier_from_dict(tier_to_dict(tier)) == tier


def test_min_epsilon_per_query_defaults_to_a_thousandth_or_the_cap() -> None:
    assert tier_from_dict(TIER).min_epsilon_per_query == Decimal("0.001")
    small = tier_from_dict(with_change(TIER, "max_epsilon_per_query", 0.0005))
    assert small.min_epsilon_per_query == Decimal("0.0005")
    set_ = tier_from_dict(with_change(TIER, "min_epsilon_per_query", 0.05))
    assert set_.min_epsilon_per_query == Decimal("0.05")
    assert tier_from_dict(tier_to_dict(set_)) == set_


def test_default_epsilon_is_small_and_within_the_tiers_bounds() -> None:
    assert tier_from_dict(TIER).default_epsilon == Decimal("0.1")
    capped = tier_from_dict(with_change(TIER, "max_epsilon_per_query", 0.05))
    assert capped.default_epsilon == Decimal("0.05")  # never above the cap
    floor = tier_from_dict(with_change(TIER, "min_epsilon_per_query", 0.2))
    assert floor.default_epsilon == Decimal("0.2")  # never below the minimum
    given = tier_from_dict(with_change(TIER, "default_epsilon", 0.25))
    assert given.default_epsilon == Decimal("0.25")
    assert tier_from_dict(tier_to_dict(given)) == given
    assert tier_to_dict(tier_from_dict(TIER))["default_epsilon"] == 0.1


def test_every_budget_problem_is_listed_at_once() -> None:
    """A tier budget of 1e200 and a period of 10**9 days once made every query of the tier
    answer 500; now the tier is refused where it is given, with each problem named."""
    body = {**TIER, "max_epsilon_per_query": 1e-9, "budget": {"epsilon": 1e200, "delta": 1e-20,
            "period_days": 10**9}}  # fmt: skip
    problems = problems_of_tier(body)
    for field in ("max_epsilon_per_query", "budget.epsilon", "budget.delta", "budget.period_days"):
        assert any(f": {field}: " in p for p in problems), field


def test_tier_version_is_ignored_and_level_read() -> None:
    tier = tier_from_dict({**TIER, "version": 7, "level": 3})
    assert tier.version == 1 and tier.level == 3


def test_epsilon_written_as_text_without_a_dot_is_accepted() -> None:
    # PyYAML reads 1e-6 (no dot) as a string; the validator accepts plain numeric text.
    tier = tier_from_dict(with_change(TIER, "budget.delta", "1e-6"))
    assert tier.budget_delta == Decimal("1e-6")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("colour", "blue", "tiers/standard.yaml: colour: unknown field"),
        ("budget.currency", "GBP", "budget.currency: unknown field"),
        ("group_by.having", True, "group_by.having: unknown field"),
        ("name", "Standard", "name: must match"),
        ("name", "x" * 64, "name: must match"),
        ("name", DELETE, "name: required"),
        ("description", 5, "description: must be text"),
        ("budget.epsilon", 0, E_EPS),
        ("budget.epsilon", -1.0, E_EPS),
        ("budget.epsilon", float("nan"), E_EPS),
        ("budget.epsilon", float("inf"), E_EPS),
        ("budget.epsilon", ".nan", E_EPS),
        ("budget.epsilon", ".inf", E_EPS),
        ("budget.epsilon", "1e400", E_EPS),
        ("budget.epsilon", True, E_EPS),
        ("budget.epsilon", "five", E_EPS),
        ("budget.epsilon", DELETE, "budget.epsilon: required"),
        ("budget", DELETE, "budget: required"),
        ("budget", [5.0], "budget: must be a mapping"),
        ("budget.delta", 1.0, "budget.delta: must be a number in [0, 1), a multiple of 1e-15"),
        ("budget.delta", -1e-9, "budget.delta: must be a number in [0, 1), a multiple of 1e-15"),
        ("budget.period_days", 0, "budget.period_days: must be an integer in [1, 36500]"),
        ("budget.period_days", 10**9, "budget.period_days: must be an integer in [1, 36500]"),
        ("budget.period_days", 36501, "budget.period_days: must be an integer in [1, 36500]"),
        ("budget.epsilon", 1e200, E_EPS),
        ("budget.epsilon", 10**400, E_EPS),
        ("budget.epsilon", 1000000.5, E_EPS),
        ("budget.epsilon", "0.0000005", E_EPS),
        ("budget.delta", "1e-16", E_DELTA),
        ("budget.delta", 1.5e-15, E_DELTA),
        ("max_epsilon_per_query", 1e-7, "max_epsilon_per_query: " + _GRID),
        ("min_epsilon_per_query", 0, "min_epsilon_per_query: " + _GRID),
        ("min_epsilon_per_query", 1e-320, "min_epsilon_per_query: " + _GRID),
        (
            "min_epsilon_per_query",
            2.0,
            "min_epsilon_per_query: must not exceed max_epsilon_per_query",
        ),
        ("max_epsilon_per_query", 6.0, "max_epsilon_per_query: must not exceed budget.epsilon"),
        ("default_epsilon", 0, "default_epsilon: " + _GRID),
        ("default_epsilon", "0.1x", "default_epsilon: " + _GRID),
        ("default_epsilon", 1e-7, "default_epsilon: " + _GRID),
        ("default_epsilon", 1.5, "default_epsilon: must lie within [min_epsilon_per_query, "),
        ("default_epsilon", 0.0005, "default_epsilon: must lie within"),
        ("max_epsilon_per_query", 0, "max_epsilon_per_query: " + _GRID),
        ("aggregates", ["count", "variance"], "aggregates: unknown kind 'variance'"),
        ("aggregates", [], "aggregates: must be a non-empty list"),
        ("aggregates", "count", "aggregates: must be a non-empty list"),
        ("aggregates", ["count", "count"], "aggregates: lists a kind twice"),
        ("min_noisy_count", -1, "min_noisy_count: must be an integer >= 0"),
        ("min_noisy_count", 2.5, "min_noisy_count: must be an integer >= 0"),
        ("group_by.max_columns", -1, "group_by.max_columns: must be an integer >= 0"),
        ("group_by.max_groups", 0, "group_by.max_groups: must be an integer >= 1"),
        ("group_by.allow_undeclared_keys", "yes", "allow_undeclared_keys: must be true or false"),
        ("filters", 1, "filters: must be true or false"),
        ("rate_limit_per_minute", 0, "rate_limit_per_minute: must be an integer >= 1"),
        ("level", -1, "level: must be an integer >= 0"),
        ("allowed_jurisdictions", ["gb"], "allowed_jurisdictions[0]: must be a 2-letter"),
        ("allowed_jurisdictions", ["GBR"], "allowed_jurisdictions[0]: must be a 2-letter"),
        ("allowed_jurisdictions", "GB", "allowed_jurisdictions: must be a list"),
        ("allowed_jurisdictions", ["GB", "GB"], "allowed_jurisdictions: lists a code twice"),
    ],
)
def test_tier_rule(path: str, value: Any, expected: str) -> None:
    problems = problems_of_tier(with_change(TIER, path, value))
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("tiers/standard.yaml: ") for p in problems)


def test_undeclared_keys_need_a_delta() -> None:
    body = with_change(with_change(TIER, "budget.delta", 0), "group_by.allow_undeclared_keys", True)
    assert any("needs budget.delta > 0" in p for p in problems_of_tier(body))


def test_every_tier_problem_is_reported_at_once() -> None:
    body = {**TIER, "colour": "blue", "filters": "no", "budget": {"epsilon": -1}}
    problems = problems_of_tier(body)
    assert len(problems) == 3, problems


def test_a_non_mapping_tier_is_refused() -> None:
    assert problems_of_tier([1, 2]) == ["tiers/standard.yaml: (top level): must be a mapping"]  # type: ignore[arg-type]


# --- datasets -------------------------------------------------------------------------------


def build(layout: tuple[Path, Path], body: dict[str, Any], **kw: Any) -> Any:
    base, data = layout
    return dataset_from_dict(body, base_dir=base, data_dir=data, where="datasets/visits.yaml", **kw)


def problems_of_dataset(layout: tuple[Path, Path], body: dict[str, Any], **kw: Any) -> list[str]:
    with pytest.raises(PolicyFileError) as info:
        build(layout, body, **kw)
    return info.value.problems


def test_valid_dataset_builds_and_round_trips(layout: tuple[Path, Path]) -> None:
    spec = build(layout, DATASET)
    assert spec.source_path == str((layout[1] / "visits.parquet").resolve())
    assert spec.min_tier == ("standard",)
    age, cost = spec.column("AGE"), spec.column("cost")
    assert age is not None and age.bounds == (0, 110)
    assert cost is not None and cost.bounds == (0.0, 50000.0)
    as_json = dataset_to_dict(spec)
    assert as_json["columns"]["visit_date"]["bounds"] == ["2015-01-01", "2025-12-31"]
    assert build(layout, as_json) == spec


def test_duckdb_source_and_min_tier_list(layout: tuple[Path, Path]) -> None:
    con = duckdb.connect(str(layout[1] / "w.duckdb"))
    con.close()
    body = {**DATASET, "source": "../data/w.duckdb#visits", "min_tier": ["open", "gold"]}
    assert any("duckdb://" in p for p in problems_of_dataset(layout, body))
    spec = build(layout, {**body, "source": "duckdb://../data/w.duckdb#visits"})
    assert spec.source_table == "visits" and spec.min_tier == ("open", "gold")


def test_missing_source_is_a_problem_unless_allowed(layout: tuple[Path, Path]) -> None:
    body = {**DATASET, "source": "../data/absent.csv"}
    assert any("file not found" in p for p in problems_of_dataset(layout, body))
    assert build(layout, body, require_source=False).source_path.endswith("absent.csv")


def test_symlink_out_of_the_data_folder_is_refused(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "secret.parquet"
    shutil.copy(layout[1] / "visits.parquet", outside)
    os.symlink(outside, layout[1] / "link.parquet")
    body = {**DATASET, "source": "../data/link.parquet"}
    assert any("must lie inside the data folder" in p for p in problems_of_dataset(layout, body))


def test_absolute_source_inside_the_data_folder_is_accepted(layout: tuple[Path, Path]) -> None:
    path = str((layout[1] / "visits.parquet").resolve())
    assert build(layout, {**DATASET, "source": path}).source_path == path


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("owner", "me", "datasets/visits.yaml: owner: unknown field"),
        ("columns.age.unit", "years", "columns.age.unit: unknown field"),
        ("name", "1visits", "name: must match"),
        ("name", DELETE, "name: required"),
        ("max_rows_per_unit", 0, "max_rows_per_unit: must be an integer >= 1"),
        ("max_rows_per_unit", "5", "max_rows_per_unit: must be an integer >= 1"),
        ("min_tier", [], "min_tier: must be a tier name or a non-empty list"),
        ("min_tier", ["open", "open"], "min_tier: lists a tier twice"),
        ("min_tier", "Open!", "min_tier[0]: must match"),
        ("allowed_jurisdictions", ["uk"], "allowed_jurisdictions[0]: must be a 2-letter"),
        ("allowed_jurisdictions", [], "allowed_jurisdictions: must list at least one code"),
        ("privacy_unit", "patient", "privacy_unit: must name a declared column"),
        ("privacy_unit", "age", "privacy_unit: must be a column of type identifier"),
        ("columns.nhs_no", {"type": "identifier"}, "columns: declares more than one identifier"),
        ("columns", {}, "columns: must be a non-empty mapping"),
        ("columns.AGE", {"type": "int", "bounds": [0, 1]}, "columns.AGE: declared twice"),
        ("columns.bad name", {"type": "identifier"}, "column name must match"),
        ("columns.age.type", "integer", "columns.age.type: must be one of"),
        ("columns.age.bounds", [110, 0], "columns.age.bounds: low must be less than high"),
        ("columns.age.bounds", [5, 5], "columns.age.bounds: low must be less than high"),
        ("columns.age.bounds", [0, 110.5], "columns.age.bounds[1]: must be an integer"),
        # both bad bounds are listed, not only the first
        ("columns.age.bounds", [0.5, 110.5], "columns.age.bounds[0]: must be an integer"),
        ("columns.age.bounds", [0.5, 110.5], "columns.age.bounds[1]: must be an integer"),
        ("columns.age.bounds", [0], "columns.age.bounds: must be a list [low, high]"),
        ("columns.age.bounds", DELETE, "columns.age.bounds: required for int columns"),
        ("columns.cost.bounds", [0, float("nan")], "columns.cost.bounds[1]: must be a finite"),
        ("columns.cost.bounds", [0, ".inf"], "columns.cost.bounds[1]: must be a finite"),
        ("columns.visit_date.bounds", ["2015-01-01", "soon"], "bounds[1]: must be a date"),
        (
            "columns.visit_date.bounds",
            [dt.datetime(2015, 1, 1, 10), dt.date(2016, 1, 1)],
            "bounds[0]: must be a date",
        ),
        ("columns.person_id.bounds", [0, 10], "columns.person_id.bounds: not allowed"),
        ("columns.sex.bounds", [0, 1], "columns.sex.bounds: not allowed for category"),
        ("columns.sex.values", [], "columns.sex.values: category columns must declare"),
        ("columns.sex.values", DELETE, "columns.sex.values: category columns must declare"),
        ("columns.sex.values", ["F", "F"], "columns.sex.values: lists a value twice"),
        ("columns.sex.values", ["F", True], "columns.sex.values[1]: must be non-empty text"),
        ("columns.sex.values", ["F", ""], "columns.sex.values[1]: must be non-empty text"),
        ("columns.age.values", ["1"], "columns.age.values: only category columns"),
        ("source", "https://example.org/v.parquet", "source: URLs are not allowed"),
        ("source", "s3://bucket/v.parquet", "source: URLs are not allowed"),
        ("source", "../data/visits.json", "source: must be a .parquet or .csv file"),
        ("source", "../data/*.parquet", "source: must name one file (no wildcards)"),
        ("source", "../../etc/v.parquet", "source: must lie inside the data folder"),
        ("source", "../data/../state/enclave.parquet", "source: must lie inside the data"),
        ("source", "/etc/v.csv", "source: must lie inside the data folder"),
        ("source", "../data", "source: must be a .parquet or .csv file"),
        ("source", "duckdb://../data/w.duckdb", "source: duckdb:// sources must end with #table"),
        ("source", 5, "source: must be a .parquet or .csv file"),
    ],
)
def test_dataset_rule(layout: tuple[Path, Path], path: str, value: Any, expected: str) -> None:
    problems = problems_of_dataset(layout, with_change(DATASET, path, value))
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("datasets/visits.yaml: ") for p in problems)


# --- a policy folder and `policy check` -------------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A copy of the shipped policies/ beside a generated data/visits.parquet."""
    shutil.copytree(REPO_POLICIES, tmp_path / "policies")
    (tmp_path / "data").mkdir()
    write_parquet(
        "SELECT range % 100 AS person_id, (range % 90)::INT AS age, "
        "CASE WHEN range % 2 = 0 THEN 'F' ELSE 'M' END AS sex, 'north' AS region, "
        "(range * 7.5)::DOUBLE AS cost, DATE '2020-01-01' + (range % 300)::INT AS visit_date "
        "FROM range(500)",
        tmp_path / "data" / "visits.parquet",
    )
    return tmp_path


def test_shipped_policies_load_cleanly(deployment: Path) -> None:
    found = load_policy_dir(deployment / "policies", deployment / "data")
    assert found.problems == []
    assert sorted(found.tiers) == ["accredited", "open", "standard"]
    assert [found.tiers[n].level for n in ("open", "standard", "accredited")] == [0, 1, 2]
    assert found.tiers["open"].aggregates == {"count", "count_distinct_units"}
    assert found.tiers["open"].filters is False
    assert found.tiers["accredited"].allow_undeclared_keys is True
    visits = found.datasets["visits"]
    assert visits.min_tier == ("open",) and visits.max_rows_per_unit == 5
    assert [c.name for c in visits.columns][:2] == ["person_id", "age"]


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_folder_problems_carry_file_field_and_line(deployment: Path) -> None:
    pol = deployment / "policies"
    write(pol / "tiers" / "broken.yaml", "name: broken\naggregates: [count\n")
    write(pol / "tiers" / "dupe.yaml", "name: dupe\nlevel: 1\nlevel: 2\n")
    write(pol / "tiers" / "other.yaml", (pol / "tiers" / "open.yaml").read_text())
    write(pol / "tiers" / "evil.yaml", "!!python/object/apply:os.system ['true']\n")
    write(pol / "tiers" / "gold.yml", "name: gold\n")
    visits = (pol / "datasets" / "visits.yaml").read_text()
    write(pol / "datasets" / "visits.yaml", visits.replace("min_tier: open", "min_tier: gold"))
    found = load_policy_dir(pol, deployment / "data")
    text = "\n".join(found.problems)
    assert "tiers/broken.yaml: line 3: invalid YAML" in text
    assert "tiers/dupe.yaml: line 3: duplicate key 'level'" in text
    assert "tiers/other.yaml: name: must equal the file name ('other')" in text
    assert "tiers/evil.yaml: line 1: invalid YAML" in text
    assert "datasets/visits.yaml: min_tier: unknown tier 'gold'" in text
    assert "tiers/gold.yml: ignored: policy files end in .yaml" in text
    assert sorted(found.tiers) == ["accredited", "open", "standard"]


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [" + ", ".join([f"*{a}"] * 10) + "]\n"
    for a, b in zip("abcdefghijk", "bcdefghijkl", strict=True)
)  # "l" stands for 10**12 values in a few hundred bytes


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (LAUGHS + "aggregates: *l\n", "anchors and aliases are not allowed"),
        ("description: 2026-13-45\n", "a value cannot be read (month must be in 1..12)"),
        ("level: 1" + "0" * 5000 + "\n", "a value cannot be read (Exceeds the limit"),
        ("level: 0x" + "f" * 5000 + "\n", "level: must lie within 2**53"),
        ("rate_limit_per_minute: 9007199254740993\n", "must lie within 2**53"),
        ("zzz: " + "[" * 5000 + "]" * 5000 + "\n", "nests lists or mappings too deeply"),
    ],
    ids=["alias-bomb", "bad-date", "huge-int", "huge-hex", "past-2**53", "deep"],
)
def test_hostile_yaml_is_a_listed_problem_never_a_crash(
    deployment: Path, extra: str, expected: str
) -> None:
    """Each of these once hung or raised out of the loader (``enclave policy check`` and the
    first-start seed died with a traceback), or loaded a value the store could not write."""
    pol = deployment / "policies"
    key = extra.splitlines()[-1].split(":")[0]
    lines = (pol / "tiers" / "open.yaml").read_text().splitlines()
    kept = [line for line in lines if not line.startswith(f"{key}:")]
    write(pol / "tiers" / "open.yaml", "\n".join(kept) + "\n" + extra)
    found = load_policy_dir(pol, deployment / "data")
    assert any(p.startswith("tiers/open.yaml: ") and expected in p for p in found.problems), (
        found.problems
    )
    assert "open" not in found.tiers


def cli() -> click.Group:
    from enclave.cli.policy import policy_group  # imported here: enclave.cli pulls every group

    @click.group()
    def root() -> None:
        """A throwaway root, as `enclave` registers `policy`."""

    root.add_command(policy_group)
    return root


def test_policy_check_passes_on_the_shipped_policies(deployment: Path) -> None:
    result = CliRunner().invoke(cli(), ["policy", "check", str(deployment / "policies")])
    assert result.exit_code == 0, result.output
    assert "3 tier(s)" in result.output and "1 dataset(s)" in result.output


def test_policy_check_reports_every_problem_and_exits_1(deployment: Path) -> None:
    pol = deployment / "policies"
    tier = (pol / "tiers" / "standard.yaml").read_text()
    write(pol / "tiers" / "standard.yaml", tier.replace("epsilon: 5.0", "epsilon: .nan"))
    (deployment / "data" / "visits.parquet").unlink()
    result = CliRunner().invoke(cli(), ["policy", "check", str(pol)])
    assert result.exit_code == 1
    assert "tiers/standard.yaml: budget.epsilon: " + _GRID in result.output
    assert "datasets/visits.yaml: source: file not found" in result.output


def test_policy_check_refuses_a_default_epsilon_above_the_cap(deployment: Path) -> None:
    pol = deployment / "policies"
    tier = (pol / "tiers" / "standard.yaml").read_text()
    write(pol / "tiers" / "standard.yaml", tier + "default_epsilon: 1.5\n")
    result = CliRunner().invoke(cli(), ["policy", "check", str(pol)])
    assert result.exit_code == 1
    assert (
        "tiers/standard.yaml: default_epsilon: must lie within [min_epsilon_per_query, "
        "max_epsilon_per_query] = [0.001, 1.0]" in result.output
    )


def test_policy_check_honours_data_dir(deployment: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    result = CliRunner().invoke(
        cli(), ["policy", "check", str(deployment / "policies"), "--data-dir", str(other)]
    )
    assert result.exit_code == 1
    # the source (relative to the data folder) is looked for in the other folder
    assert "datasets/visits.yaml: source: file not found in the data folder" in result.output
    shutil.copy(deployment / "data" / "visits.parquet", other / "visits.parquet")
    result = CliRunner().invoke(
        cli(), ["policy", "check", str(deployment / "policies"), "--data-dir", str(other)]
    )
    assert result.exit_code == 0, result.output


# --- fields.py: numbers as text, magnitude caps, the state store ------------------------------


@pytest.mark.parametrize("text", ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "1e"])
def test_non_finite_numbers_as_text_are_refused(text: str) -> None:
    p = Problems("t")
    assert read_decimal(p, text, "budget.epsilon", "must be finite") is None
    assert p.items == ["t: budget.epsilon: must be finite"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1e-6", Decimal("0.000001")), (" 2.5 ", Decimal("2.5")), (0.1, Decimal("0.1")), (3, 3)],
)
def test_numbers_as_text_and_floats_become_exact_decimals(value: Any, expected: Any) -> None:
    p = Problems("")
    assert read_decimal(p, value, "x", "bad") == expected and p.items == []


@pytest.mark.parametrize(
    ("column", "bounds", "expected"),
    [
        ("age", [0, 2**53 // 5], None),
        ("age", [0, 2**53 // 5 + 1], "columns.age.bounds: max_rows_per_unit (5) times"),
        ("age", [-(2**53) - 1, 0], "columns.age.bounds[0]: must lie within"),
        ("cost", [0, 1e15], None),
        ("cost", [0, 1.5e15], "columns.cost.bounds[1]: must lie within"),
        ("cost", ["-1e16", 0], "columns.cost.bounds[0]: must lie within"),
    ],
)
def test_bounds_are_capped_in_magnitude(
    layout: tuple[Path, Path], column: str, bounds: list[Any], expected: str | None
) -> None:
    body = with_change(DATASET, f"columns.{column}.bounds", bounds)
    if expected is None:
        assert build(layout, body).column(column) is not None
    else:
        assert any(expected in p for p in problems_of_dataset(layout, body))


@pytest.mark.parametrize(
    ("bounds", "off"),
    [
        ([0, 5e-7], "0.000001"),  # stored as twice the declared bound (finding: loss 1.98 > 1)
        (["0", "5e-7"], "0.000001"),
        ([0, 0.0000015], "0.000002"),
        ([-2.5e-6, 1], "-0.000003"),
        ([0, 123456789012345.67], "123456789012345.667584"),
    ],
)
def test_float_bounds_off_the_stored_grid_are_refused(
    layout: tuple[Path, Path], bounds: list[Any], off: str
) -> None:
    body = with_change(DATASET, "columns.cost.bounds", bounds)
    found = [p for p in problems_of_dataset(layout, body) if "off the stored grid" in p]
    assert len(found) == 1 and f"store it as {off}" in found[0]


@pytest.mark.parametrize(
    "bounds", [[0, 0.1], [-0.000001, 0.000001], [0.3, 99999999999.999999], [0, 1e15]]
)
def test_float_bounds_on_the_stored_grid_are_accepted(
    layout: tuple[Path, Path], bounds: list[Any]
) -> None:
    body = with_change(DATASET, "columns.cost.bounds", bounds)
    assert build(layout, body).column("cost") is not None


def test_forbidden_state_paths_are_refused_even_inside_the_data_folder(
    layout: tuple[Path, Path],
) -> None:
    state = layout[1] / "state"
    (state / "bounded").mkdir(parents=True)
    shutil.copy(layout[1] / "visits.parquet", state / "bounded" / "t.parquet")
    store_file = layout[1] / "enclave.db"
    store_file.write_bytes(b"")
    os.symlink(store_file, layout[1] / "store.csv")
    forbidden = (state, store_file)
    for source in ("../data/state/bounded/t.parquet", "../data/store.csv"):
        body = {**DATASET, "source": source}
        assert build(layout, body).source_path  # allowed when nothing is forbidden
        problems = problems_of_dataset(layout, body, forbidden=forbidden)
        assert any("gateway's own state" in p for p in problems), problems
    assert build(layout, DATASET, forbidden=forbidden).name == "visits"


def test_state_paths_name_the_engine_folder_and_the_sqlite_files(tmp_path: Path) -> None:
    from enclave.config import config_from_dict

    auth = {"issuer": "i", "audience": "a", "jwks_file": "k.json"}
    cfg = config_from_dict({"auth": auth, "store": {"url": "sqlite:///s/e.db"}}, base=tmp_path)
    paths = state_paths(cfg)
    assert paths[0] == tmp_path / "state"
    assert tmp_path / "s" / "e.db" in paths and tmp_path / "s" / "e.db-wal" in paths
    pg = config_from_dict({"auth": auth, "store": {"url": "postgresql://h/db"}}, base=tmp_path)
    assert state_paths(pg) == (tmp_path / "state",)


def test_policy_check_on_an_exported_style_file(layout: tuple[Path, Path]) -> None:
    """The export layout (flow lists, dates as quoted text, 1.0e-06) reads back."""
    text = (
        "name: t\naggregates: [count]\nmax_epsilon_per_query: 0.5\n"
        "budget:\n  epsilon: 1.0\n  delta: 1.0e-06\n"
    )
    tier = tier_from_dict(yaml.safe_load(text))
    assert tier.budget_delta == Decimal("0.000001")


# --- layered budgets (budget_layers.py) ------------------------------------------------------


def test_budget_layers_round_trip(layout: tuple[Path, Path]) -> None:
    tier = tier_from_dict({**TIER, "organisation_budget": {"epsilon": 20, "delta": 1e-5}})
    assert tier.organisation_budget == Amount.limit("20", "0.00001")
    assert tier_from_dict(tier_to_dict(tier)) == tier
    assert tier_from_dict(TIER).organisation_budget is None
    spec = build(layout, {**DATASET, "total_budget": {"epsilon": 10}})
    assert spec.total_budget == Amount.limit("10")
    assert build(layout, dataset_to_dict(spec)) == spec
    assert build(layout, DATASET).total_budget is None


def test_policy_check_refuses_bad_budget_layers(deployment: Path) -> None:
    pol = deployment / "policies"
    tier = (pol / "tiers" / "standard.yaml").read_text()
    write(pol / "tiers" / "standard.yaml", tier + "organisation_budget: {epsilon: 0.0000001}\n")
    dataset = (pol / "datasets" / "visits.yaml").read_text()
    write(pol / "datasets" / "visits.yaml", dataset + "total_budget: {delta: 0.5, spare: 1}\n")
    result = CliRunner().invoke(cli(), ["policy", "check", str(pol)])
    assert result.exit_code == 1
    assert "tiers/standard.yaml: organisation_budget.epsilon: " + _GRID in result.output
    assert "datasets/visits.yaml: total_budget.spare: unknown field" in result.output
    assert "datasets/visits.yaml: total_budget.epsilon: required" in result.output

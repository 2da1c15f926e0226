"""``enclave policy``: offline checks of a policy folder, and export of the store's policy."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml

from enclave.cli.common import config_option, get_config, offline, run
from enclave.config import Config
from enclave.engine.child import ChildPool
from enclave.engine.schema import column_problems
from enclave.errors import ServiceUnavailable
from enclave.models import DatasetSpec
from enclave.policy.files import dataset_to_dict, load_policy_dir, tier_to_dict


@click.group("policy")
def policy_group() -> None:
    """Tier and dataset policy files."""


@policy_group.command("check")
@click.argument("policies_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder every dataset source must lie in [default: DIR/../data].",
)
def check(policies_dir: Path, data_dir: Path | None) -> None:
    """Validate every tier and dataset file in DIR; print each problem with file and field.

    Exits 1 if there is any problem (including a dataset whose data file is missing, or whose
    declared columns are missing from its source or of a type that does not fit).
    """
    data = data_dir if data_dir is not None else policies_dir.resolve().parent / "data"
    found = load_policy_dir(policies_dir, data)
    found.problems.extend(asyncio.run(_column_problems(list(found.datasets.values()))))
    for problem in found.problems:
        click.echo(problem)
    if found.problems:
        click.echo(f"{len(found.problems)} problem(s) in {policies_dir}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(
        f"ok: {len(found.tiers)} tier(s) ({', '.join(sorted(found.tiers)) or 'none'}), "
        f"{len(found.datasets)} dataset(s) ({', '.join(sorted(found.datasets)) or 'none'}); "
        f"data folder {data}"
    )


async def _column_problems(specs: list[DatasetSpec]) -> list[str]:
    """Every dataset's declared columns against its source's schema (``engine/schema.py``)."""
    pool = ChildPool(1)
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="enclave-check-") as tmp:
            for spec in specs:
                problems.extend(await column_problems(pool, spec, Path(tmp)))
    finally:
        pool.close()
    return problems


@policy_group.command("export")
@config_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write tiers/<name>.yaml and datasets/<name>.yaml into.",
)
@click.option("--force", is_flag=True, help="Overwrite policy files that already exist in OUT.")
def export(config_path: Path | None, out_dir: Path, force: bool) -> None:
    """Write the store's current tiers and datasets back out as policy files.

    After the first start the store is the source of truth (admins change policy through the
    API); this writes its latest versions as files that `enclave policy check` accepts and
    that read back to the same definitions. A dataset's source is written relative to
    ``policies.data_dir``, so it still names the same data file.
    """
    cfg = get_config(config_path)
    files = run(_render(cfg, out_dir))
    clashes = [path for path in files if path.exists()]
    if clashes and not force:
        for path in clashes:
            click.echo(f"exists: {path}", err=True)
        click.echo("refusing to overwrite; pass --force", err=True)
        raise click.exceptions.Exit(1)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for kind in ("tiers", "datasets"):
        stray = sorted(set((out_dir / kind).glob("*.yaml")) - set(files))
        for path in stray:
            click.echo(f"warning: {path} is not in the store (left as it is)", err=True)
    click.echo(f"wrote {len(files)} file(s) to {out_dir}")


async def _render(cfg: Config, out_dir: Path) -> dict[Path, str]:
    """``{path: YAML text}`` for every tier and dataset (latest versions) in the store."""
    async with offline(cfg) as (store, registry):
        stored = {
            kind: {v.name: v.version for v in await store.list_policies(kind)}
            for kind in ("tier", "dataset")
        }
        tiers, datasets = await registry.tiers(), await registry.datasets()
    broken = sorted(set(stored["tier"]) - {t.name for t in tiers}) + sorted(
        set(stored["dataset"]) - {d.name for d in datasets}
    )
    if broken:
        raise ServiceUnavailable(
            f"stored definitions no longer validate: {', '.join(broken)}; see the log"
        )
    files: dict[Path, str] = {}
    for tier in tiers:
        body = tier_to_dict(tier)
        files[out_dir / "tiers" / f"{tier.name}.yaml"] = _yaml("tier", tier.version, body)
    data_dir = cfg.policies.data_dir.resolve()
    for spec in datasets:
        body = dataset_to_dict(spec)
        rel = os.path.relpath(spec.source_path, data_dir)
        body["source"] = f"duckdb://{rel}#{spec.source_table}" if spec.source_table else rel
        if body.get("allowed_jurisdictions") is None:
            body.pop("allowed_jurisdictions", None)
        files[out_dir / "datasets" / f"{spec.name}.yaml"] = _yaml("dataset", spec.version, body)
    return files


def _yaml(kind: str, version: int, body: dict[str, Any]) -> str:
    body = {k: v for k, v in body.items() if k != "version"}
    head = (
        f"# {kind} {body['name']}, version {version} in the gateway's store, exported by "
        "`enclave policy export`.\n# The store is the source of truth: change policy through "
        "the admin API, not by editing this file.\n"
    )
    return head + yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Safe YAML in the contract's layout: flat lists and column definitions on one line."""


def _flat(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(_flat(x) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    column = "type" in data and all(
        _flat(v) or (isinstance(v, list) and all(_flat(x) for x in v)) for v in data.values()
    )
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=column or None)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)

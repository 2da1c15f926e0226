"""``enclave policy``: offline checks of the policy folder (tiers/ and datasets/)."""

from __future__ import annotations

from pathlib import Path

import click

from enclave.policy.files import load_policy_dir


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

    Exits 1 if there is any problem (including a dataset whose data file is missing).
    """
    data = data_dir if data_dir is not None else policies_dir.resolve().parent / "data"
    found = load_policy_dir(policies_dir, data)
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

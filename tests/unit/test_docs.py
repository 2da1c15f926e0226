"""The README is the docs: every config key and every CLI command appears in it."""

from __future__ import annotations

from pathlib import Path

import click

from enclave.cli import main
from enclave.config import CONFIG_KEYS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_config_key_is_in_the_readme_table() -> None:
    missing = [key for key in CONFIG_KEYS if f"| `{key}` |" not in README]
    assert missing == []


def _commands(group: click.Group, prefix: str = "enclave") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, full))
        else:
            out.append(full)
    return out


def test_every_cli_command_is_in_the_readme() -> None:
    cli_section = README.split("## CLI", 1)[1].split("\n## ", 1)[0]
    missing = []
    for full in _commands(main):
        *parent, leaf = full.split(" ")
        if full not in cli_section and not (
            " ".join(parent) in cli_section and leaf in cli_section
        ):
            missing.append(full)
    assert missing == []

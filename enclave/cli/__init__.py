"""The ``enclave`` command: a thin shell over library functions (never the web layer)."""

from __future__ import annotations

import click

from enclave import __version__


@click.group()
@click.version_option(__version__, prog_name="enclave")
def main() -> None:
    """Enclave Gateway: differentially private queries over sensitive microdata."""

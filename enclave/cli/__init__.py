"""The ``enclave`` command: a thin shell over library functions (never the web layer's
handlers; ``serve`` and ``demo`` only start the app)."""

from __future__ import annotations

import click

from enclave import __version__
from enclave.cli.audit import audit_group
from enclave.cli.demo import demo_command
from enclave.cli.keys import keys_group, token_command
from enclave.cli.licence import licence_group
from enclave.cli.policy import policy_group
from enclave.cli.query import query_command
from enclave.cli.report import report_command
from enclave.cli.serve import serve_command
from enclave.cli.store import store_group
from enclave.cli.synthetic import synthetic_command


@click.group()
@click.version_option(__version__, prog_name="enclave")
def main() -> None:
    """Enclave Gateway: differentially private queries over sensitive microdata."""


main.add_command(serve_command)
main.add_command(demo_command)
main.add_command(keys_group)
main.add_command(token_command)
main.add_command(licence_group)
main.add_command(policy_group)
main.add_command(audit_group)
main.add_command(query_command)
main.add_command(store_group)
main.add_command(report_command)
main.add_command(synthetic_command)

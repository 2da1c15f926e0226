"""``enclave query``: run (or price) one query through a gateway, as a researcher.

A thin shell over ``enclave.client.EnclaveClient`` in ``asyncio.run``. The token is read from
``--token`` or, better (it then stays out of shell history and ``ps``), ``ENCLAVE_TOKEN``.
Output: a table with each value's 95% noise interval, the epsilon spent and the budget left;
``--json`` prints the gateway's JSON unchanged for scripts. Exit status: 0 released or
estimated, 1 refused or failed (``error: <title>: <detail>`` on stderr), 2 usage.
"""

from __future__ import annotations

import asyncio
import json

import click

from enclave.client import EnclaveClient, Estimate, QueryResult
from enclave.client.table import render_estimate, render_result
from enclave.errors import EnclaveError, RateLimited


@click.command("query")
@click.option(
    "--url",
    envvar="ENCLAVE_URL",
    required=True,
    help="Gateway base URL, e.g. http://127.0.0.1:8080 (or $ENCLAVE_URL).",
)
@click.option(
    "--token",
    envvar="ENCLAVE_TOKEN",
    required=True,
    help="Bearer token (or $ENCLAVE_TOKEN, which keeps it out of shell history).",
)
@click.option("--dataset", required=True, help="Dataset to query, e.g. visits.")
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Epsilon to spend (default: the tier's max_epsilon_per_query).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON answer as is.")
@click.option("--estimate", is_flag=True, help="Dry run: cost, accuracy, cached, within budget.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the answer.",
)
@click.argument("sql")
def query_command(
    url: str,
    token: str,
    dataset: str,
    epsilon: float | None,
    as_json: bool,
    estimate: bool,
    timeout: float,
    sql: str,
) -> None:
    """Run SQL (the gateway's aggregate subset) on DATASET and print the noisy answer."""
    try:
        client = EnclaveClient(url, token, timeout=timeout)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        answer = asyncio.run(_ask(client, sql, dataset, epsilon, estimate))
    except EnclaveError as err:
        click.echo(f"error: {describe(err)}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(dict(answer.raw), indent=2))
    elif isinstance(answer, Estimate):
        click.echo(render_estimate(answer))
    else:
        click.echo(render_result(answer))


async def _ask(
    client: EnclaveClient, sql: str, dataset: str, epsilon: float | None, estimate: bool
) -> QueryResult | Estimate:
    async with client:
        if estimate:
            return await client.estimate(sql, dataset, epsilon)
        return await client.query(sql, dataset, epsilon)


def describe(err: EnclaveError) -> str:
    """``<title>: <detail>``, without repeating a detail that only restates the title."""
    text = err.title if err.detail == err.title else f"{err.title}: {err.detail}"
    if isinstance(err, RateLimited):
        text += f" (retry after {err.retry_after} s)"
    return text

"""``enclave query``: run (or price) one query through a gateway, as a researcher.

A thin shell over ``enclave.client.EnclaveClient`` in ``asyncio.run``. The token is read from
``--token`` or, better (it then stays out of shell history and ``ps``), ``ENCLAVE_TOKEN``.
Output: a table with each value's 95% noise interval, the epsilon spent and the budget left;
``--json`` prints the gateway's JSON unchanged for scripts. Exit status: 0 released or
estimated, 1 refused, failed or not confirmed (``error: <title>: <detail>`` on stderr), 2 usage.

``--accuracy n=50`` (repeatable) asks for the smallest epsilon whose ci95 for column ``n`` is
at most 50, instead of ``--epsilon``; with neither, the tier's ``default_epsilon`` is spent.
A query is sent with ``max_share`` = ``--confirm-share`` (default 0.25); if the gateway
answers that it would spend more than that share of the epsilon left, a free estimate prices
it and the CLI asks (on stderr; no answer, e.g. without a terminal, means no) before sending
it again without ``max_share``. ``--yes`` sends no ``max_share`` and never asks.
"""

from __future__ import annotations

import asyncio
import json

import click

from enclave.client import EnclaveClient, Estimate, QueryResult, SpendNotConfirmed
from enclave.client.aio import DEFAULT_CONFIRM_SHARE, spend_message
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
    help="Epsilon to spend (default: the tier's default_epsilon).",
)
@click.option(
    "--accuracy",
    "targets",
    multiple=True,
    metavar="COLUMN=CI95",
    help="Instead of --epsilon: the largest ci95 wanted for an output column (repeatable); "
    "the smallest epsilon that meets every target is spent.",
)
@click.option(
    "--confirm-share",
    type=click.FloatRange(min=0, max=1),
    default=DEFAULT_CONFIRM_SHARE,
    show_default=True,
    help="Ask before a query that spends more than this share of the epsilon left.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not estimate first or ask; just run.")
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
    targets: tuple[str, ...],
    confirm_share: float,
    yes: bool,
    as_json: bool,
    estimate: bool,
    timeout: float,
    sql: str,
) -> None:
    """Run SQL (the gateway's aggregate subset) on DATASET and print the noisy answer."""
    accuracy = _targets(targets) if targets else None
    if accuracy is not None and epsilon is not None:
        raise click.UsageError("give --epsilon or --accuracy, not both")
    try:
        client = EnclaveClient(
            url, token, timeout=timeout, confirm_share=None if yes else confirm_share,
            confirm=_confirm,
        )  # fmt: skip
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        answer = asyncio.run(_ask(client, sql, dataset, epsilon, accuracy, estimate))
    except EnclaveError as err:
        click.echo(f"error: {describe(err)}", err=True)
        raise SystemExit(1) from None
    except SpendNotConfirmed as declined:
        click.echo(f"error: not run: {declined}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(dict(answer.raw), indent=2))
    elif isinstance(answer, Estimate):
        click.echo(render_estimate(answer))
    else:
        click.echo(render_result(answer))


async def _ask(
    client: EnclaveClient,
    sql: str,
    dataset: str,
    epsilon: float | None,
    accuracy: dict[str, float] | None,
    estimate: bool,
) -> QueryResult | Estimate:
    async with client:
        if estimate:
            return await client.estimate(sql, dataset, epsilon, accuracy=accuracy)
        return await client.query(sql, dataset, epsilon, accuracy=accuracy)


def _targets(items: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        column, sep, value = item.partition("=")
        try:
            ci95 = float(value)
        except ValueError:
            ci95 = -1.0
        if not sep or not column or not ci95 > 0:
            raise click.BadParameter(
                f"{item!r}: expected COLUMN=CI95 with a positive number", param_hint="--accuracy"
            )
        out[column] = ci95
    return out


def _confirm(estimate: Estimate) -> bool:
    """Ask on stderr (stdout stays the answer); no answer (no terminal) means no."""
    try:
        return click.confirm(f"{spend_message(estimate)}. Run it?", default=False, err=True)
    except click.Abort:
        return False


def describe(err: EnclaveError) -> str:
    """``<title>: <detail>``, without repeating a detail that only restates the title."""
    text = err.title if err.detail == err.title else f"{err.title}: {err.detail}"
    if isinstance(err, RateLimited):
        text += f" (retry after {err.retry_after} s)"
    return text

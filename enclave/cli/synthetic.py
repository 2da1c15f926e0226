"""``enclave synthetic``: release a DP synthetic table through a gateway and save it.

A thin shell over ``EnclaveClient.submit_synthetic`` / ``wait_job`` / ``job_result``
(docs/synthetic.md). It queues the job, waits for it, and writes the table (Parquet or CSV)
and, beside it, the report of the DP marginals (``<out>.report.json``). Exit status: 0 saved,
1 refused or failed (``error: <title>: <detail>`` on stderr), 2 usage.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from enclave.cli.query import describe
from enclave.client import EnclaveClient
from enclave.errors import EnclaveError


@click.command("synthetic")
@click.option("--url", envvar="ENCLAVE_URL", required=True, help="Gateway base URL.")
@click.option(
    "--token", envvar="ENCLAVE_TOKEN", required=True, help="Bearer token (or $ENCLAVE_TOKEN)."
)
@click.option("--dataset", required=True, help="Dataset, e.g. visits.")
@click.option(
    "--column", "columns", multiple=True, required=True, help="A column to release (2 or more)."
)
@click.option(
    "--epsilon", type=click.FloatRange(min=0, min_open=True), required=True, help="Epsilon."
)
@click.option("--rows", type=click.IntRange(min=1), required=True, help="Synthetic rows.")
@click.option("--bins", type=click.IntRange(min=2), default=None, help="Bins per number.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output file; .csv writes CSV, anything else Parquet.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="Seconds to wait for the job.",
)
def synthetic_command(
    url: str,
    token: str,
    dataset: str,
    columns: tuple[str, ...],
    epsilon: float,
    rows: int,
    bins: int | None,
    out: Path,
    timeout: float,
) -> None:
    """Release a DP synthetic table of DATASET's COLUMNs (MST) and save it to OUT."""
    try:
        client = EnclaveClient(url, token)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    fmt = "csv" if out.suffix.lower() == ".csv" else "parquet"

    async def run() -> tuple[dict[str, object], bytes, bytes]:
        async with client:
            job = await client.submit_synthetic(dataset, list(columns), epsilon, rows, bins)
            done = await client.wait_job(str(job["id"]), timeout=timeout)
            done["cached"] = job.get("cached", False)
            table = await client.job_result(str(done["id"]), fmt)
            report = await client.job_result(str(done["id"]), "report")
            return done, table, report

    try:
        done, table, report = asyncio.run(run())
    except EnclaveError as err:
        click.echo(f"error: {describe(err)}", err=True)
        raise SystemExit(1) from None
    out.write_bytes(table)
    out.with_name(out.name + ".report.json").write_bytes(report)
    result = done.get("result")
    charged = result.get("epsilon") if isinstance(result, dict) else None
    spent = 0.0 if done.get("cached") else charged
    click.echo(f"job {done['id']}: {rows} rows saved to {out} (epsilon spent {spent})")

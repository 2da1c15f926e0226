"""``enclave report``: the transparency report of the store named in a config, signed with the
gateway's head-signing key (as ``GET /v1/transparency`` serves it). Only reads the store.

Exit status 1 when the log does not verify (no report is signed), 2 for usage errors (every
problem with ``--from``, ``--to`` and ``--period`` is listed).
"""

from __future__ import annotations

from pathlib import Path

import click

from enclave.audit import transparency_render as render
from enclave.audit.signing import load_or_create_signer
from enclave.audit.transparency_params import PERIODS, ReportParams, parse_params
from enclave.cli.audit import store_config
from enclave.cli.common import config_option, out_option, run
from enclave.config import Config
from enclave.report import store_report
from enclave.store import connected_store


@click.command("report")
@config_option
@click.option("--from", "start", help="First day (YYYY-MM-DD; default: the log's first day).")
@click.option("--to", "end", help="Day after the last (YYYY-MM-DD, exclusive).")
@click.option("--period", type=click.Choice(PERIODS), default="all", show_default=True)
@click.option("--format", "fmt", type=click.Choice(render.FORMATS), default="json")
@out_option
def report_command(
    config_path: Path | None,
    start: str | None,
    end: str | None,
    period: str,
    fmt: str,
    out_path: Path | None,
) -> None:
    """The transparency report: privacy loss, queries, licences and incidents per dataset."""
    params, problems = parse_params(start, end, period)
    if problems:
        raise click.UsageError("; ".join(problems))
    cfg = store_config(config_path)
    body = render.render(run(_report(cfg, params)), fmt)
    if out_path is None:
        click.echo(body.decode("utf-8"), nl=fmt == "json")
    else:
        out_path.write_bytes(body)
        click.echo(f"report written to {out_path}", err=True)


async def _report(cfg: Config, params: ReportParams) -> dict[str, object]:
    signer = load_or_create_signer(cfg.engine.state_dir)
    async with connected_store(cfg.store.url) as store:
        return await store_report(store, params, signer.sign)

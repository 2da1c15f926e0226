"""``enclave demo``: make a demo deployment, print tokens, console links and a curl line,
serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from enclave.cli.common import setup_logging
from enclave.cli.serve import serve
from enclave.demo import demo_keys, demo_tokens, make_demo, seed_licences, write_tokens


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=Path("enclave-demo"),
    show_default=True,
    help="Folder for the demo deployment (reused if present).",
)
@click.option(
    "--rows",
    type=click.IntRange(min=100),
    default=1_000_000,
    show_default=True,
    help="Synthetic visits to generate (first run only).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--no-serve", is_flag=True, help="Set up and print tokens, but do not serve.")
def demo_command(folder: Path, rows: int, port: int, no_serve: bool) -> None:
    """Make a demo deployment (synthetic data, dev keys, tiers, licences) and serve it."""
    setup_logging()
    folder = folder.resolve()
    cfg = make_demo(folder, rows, port)
    asyncio.run(seed_licences(cfg))
    tokens = demo_tokens(demo_keys(folder))
    tokens_file = write_tokens(folder, tokens)
    url = f"http://127.0.0.1:{port}"
    sql = "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY region"
    click.echo(f"""
Enclave Gateway demo in {folder}
  researcher (alice, tier standard, GB): {tokens.researcher}
  admin (steward):                       {tokens.admin}
  auditor (oversight):                   {tokens.auditor}
  (also bob/open/US and carol/accredited/IE; all tokens in {tokens_file})

Web console, signed in as each role (the token is taken from the link, then dropped):
  researcher: {url}/console#token={tokens.researcher}
  steward:    {url}/console#token={tokens.admin}
  auditor:    {url}/console#token={tokens.auditor}

Try:
  curl -s {url}/v1/queries -H "Authorization: Bearer {tokens.researcher}" \\
       -H 'Content-Type: application/json' \\
       -d '{{"dataset": "visits", "epsilon": 0.5, "sql": "{sql}"}}'
""")
    if no_serve:
        return
    serve(cfg, "127.0.0.1", port)

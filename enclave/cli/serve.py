"""``enclave serve``: run the gateway from a config file."""

from __future__ import annotations

from pathlib import Path

import click
from aiohttp import web

from enclave.cli.common import config_option, get_config, setup_logging
from enclave.errors import EnclaveError
from enclave.web.app import create_app


@click.command("serve")
@config_option
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
def serve_command(config_path: Path | None, host: str | None, port: int | None) -> None:
    """Serve the gateway (binds 127.0.0.1 unless the config says otherwise)."""
    cfg = get_config(config_path)
    setup_logging()
    try:
        web.run_app(
            create_app(cfg),
            host=host or cfg.server.host,
            port=port or cfg.server.port,
            access_log_format='%a "%r" %s %b %Tf',
        )
    except EnclaveError as err:  # start-up failed (store unreachable, policies invalid, ...)
        click.echo(f"error: {err.detail}", err=True)
        raise SystemExit(1) from None

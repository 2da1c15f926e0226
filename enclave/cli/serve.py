"""``enclave serve``: run the gateway from a config file."""

from __future__ import annotations

from pathlib import Path

import click
from aiohttp import web

from enclave.cli.common import config_option, get_config, setup_logging
from enclave.config import Config
from enclave.errors import EnclaveError
from enclave.web.access_log import ACCESS_LOG_FORMAT
from enclave.web.app import create_app
from enclave.web.workers import StartFailed, serve_workers


@click.command("serve")
@config_option
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
def serve_command(config_path: Path | None, host: str | None, port: int | None) -> None:
    """Serve the gateway (binds 127.0.0.1 unless the config says otherwise)."""
    cfg = get_config(config_path)
    setup_logging()
    serve(cfg, host or cfg.server.host, port or cfg.server.port)


def serve(cfg: Config, host: str, port: int) -> None:
    """One process (``server.processes = 1``) or a supervisor and its workers; a start that
    fails ends with one ``error:`` line and exit status 1."""
    try:
        if cfg.server.processes == 1:
            web.run_app(create_app(cfg), host=host, port=port, access_log_format=ACCESS_LOG_FORMAT)
        else:
            serve_workers(cfg, host, port)
    except EnclaveError as err:  # start-up failed (store unreachable, policies invalid, ...)
        click.echo(f"error: {err.detail}", err=True)
        raise SystemExit(1) from None
    except StartFailed as err:
        click.echo(f"error: {err}; the gateway did not start", err=True)
        raise SystemExit(1) from None

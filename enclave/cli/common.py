"""What several CLI commands share: loading the config, opening the store offline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import click

from enclave.config import Config, default_config_path, load_config
from enclave.errors import ConfigError, EnclaveError
from enclave.policy.registry import Registry, registry_for
from enclave.store import open_store
from enclave.store.base import Store

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Path to enclave.toml (default: $ENCLAVE_CONFIG or ./enclave.toml).",
)

out_option = click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (default: standard output).",
)


def get_config(path: Path | None) -> Config:
    try:
        return load_config(path or default_config_path())
    except ConfigError as err:
        for problem in err.problems:
            click.echo(f"config error: {problem}", err=True)
        raise SystemExit(2) from None


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine; an EnclaveError becomes a one-line message and exit status 1."""
    try:
        return asyncio.run(_wrap(coro))
    except EnclaveError as err:
        click.echo(f"error: {err.detail}", err=True)
        raise SystemExit(1) from None


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


@asynccontextmanager
async def offline(cfg: Config) -> AsyncIterator[tuple[Store, Registry]]:
    """The store and registry of a deployment, without serving it."""
    store = open_store(cfg.store.url)
    await store.open()
    try:
        registry = registry_for(store, cfg)
        await registry.seed()
        yield store, registry
    finally:
        await store.close()


def setup_logging(verbose: bool = False, worker: int | None = None) -> None:
    """Log lines to stderr; a worker process (``server.processes`` > 1) names itself."""
    who = "" if worker is None else f"worker {worker} "
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {who}%(levelname)s %(name)s: %(message)s",
    )

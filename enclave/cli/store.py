"""``enclave store``: schema migrations and moving a deployment between stores.

``migrate`` opens the configured store, which applies any pending migration (PostgreSQL under
an advisory lock, SQLite under its write lock, so running it from several replicas or while
they start is safe), and prints the schema version. ``copy`` moves every table verbatim into
an empty store and verifies the audit chain there (``enclave.store_copy``).
"""

from __future__ import annotations

from pathlib import Path

import click

from enclave.cli.common import config_option, get_config, run
from enclave.store import open_store
from enclave.store_copy import PROGRESS_EVERY, copy_store


@click.group("store")
def store_group() -> None:
    """Manage the state store (schema, copies)."""


@store_group.command("migrate")
@config_option
def migrate_command(config_path: Path | None) -> None:
    """Create or upgrade the schema of the configured store."""
    cfg = get_config(config_path)

    async def go() -> int:
        store = open_store(cfg.store.url)
        await store.open()  # migrations run here, under the store's lock
        try:
            return await store.schema_version()
        finally:
            await store.close()

    version = run(go())
    kind = "postgresql" if cfg.store.url.startswith("postgres") else "sqlite"
    click.echo(f"store ({kind}) is at schema version {version}")


@store_group.command("copy")
@click.option("--from", "source", required=True, help="Source store URL (sqlite:///path ...).")
@click.option("--to", "target", required=True, help="Empty target store URL (postgresql://...).")
def copy_command(source: str, target: str) -> None:
    """Copy every licence, revocation, policy version, ledger entry, cached release and audit
    record verbatim into an EMPTY store, then verify the audit chain there.

    Stop the gateways first: writes made during the copy are not copied."""
    report = run(copy_store(source, target, progress=click.echo, every=PROGRESS_EVERY))
    click.echo(report.verdict())
    if not report.ok:
        raise SystemExit(1)

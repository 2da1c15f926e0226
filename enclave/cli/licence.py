"""``enclave licence issue|list|suspend|revoke``: offline licence administration.

Same validation and the same audited store writes as the admin API; the actor recorded in the
audit log is ``--actor`` (default ``cli``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from enclave.audit.record import AuditDraft
from enclave.cli.common import config_option, get_config, offline, run
from enclave.errors import NotFound
from enclave.licences import (
    check_licence_policy,
    licence_digest_fields,
    licence_from_json,
    patch_licence,
)
from enclave.models import Licence, utcnow

actor_option = click.option(
    "--actor",
    default="cli",
    show_default=True,
    help="Who is making the change (recorded in the audit log).",
)


@click.group("licence")
def licence_group() -> None:
    """Issue, list, suspend and revoke licences (offline, against the configured store)."""


@licence_group.command("issue")
@config_option
@click.option("--subject", required=True, help="The token subject (sub) of the licensee.")
@click.option("--organization", required=True)
@click.option("--tier", required=True)
@click.option("--dataset", "datasets", multiple=True, required=True, help="Repeatable.")
@click.option("--purpose", required=True, help="The licensed end use.")
@click.option("--jurisdiction", required=True, help="Two-letter country code, e.g. GB.")
@click.option("--valid-until", required=True, help="Sunset date (ISO 8601).")
@click.option("--valid-from", default=None, help="Start (ISO 8601; default now).")
@actor_option
def issue(
    config_path: Path | None,
    subject: str,
    organization: str,
    tier: str,
    datasets: tuple[str, ...],
    purpose: str,
    jurisdiction: str,
    valid_until: str,
    valid_from: str | None,
    actor: str,
) -> None:
    """Issue a new active licence."""
    body: dict[str, Any] = {
        "subject": subject,
        "organization": organization,
        "tier": tier,
        "datasets": list(datasets),
        "purpose": purpose,
        "jurisdiction": jurisdiction,
        "valid_until": valid_until,
    }
    if valid_from:
        body["valid_from"] = valid_from
    cfg = get_config(config_path)

    async def go() -> Licence:
        lic = licence_from_json(body, utcnow())
        async with offline(cfg) as (store, registry):
            await check_licence_policy(registry, lic)
            await store.insert_licence(
                lic,
                _draft("licence.create", actor, lic, detail={"after": licence_digest_fields(lic)}),
            )
        return lic

    lic = run(go())
    click.echo(json.dumps(lic.to_json(), indent=2))


@licence_group.command("list")
@config_option
@click.option("--subject", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(config_path: Path | None, subject: str | None, as_json: bool) -> None:
    """List licences."""
    cfg = get_config(config_path)

    async def go() -> list[Licence]:
        async with offline(cfg) as (store, _):
            return await store.list_licences(subject)

    licences = run(go())
    if as_json:
        click.echo(json.dumps([lic.to_json() for lic in licences], indent=2))
        return
    for lic in licences:
        click.echo(
            f"{lic.id}  {lic.status:9}  {lic.subject}  tier={lic.tier}  "
            f"datasets={','.join(lic.datasets)}  {lic.jurisdiction}  "
            f"until {lic.valid_until.date().isoformat()}"
        )


def _set_status(
    config_path: Path | None, licence_id: str, status: str, reason: str, actor: str
) -> None:
    cfg = get_config(config_path)

    async def go() -> Licence:
        async with offline(cfg) as (store, _):
            current = await store.get_licence(licence_id)
            if current is None:
                raise NotFound(f"no licence {licence_id}")
            updated, _ = patch_licence(current, {"status": status, "reason": reason}, utcnow())
            lic, _ = await store.update_licence(
                licence_id,
                {"status": updated.status},
                _draft(
                    "licence.update",
                    actor,
                    updated,
                    reason=reason,
                    detail={"changes": {"status": status}},
                ),
            )
            return lic

    lic = run(go())
    click.echo(f"{lic.id} is now {lic.status}")


@licence_group.command("suspend")
@config_option
@click.argument("licence_id")
@click.option("--reason", required=True)
@actor_option
def suspend(config_path: Path | None, licence_id: str, reason: str, actor: str) -> None:
    """Suspend a licence (reversible: PATCH status back to active)."""
    _set_status(config_path, licence_id, "suspended", reason, actor)


@licence_group.command("revoke")
@config_option
@click.argument("licence_id")
@click.option("--reason", required=True)
@actor_option
def revoke(config_path: Path | None, licence_id: str, reason: str, actor: str) -> None:
    """Revoke a licence (final)."""
    _set_status(config_path, licence_id, "revoked", reason, actor)


def _draft(
    action: str,
    actor: str,
    lic: Licence,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditDraft:
    return AuditDraft(
        action=action,
        outcome="ok",
        actor=actor,
        roles=("admin",),
        request_id="cli",
        licence_id=lic.id,
        tier=lic.tier,
        reason=reason,
        client="cli",
        detail=detail,
    )

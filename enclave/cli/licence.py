"""``enclave licence issue|import|list|suspend|reactivate|revoke|extend|retier``: offline
licence administration.

Same validation and the same audited store writes as the admin API; the actor recorded in the
audit log is ``--actor`` (default ``cli``). No second admin can approve anything here, so with
``governance.four_eyes`` on a change that raises risk is refused (propose it through the API):
a change to a licence, a reissue by ``issue`` or ``import`` (the subject holds or held a licence
on one of its datasets); and a licence held by its organisation's suspension is never
reactivated here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from enclave.audit.record import AuditDraft
from enclave.cli.common import config_option, get_config, offline, run
from enclave.config import Config
from enclave.errors import Conflict, NotFound
from enclave.governance.organisations import refuse_if_suspended
from enclave.governance.proposal import NewLicence, held_state
from enclave.governance.risk import reissued, risks
from enclave.inputs import text_problem
from enclave.licence_import import ImportPlan, issue_import, plan_import
from enclave.licences import (
    check_licence_policy,
    licence_digest_fields,
    licence_from_json,
    patch_licence,
)
from enclave.models import Licence, utcnow
from enclave.store.base import Store


def _keepable(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Text an audit record can keep (no NUL, no lone surrogate from a non-UTF-8 argument)."""
    if value is not None and (problem := text_problem(value)) is not None:
        raise click.BadParameter(problem, param=param)
    return value


actor_option = click.option(
    "--actor",
    default="cli",
    show_default=True,
    callback=_keepable,
    help="Who is making the change (recorded in the audit log).",
)


@click.group("licence")
def licence_group() -> None:
    """Issue, list, suspend, reactivate, revoke, extend and re-tier licences (offline)."""


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
            await refuse_if_suspended(store, lic)
            held = await store.licences_for(lic.subject)
            refuse_risks(cfg, reissued(lic, held))
            detail = {"after": licence_digest_fields(lic)}
            draft = _draft("licence.create", actor, lic, detail=detail)
            await store.issue_licence(NewLicence(lic, draft, held_state(held)))
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


def _change(
    config_path: Path | None,
    licence_id: str,
    changes: dict[str, Any],
    reason: str,
    actor: str,
    only_from: str | None = None,
) -> None:
    """Apply ``changes`` with the API's validation (a reason is required) and audit them."""
    cfg = get_config(config_path)

    async def go() -> Licence:
        async with offline(cfg) as (store, registry):
            current = await store.get_licence(licence_id)
            if current is None:
                raise NotFound(f"no licence {licence_id}")
            if only_from is not None and current.status != only_from:
                raise Conflict(f"{licence_id} is {current.status}, not {only_from}")
            updated, _ = patch_licence(current, {**changes, "reason": reason}, utcnow())
            await check_licence_policy(registry, updated, before=current)
            await refuse_without_second_admin(cfg, store, current, updated)
            lic, _ = await store.update_licence(
                licence_id,
                {k: getattr(updated, k) for k in changes},
                _draft(
                    "licence.update", actor, updated, reason=reason, detail={"changes": changes}
                ),
            )
            return lic

    lic = run(go())
    click.echo(
        f"{lic.id} is now {lic.status}, tier {lic.tier}, until {lic.valid_until.date().isoformat()}"
    )


async def refuse_without_second_admin(
    cfg: Config, store: Store, current: Licence, updated: Licence
) -> None:
    """Offline, no second admin can approve: a licence held by its organisation's suspension
    is never reactivated here, and with ``governance.four_eyes`` on neither is any change that
    raises risk (``docs/governance.md``: propose it through the API)."""
    if updated.status == "active" and current.status != "active":
        if await store.hold_of(current.id) is not None:
            raise Conflict(f"{current.id} is suspended with its organisation: reactivate the "
                           "organisation through the API (a second admin approves)")  # fmt: skip
    refuse_risks(cfg, risks(current, updated))


def refuse_risks(cfg: Config, found: list[str]) -> None:
    """With ``governance.four_eyes`` on, a change that raises risk (``found``) is refused."""
    if cfg.governance.four_eyes and found:
        raise Conflict(f"this change raises risk ({'; '.join(found)}) and governance.four_eyes "
                       "is on: propose it through the API for a second admin")  # fmt: skip


reason_option = click.option(
    "--reason", required=True, callback=_keepable, help="Why (kept in the audit log)."
)


@licence_group.command("suspend")
@config_option
@click.argument("licence_id")
@reason_option
@actor_option
def suspend(config_path: Path | None, licence_id: str, reason: str, actor: str) -> None:
    """Suspend a licence (reversible: ``reactivate``)."""
    _change(config_path, licence_id, {"status": "suspended"}, reason, actor)


@licence_group.command("reactivate")
@config_option
@click.argument("licence_id")
@reason_option
@actor_option
def reactivate(config_path: Path | None, licence_id: str, reason: str, actor: str) -> None:
    """Make a suspended licence active again."""
    _change(config_path, licence_id, {"status": "active"}, reason, actor, only_from="suspended")


@licence_group.command("revoke")
@config_option
@click.argument("licence_id")
@reason_option
@actor_option
def revoke(config_path: Path | None, licence_id: str, reason: str, actor: str) -> None:
    """Revoke a licence (final)."""
    _change(config_path, licence_id, {"status": "revoked"}, reason, actor)


@licence_group.command("extend")
@config_option
@click.argument("licence_id")
@click.option("--valid-until", required=True, help="New sunset date (ISO 8601).")
@reason_option
@actor_option
def extend(
    config_path: Path | None, licence_id: str, valid_until: str, reason: str, actor: str
) -> None:
    """Move a licence's sunset date."""
    _change(config_path, licence_id, {"valid_until": valid_until}, reason, actor)


@licence_group.command("retier")
@config_option
@click.argument("licence_id")
@click.option("--tier", required=True, help="The new tier.")
@reason_option
@actor_option
def retier(config_path: Path | None, licence_id: str, tier: str, reason: str, actor: str) -> None:
    """Move a licence to another tier (takes effect on its next request)."""
    _change(config_path, licence_id, {"tier": tier}, reason, actor)


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


@licence_group.command("import")
@config_option
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row, list every problem, issue none.")
@click.option(
    "--reason", default=None, callback=_keepable, help="Recorded on each licence's audit record."
)
@actor_option
def import_(
    config_path: Path | None, csv_file: Path, dry_run: bool, reason: str | None, actor: str
) -> None:
    """Issue licences from a CSV file: all rows or, on any problem, none."""
    cfg = get_config(config_path)
    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{csv_file}: cannot read ({type(exc).__name__})") from None

    async def go() -> ImportPlan:
        async with offline(cfg) as (store, registry):
            plan = await plan_import(
                text, store, registry, utcnow(), four_eyes=cfg.governance.four_eyes
            )
            if plan.problems or dry_run:
                return plan
            await issue_import(
                store,
                plan,
                lambda lic: _draft(
                    "licence.create", actor, lic, reason=reason,
                    detail={"after": licence_digest_fields(lic), "import": csv_file.name},
                ),
            )  # fmt: skip
            return plan

    plan = run(go())
    for problem in plan.problems:
        click.echo(problem, err=True)
    if plan.problems:
        click.echo(f"error: {len(plan.problems)} problem(s); nothing was issued", err=True)
        raise SystemExit(1)
    click.echo(f"{len(plan.licences)} licence(s) {'would be issued' if dry_run else 'issued'}")
    for lic in plan.licences:
        click.echo(f"  {lic.id}  {lic.subject}  tier={lic.tier}  {','.join(lic.datasets)}")

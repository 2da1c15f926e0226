"""``enclave audit verify|export|head|key``: the audit trail offline, against the store named in
a config, or (``verify --file``) against an export file alone.

``verify`` and ``head`` only read the store. ``export`` appends an ``audit.export`` record
first (actor ``cli:<os user>``), as the HTTP export does, so an export leaves a trace whoever
made it. Progress goes to stderr every 100,000 records; the verdict to stdout; exit status 1
when the log is invalid (2 for usage errors).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from enclave.audit import export
from enclave.audit.chain import VerifyResult
from enclave.audit.record import AuditDraft
from enclave.audit.signing import (
    HeadError,
    SignedHead,
    load_or_create_signer,
    load_public_key,
    verify_head,
)
from enclave.audit.transparency_check import check_report
from enclave.cli.common import config_option, get_config, out_option, run
from enclave.config import Config, sqlite_path
from enclave.store import connected_store


@click.group("audit")
def audit_group() -> None:
    """Verify and export the audit log offline."""


def store_config(config_path: Path | None) -> Config:
    """The config, refusing a SQLite store that does not exist yet (opening it would create an
    empty log, which would verify as a valid log of 0 records)."""
    cfg = get_config(config_path)
    url = cfg.store.url
    if url.startswith("sqlite:///") and not Path(sqlite_path(url)).exists():
        click.echo(f"error: no store at {sqlite_path(url)}", err=True)
        raise SystemExit(1)
    return cfg


def _progress(count: int) -> None:
    click.echo(f"... {count:,} records checked", err=True)


def _ledger_progress(count: int) -> None:
    click.echo(f"... {count:,} records checked against the ledger", err=True)


def _read_head(path: Path | None, key_path: Path | None) -> tuple[SignedHead | None, Any]:
    if path is None and key_path is None:
        return None, None
    try:
        key = load_public_key(key_path.read_bytes()) if key_path else None
        head = SignedHead.from_json(json.loads(path.read_bytes())) if path else None
    except (HeadError, ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    if head is not None and key is None:
        raise click.UsageError("--head needs --key (the gateway's public key) to be checked")
    return head, key


@audit_group.command("verify")
@config_option
@click.option(
    "--file",
    "file_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify a JSONL export instead of the store.",
)
@click.option(
    "--head",
    "head_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A signed head saved earlier (head.json); the log must extend it.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's public key (PEM or JWK, from GET /v1/audit/key).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A transparency report (JSON) to check against the --file export.",
)
@click.option(
    "--ledger",
    is_flag=True,
    help="Also check the budget ledger, its totals and the grants against the records.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_command(
    config_path: Path | None,
    file_path: Path | None,
    head_path: Path | None,
    key_path: Path | None,
    report_path: Path | None,
    ledger: bool,
    as_json: bool,
) -> None:
    """Recompute the hash chain; with --head and --key, check it extends a saved head; with
    --report, check that a transparency report is the one the export gives; with --ledger,
    check the store's budget ledger against the records."""
    saved, key = _read_head(head_path, key_path)
    if report_path is not None and file_path is None:
        raise click.UsageError("--report needs --file (the export to check it against)")
    if ledger and file_path is not None:
        raise click.UsageError("--ledger checks a store (--config), not an export file")
    if file_path is not None:
        with file_path.open("rb") as fh:
            verdict = export.verify_export(fh, saved, key, _progress)
        result, problems, notes = verdict.result, list(verdict.problems), list(verdict.notes)
        if report_path is not None:
            problems += _report_problems(report_path, file_path, key)
    else:
        cfg = store_config(config_path)
        result, problems = run(_verify_store(cfg, saved, key, ledger))
        notes = []
    _report(result, problems, notes, as_json)


def _report_problems(report_path: Path, file_path: Path, key: Any) -> list[str]:
    """Why the report is not the one the export gives (its signed head is checked against
    ``key`` when there is one)."""
    try:
        report = json.loads(report_path.read_bytes())
    except ValueError:
        return ["report: not a JSON file"]
    try:
        head = SignedHead.from_json(report.get("signed_head") if isinstance(report, dict) else None)
    except HeadError:
        head = None  # check_report names the problem
    with file_path.open("rb") as fh:
        problems = [f"report: {p}" for p in check_report(report, fh)]
    if head is not None and key is not None and (reason := verify_head(head, key)):
        problems.append(f"report: signed_head: {reason}")
    return problems


async def _verify_store(
    cfg: Config, saved: SignedHead | None, key: Any, ledger: bool = False
) -> tuple[VerifyResult, list[str]]:
    async with connected_store(cfg.store.url) as store:
        watch = saved.seq if saved is not None else -1
        result, watched = await export.verify_store(store, None, _progress, watch=watch)
        found = (await store.ledger_check(_ledger_progress))[1] if ledger else []
    problems = []
    if not result.valid:
        problems.append(f"chain broken at seq {result.first_bad_seq}: {result.reason}")
    if saved is not None:
        problems += export.head_problems(result, watched, saved, key)
    return result, problems + [str(p) for p in found]


def _report(result: VerifyResult, problems: list[str], notes: list[str], as_json: bool) -> None:
    if as_json:
        body = {**result.to_json(), "count": result.count, "problems": problems, "notes": notes}
        body["valid"] = not problems
        click.echo(json.dumps(body))
    elif problems:
        click.echo(f"INVALID: {len(problems)} problem(s); {result.count:,} records verified")
        for problem in problems:
            click.echo(f"  - {problem}")
    else:
        click.echo(f"VALID: {result.count:,} records; head {result.head}")
    for note in notes if not as_json else []:
        click.echo(f"  note: {note}")
    if problems:
        raise SystemExit(1)


@audit_group.command("export")
@config_option
@click.option("--format", "fmt", type=click.Choice(export.FORMATS), default="jsonl")
@out_option
def export_command(config_path: Path | None, fmt: str, out_path: Path | None) -> None:
    """Export the whole log (JSONL ends with a signed head; CSV is for spreadsheets)."""
    cfg = store_config(config_path)
    if out_path is None:
        run(_export(cfg, fmt, sys.stdout.buffer))
        return
    with out_path.open("wb") as fh:
        count = run(_export(cfg, fmt, fh))
    click.echo(f"exported {count:,} records to {out_path}", err=True)


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def _export(cfg: Config, fmt: str, out: IO[bytes]) -> int:
    signer = load_or_create_signer(cfg.engine.state_dir)
    async with connected_store(cfg.store.url) as store:
        draft = AuditDraft(
            action="audit.export", outcome="ok", actor=_cli_actor(), detail={"format": fmt}
        )
        upto = (await store.append(draft)).seq
        if fmt == "csv":
            chunks = export.stream_csv(store, upto)
        else:
            chunks = export.stream_jsonl(store, upto, signer.sign, _progress)
        async for chunk in chunks:
            out.write(chunk)
    out.flush()
    return upto


@audit_group.command("head")
@config_option
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
def head_command(config_path: Path | None, out_path: Path) -> None:
    """Verify the store's chain and save a signed head of it (keep it somewhere safe)."""
    cfg = store_config(config_path)
    result, _ = run(_verify_only(cfg))
    if not result.valid:
        click.echo(f"INVALID: chain broken at seq {result.first_bad_seq}: {result.reason}")
        raise SystemExit(1)
    head = load_or_create_signer(cfg.engine.state_dir).sign(result.count, result.head)
    out_path.write_text(json.dumps(head.to_json(), indent=2) + "\n")
    click.echo(f"signed head at seq {head.seq} written to {out_path}")


async def _verify_only(cfg: Config) -> tuple[VerifyResult, str | None]:
    async with connected_store(cfg.store.url) as store:
        return await export.verify_store(store, None, _progress)


@audit_group.command("key")
@config_option
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path))
def key_command(config_path: Path | None, out_path: Path | None) -> None:
    """Write the gateway's public head-signing key (PEM), as GET /v1/audit/key serves it."""
    cfg = get_config(config_path)
    signer = load_or_create_signer(cfg.engine.state_dir)
    if out_path is None:
        click.echo(signer.public_pem(), nl=False)
    else:
        out_path.write_text(signer.public_pem())
        click.echo(f"key {signer.key_id} written to {out_path}", err=True)

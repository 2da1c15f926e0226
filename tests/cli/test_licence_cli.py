"""`enclave licence issue|list|suspend|revoke` against a real store, audited like the API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner

from enclave.audit.chain import verify
from enclave.cli import main
from enclave.store import open_store


def _records(url: str) -> list[Any]:
    async def go() -> list[Any]:
        store = open_store(url)
        await store.open()
        try:
            return [r async for r in store.audit_iter()]
        finally:
            await store.close()

    return asyncio.run(go())


def test_licence_lifecycle(config_factory: Any) -> None:
    cfg = config_factory()
    runner = CliRunner()
    base = ["--config", str(cfg.path)]
    issued = runner.invoke(
        main,
        [
            "licence",
            "issue",
            *base,
            "--subject",
            "alice",
            "--organization",
            "Uni",
            "--tier",
            "standard",
            "--dataset",
            "visits",
            "--purpose",
            "study",
            "--jurisdiction",
            "GB",
            "--valid-until",
            "2099-01-01",
        ],
    )
    assert issued.exit_code == 0, issued.output
    lic = json.loads(issued.output)
    assert lic["status"] == "active" and lic["id"].startswith("lic_")
    dup = runner.invoke(
        main,
        [
            "licence",
            "issue",
            *base,
            "--subject",
            "alice",
            "--organization",
            "Uni",
            "--tier",
            "standard",
            "--dataset",
            "visits",
            "--purpose",
            "again",
            "--jurisdiction",
            "GB",
            "--valid-until",
            "2099-01-01",
        ],
    )
    assert dup.exit_code == 1 and "active licence" in dup.output
    listed = runner.invoke(main, ["licence", "list", *base])
    assert lic["id"] in listed.output and "active" in listed.output
    sus = runner.invoke(main, ["licence", "suspend", lic["id"], *base, "--reason", "review"])
    assert sus.exit_code == 0 and "suspended" in sus.output
    rev = runner.invoke(main, ["licence", "revoke", lic["id"], *base, "--reason", "breach"])
    assert rev.exit_code == 0 and "revoked" in rev.output
    again = runner.invoke(main, ["licence", "suspend", lic["id"], *base, "--reason", "x"])
    assert again.exit_code == 1 and "revoked" in again.output
    recs = _records(cfg.store.url)
    assert [r.action for r in recs] == ["licence.create", "licence.update", "licence.update"]
    assert recs[1].reason == "review" and recs[2].reason == "breach"
    assert verify(recs).valid


def test_licence_issue_reports_bad_input(config_factory: Any) -> None:
    cfg = config_factory()
    out = CliRunner().invoke(
        main,
        [
            "licence",
            "issue",
            "--config",
            str(cfg.path),
            "--subject",
            "a",
            "--organization",
            "o",
            "--tier",
            "nosuch",
            "--dataset",
            "visits",
            "--purpose",
            "p",
            "--jurisdiction",
            "gb",
            "--valid-until",
            "yesterday",
        ],
    )
    assert out.exit_code == 1
    assert "jurisdiction" in out.output and "valid_until" in out.output


def test_bad_config_lists_every_problem(tmp_path: Any) -> None:
    path = tmp_path / "enclave.toml"
    path.write_text('[server]\nport = "x"\nbogus = 1\n[auth]\nalgorithms = ["HS256"]\n')
    out = CliRunner().invoke(main, ["licence", "list", "--config", str(path)])
    assert out.exit_code == 2
    for needle in ("server.port", "server.bogus", "auth.issuer", "HS256", "jwks"):
        assert needle in out.output


def test_reactivate_extend_and_retier_need_a_reason_and_are_audited(config_factory: Any) -> None:
    cfg = config_factory()
    runner = CliRunner()
    base = ["--config", str(cfg.path)]
    issued = runner.invoke(
        main,
        ["licence", "issue", *base, "--subject", "bea", "--organization", "Uni", "--tier",
         "open", "--dataset", "visits", "--purpose", "study", "--jurisdiction", "GB",
         "--valid-until", "2099-01-01"],
    )  # fmt: skip
    lid = json.loads(issued.output)["id"]

    def cli(*args: str) -> Any:
        return runner.invoke(main, ["licence", *args[:1], lid, *base, *args[1:]])

    assert cli("reactivate", "--reason", "x").exit_code == 1  # only from suspended
    assert cli("extend", "--valid-until", "2100-01-01").exit_code == 2  # reason required
    assert cli("suspend", "--reason", "review").exit_code == 0
    back = cli("reactivate", "--reason", "review passed")
    assert back.exit_code == 0 and "is now active" in back.output
    longer = cli("extend", "--valid-until", "2100-06-30", "--reason", "renewal")
    assert longer.exit_code == 0 and "until 2100-06-30" in longer.output
    bad = cli("retier", "--tier", "platinum", "--reason", "upgrade")
    assert bad.exit_code == 1 and "unknown tier" in bad.output
    up = cli("retier", "--tier", "standard", "--reason", "accredited now")
    assert up.exit_code == 0 and "tier standard" in up.output
    recs = [r for r in _records(cfg.store.url) if r.licence_id == lid]
    assert [(r.action, r.reason) for r in recs[1:]] == [
        ("licence.update", "review"),
        ("licence.update", "review passed"),
        ("licence.update", "renewal"),
        ("licence.update", "accredited now"),
    ]
    assert recs[-1].detail == {"changes": {"tier": "standard"}}
    assert all(r.actor == "cli" for r in recs)


def test_issue_refuses_a_jurisdiction_the_tier_forbids(config_factory: Any) -> None:
    cfg = config_factory()
    args = ["licence", "issue", "--config", str(cfg.path), "--subject", "alice"]
    args += ["--organization", "Uni", "--tier", "accredited", "--dataset", "visits"]
    args += ["--purpose", "study", "--jurisdiction", "US", "--valid-until", "2099-01-01"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1
    assert "US is not allowed by tier 'accredited'" in out.output
    listed = CliRunner().invoke(main, ["licence", "list", "--config", str(cfg.path), "--json"])
    assert json.loads(listed.output) == []


@pytest.mark.parametrize("bad", ["ops\x00", "ops\udcff"])  # \udcff: a non-UTF-8 argv byte
@pytest.mark.parametrize("option", ["--actor", "--reason"])
def test_text_no_audit_record_can_keep_is_refused_before_anything_runs(
    config_factory: Any, bad: str, option: str
) -> None:
    cfg = config_factory()
    args = ["licence", "suspend", "lic_x", "--config", str(cfg.path), "--reason", "review"]
    out = CliRunner().invoke(main, [*args, option, bad])
    assert out.exit_code == 2, out.output  # click's usage error, no traceback
    assert f"Invalid value for '{option}'" in out.output

"""Offline licence changes meet four-eyes too: no second admin can approve at the command
line, so with ``governance.four_eyes`` on a change that raises risk is refused there (lowering
risk still works), a reissue too (``issue`` or ``import``), and a licence held by its
organisation's suspension is never reactivated from the CLI, whatever the switch says."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from enclave.audit.record import AuditDraft
from enclave.cli import main
from enclave.cli.common import offline, run


def _invoke_issue(runner: CliRunner, base: list[str], org: str = "Uni", tier: str = "open") -> Any:
    """``enclave licence issue`` for bea on visits; the CLI's result."""
    return runner.invoke(
        main,
        ["licence", "issue", *base, "--subject", "bea", "--organization", org, "--tier",
         tier, "--dataset", "visits", "--purpose", "study", "--jurisdiction", "GB",
         "--valid-until", "2099-01-01"],
    )  # fmt: skip


def _issue(runner: CliRunner, base: list[str], org: str = "Uni") -> str:
    issued = _invoke_issue(runner, base, org)
    assert issued.exit_code == 0, issued.output
    return str(json.loads(issued.output)["id"])


def test_four_eyes_refuses_raising_risk_offline(config_factory: Any) -> None:
    cfg = config_factory(governance={"four_eyes": True})
    runner, base = CliRunner(), ["--config", str(cfg.path)]
    lid = _issue(runner, base)

    def cli(*args: str) -> Any:
        return runner.invoke(main, ["licence", *args[:1], lid, *base, *args[1:]])

    assert cli("suspend", "--reason", "review").exit_code == 0  # lowers risk
    back = cli("reactivate", "--reason", "review passed")
    assert back.exit_code == 1 and "governance.four_eyes" in back.output
    longer = cli("extend", "--valid-until", "2100-06-30", "--reason", "renewal")
    assert longer.exit_code == 1 and "validity window widened" in longer.output
    assert cli("revoke", "--reason", "ended").exit_code == 0


def test_four_eyes_refuses_a_reissue_offline(config_factory: Any, tmp_path: Any) -> None:
    cfg = config_factory(governance={"four_eyes": True})
    runner, base = CliRunner(), ["--config", str(cfg.path)]
    lid = _issue(runner, base)  # a first licence is issued
    assert (
        runner.invoke(main, ["licence", "revoke", lid, *base, "--reason", "ended"]).exit_code == 0
    )

    again = _invoke_issue(runner, base, tier="accredited")
    assert again.exit_code == 1, again.output
    assert f"licence reissued: 'bea' has held {lid} on visits (revoked)" in again.output
    assert "governance.four_eyes" in again.output

    rows = tmp_path / "licences.csv"
    rows.write_text(
        "subject,organization,tier,datasets,purpose,jurisdiction,valid_until\n"
        "cai,Uni,open,visits,study,GB,2099-01-01\n"
        "bea,Uni,accredited,visits,study,GB,2099-01-01\n"
    )
    imported = runner.invoke(main, ["licence", "import", str(rows), *base, "--reason", "intake"])
    assert imported.exit_code == 1
    assert "row 3: licence reissued: 'bea'" in imported.output
    assert "nothing was issued" in imported.output
    listed = runner.invoke(main, ["licence", "list", *base, "--json"])
    assert [lic["id"] for lic in json.loads(listed.output)] == [lid]


def test_a_held_licence_is_not_reactivated_offline(config_factory: Any) -> None:
    cfg = config_factory()  # four-eyes off
    runner, base = CliRunner(), ["--config", str(cfg.path)]
    lid = _issue(runner, base, org="Northwind")

    async def suspend() -> None:
        async with offline(cfg) as (store, _):
            draft = AuditDraft("organisation.suspend", "ok", "stella", reason="BR-9")
            per = AuditDraft("licence.update", "ok", "stella", reason="BR-9")
            await store.suspend_organisation("Northwind", "BR-9", draft, per)

    run(suspend())
    back = runner.invoke(main, ["licence", "reactivate", lid, *base, "--reason", "x"])
    assert back.exit_code == 1 and "organisation" in back.output

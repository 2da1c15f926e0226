"""``enclave licence import``: CSV rows checked first, every problem listed, all or none."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from enclave.audit.log import AuditFilter
from enclave.cli import main
from enclave.store import open_store

HEADER = "subject,organization,tier,datasets,purpose,jurisdiction,valid_until\n"


def _state(url: str) -> tuple[list[Any], list[Any]]:
    async def go() -> tuple[list[Any], list[Any]]:
        store = open_store(url)
        await store.open()
        try:
            lics = await store.list_licences(None)
            recs = await store.audit_events(AuditFilter(action="licence.create"))
            return lics, recs
        finally:
            await store.close()

    return asyncio.run(go())


def test_import_lists_every_problem_and_issues_nothing(config_factory: Any, tmp_path: Path) -> None:
    cfg = config_factory()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + "ann,Uni A,standard,visits,study,GB,2099-01-01\n"
        + "ben,Uni B,platinum,visits;nowhere,study,gb,2099-01-01\n"
        + "ann,Uni A,open,visits,again,GB,2099-01-01\n"
        + "cat,Uni C,open,visits,study,GB,\n"
    )
    out = CliRunner().invoke(main, ["licence", "import", str(bad), "--config", str(cfg.path)])
    assert out.exit_code == 1
    for problem in (
        "row 3: jurisdiction: must be a two-letter upper-case country code",
        "row 3: tier: unknown tier 'platinum'",
        "row 3: datasets: unknown dataset 'nowhere'",
        "row 4: datasets: ann already holds row 2 for visits",
        "row 5: valid_until: required (a licence has a sunset date)",
        "error: 5 problem(s); nothing was issued",
    ):
        assert problem in out.output, problem
    assert _state(cfg.store.url) == ([], [])

    header = tmp_path / "header.csv"
    header.write_text("subject,organisation\nann,Uni\n")
    out = CliRunner().invoke(main, ["licence", "import", str(header), "--config", str(cfg.path)])
    assert out.exit_code == 1
    assert "header: missing column organization" in out.output
    assert "header: unknown column organisation" in out.output


def test_import_dry_run_then_apply(config_factory: Any, tmp_path: Path) -> None:
    cfg = config_factory()
    good = tmp_path / "good.csv"
    good.write_text(
        HEADER
        + "ann,Uni A,standard,visits,study,GB,2099-01-01\n"
        + 'ben,"Uni B, Dept. of Health",open,visits,teaching,US,2099-06-30\n'
    )
    base = ["licence", "import", str(good), "--config", str(cfg.path)]
    dry = CliRunner().invoke(main, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 licence(s) would be issued" in dry.output
    assert _state(cfg.store.url) == ([], [])

    done = CliRunner().invoke(main, [*base, "--reason", "DSA-7 cohort", "--actor", "stella"])
    assert done.exit_code == 0, done.output
    lics, recs = _state(cfg.store.url)
    assert sorted((x.subject, x.organization, x.tier) for x in lics) == [
        ("ann", "Uni A", "standard"),
        ("ben", "Uni B, Dept. of Health", "open"),
    ]
    assert [(r.actor, r.reason, r.detail["import"]) for r in recs] == [
        ("stella", "DSA-7 cohort", "good.csv")
    ] * 2
    again = CliRunner().invoke(main, [*base, "--dry-run"])  # now each would be a second licence
    assert again.exit_code == 1 and "ann already holds licence lic_" in again.output


def test_a_field_past_the_csv_limit_is_a_problem_not_a_crash(
    config_factory: Any, tmp_path: Path
) -> None:
    """The csv module refuses a field over 131,072 characters by raising: that is a listed
    problem (with its row), never a traceback, and nothing is issued."""
    cfg = config_factory()
    big = tmp_path / "big.csv"
    big.write_text(
        HEADER
        + "ann,Uni A,open,visits,study,GB,2099-01-01\n"
        + "ben,Uni B,open,visits,"
        + "x" * 200_000
        + ",GB,2099-01-01\n"
    )
    out = CliRunner().invoke(main, ["licence", "import", str(big), "--config", str(cfg.path)])
    assert out.exit_code == 1, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert "row 3: cannot be read as CSV (field larger than field limit (131072))" in out.output
    assert _state(cfg.store.url) == ([], [])

"""`enclave synthetic` against a live loopback gateway: a refusal (exit 1), then a release
saved as CSV with its report, and the cached repeat that spends nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from enclave.cli import main
from tests.conftest import ConfigFactory
from tests.web.test_synthetic import JOBS, _deploy


async def invoke(args: list[str]) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, ["synthetic", *args])


@pytest.mark.slow
async def test_refused_then_saved_then_cached(
    make_gateway: Any, config_factory: ConfigFactory, tmp_path: Path
) -> None:
    _deploy(config_factory)
    gw = await make_gateway(jobs=JOBS)
    await gw.licence(tier="research", datasets=("pairs",))
    await gw.licence(subject="bob", tier="open", datasets=("pairs",))
    url = str(gw.client.make_url(""))
    out = tmp_path / "pairs.csv"
    args = ["--url", url, "--dataset", "pairs", "--column", "a", "--column", "b"]
    args += ["--epsilon", "0.5", "--rows", "200", "--out", str(out)]
    refused = await invoke([*args, "--token", gw.tokens("bob")])
    assert refused.exit_code == 1
    assert "error: " in refused.stderr and "does not allow synthetic" in refused.stderr
    saved = await invoke([*args, "--token", gw.tokens("alice")])
    assert saved.exit_code == 0, saved.output
    assert "200 rows saved" in saved.stdout and "(epsilon spent 0.5)" in saved.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "a,b" and len(lines) == 201
    report = json.loads((tmp_path / "pairs.csv.report.json").read_text())
    assert report["epsilon"] <= 0.5 and report["rows"] == 200
    again = await invoke([*args, "--token", gw.tokens("alice")])
    assert again.exit_code == 0 and "(epsilon spent 0.0)" in again.stdout

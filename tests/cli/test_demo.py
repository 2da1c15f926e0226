"""`enclave demo --no-serve` builds a working deployment; the printed token answers a query."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from enclave.cli import main
from enclave.config import load_config
from enclave.web.app import create_app


async def test_demo_deployment_answers_the_printed_query(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    folder = tmp_path / "demo"
    # the CLI runs its own event loop, so it runs in a thread beside the test's loop
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["demo", "--dir", str(folder), "--rows", "5000", "--port", "18080", "--no-serve"],
    )
    assert result.exit_code == 0, result.output
    assert "curl -s http://127.0.0.1:18080/v1/queries" in result.output
    tokens = dict(line.split("=", 1) for line in (folder / "tokens.env").read_text().splitlines())
    for role in ("RESEARCHER", "ADMIN", "AUDITOR"):  # console links signed in as each role
        assert f"http://127.0.0.1:18080/console#token={tokens[role + '_TOKEN']}" in result.output
    client = await aiohttp_client(create_app(load_config(folder / "enclave.toml")))
    resp = await client.post(
        "/v1/queries",
        json={
            "dataset": "visits",
            "epsilon": 0.5,
            "sql": "SELECT region, COUNT(*) AS n, "
            "AVG(cost) AS mean_cost FROM visits GROUP BY region",
        },
        headers={"Authorization": f"Bearer {tokens['RESEARCHER_TOKEN']}"},
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert len(body["rows"]) == 5
    for role_token, path in (("ADMIN_TOKEN", "/v1/admin/licences"),):
        r = await client.get(path, headers={"Authorization": f"Bearer {tokens[role_token]}"})
        assert r.status == 200
        assert len((await r.json())["licences"]) == 3
    # a second run reuses the folder (no new licences, same data)
    again = await asyncio.to_thread(
        CliRunner().invoke, main, ["demo", "--dir", str(folder), "--no-serve"]
    )
    assert again.exit_code == 0, again.output
    _assert_private(folder)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_private(folder: Path) -> None:
    """Live tokens and the signing key are readable by their owner alone."""
    for sub in (folder, folder / "keys", folder / "state"):
        assert _mode(sub) == 0o700, sub
    for secret in (folder / "tokens.env", folder / "keys" / "private.pem"):
        assert _mode(secret) == 0o600, secret


async def test_demo_secrets_are_private_even_when_an_older_run_left_them_open(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "demo"
    args = ["demo", "--dir", str(folder), "--rows", "1000", "--no-serve"]
    first = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert first.exit_code == 0, first.output
    _assert_private(folder)
    # an older version wrote these world-readable: a new run closes them again
    for path in (folder, folder / "keys", folder / "state"):
        path.chmod(0o755)
    for path in (folder / "tokens.env", folder / "keys" / "private.pem"):
        path.chmod(0o644)
    again = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert again.exit_code == 0, again.output
    _assert_private(folder)


def test_the_default_demo_folder_is_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[2]
    ignored = (root / ".gitignore").read_text().split()
    assert "enclave-demo/" in ignored

"""`enclave query` against a live loopback gateway: table, --json, --estimate, ENCLAVE_TOKEN,
errors and usage. The CLI runs its own event loop, so it runs in a thread beside the test's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from enclave.cli import main
from enclave.client.table import format_table, format_value

SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY region"


async def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, ["query", *args], env=env)


async def gateway(make_gateway: Any) -> tuple[str, str]:
    gw = await make_gateway()
    await gw.licence()
    return str(gw.client.make_url("")), gw.tokens("alice", ["researcher"])


async def test_json_then_cached_table(make_gateway: Any) -> None:
    url, token = await gateway(make_gateway)
    base = ["--url", url, "--token", token, "--dataset", "visits", "--epsilon", "0.5"]
    first = await invoke([*base, "--json", SQL])
    assert first.exit_code == 0, first.output
    raw = json.loads(first.stdout)
    assert raw["columns"] == ["region", "n", "mean_cost"] and raw["cached"] is False
    assert raw["budget"]["epsilon_remaining"] == 4.5

    table = await invoke([*base, SQL])  # the same query again: the cached release
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    header, rule, *rest = lines
    assert header.split() == ["region", "n", "mean_cost"]
    assert set(rule) == {"-", " "}
    body = rest[: len(raw["rows"])]
    assert len({len(line) for line in [header, rule, *body]}) == 1  # columns aligned
    for row, line in zip(raw["rows"], body, strict=True):
        n_ci = raw["accuracy"]["n"]["ci95"]
        cost_ci = raw["accuracy"]["mean_cost"]["ci95"]
        cells = [row[0], format_value(row[1], n_ci), format_value(row[2], cost_ci)]
        assert line.split() == " ".join(cells).split()
        assert " ±" in line
    out = table.stdout
    assert f"(cached) a repeat of {raw['query_id']}: nothing spent" in out
    assert "spent:         epsilon 0, delta 0" in out
    assert "budget left:   epsilon 4.5, delta 1e-06 (never renews)" in out
    assert table.stderr == ""


async def test_token_from_environment_and_estimate(make_gateway: Any) -> None:
    url, token = await gateway(make_gateway)
    env = {"ENCLAVE_TOKEN": token}
    args = ["--url", url, "--dataset", "visits", "--epsilon", "0.25", "--estimate", SQL]
    est = await invoke(args, env=env)
    assert est.exit_code == 0, est.output
    out = est.stdout
    assert "cost:          epsilon 0.25, delta 0" in out
    assert "cached:        no" in out and "within budget: yes" in out
    assert "budget left:   epsilon 5, delta 1e-06 (never renews)" in out
    assert "  n          ±" in out and "  mean_cost  " in out

    as_json = await invoke([*args[:-1], "--json", SQL], env=env)
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert body["epsilon"] == 0.25 and body["within_budget"] is True

    # without --epsilon the tier's default_epsilon applies; a fresh query, nothing is cached
    ran = await invoke(
        ["--url", url, "--dataset", "visits", "SELECT COUNT(*) AS n FROM visits"], env
    )
    assert ran.exit_code == 0, ran.output
    assert "spent:         epsilon 0.1, delta 0" in ran.stdout and "(cached)" not in ran.stdout


async def test_refusal_prints_title_and_detail_and_exits_1(make_gateway: Any) -> None:
    url, token = await gateway(make_gateway)
    base = ["--url", url, "--token", token]
    missing = await invoke([*base, "--dataset", "nosuch", SQL])
    assert missing.exit_code == 1
    assert missing.stderr == "error: Not found: unknown dataset 'nosuch'\n"
    assert missing.stdout == ""

    unsupported = await invoke([*base, "--dataset", "visits", "SELECT * FROM visits"])
    assert unsupported.exit_code == 1
    assert unsupported.stderr.startswith("error: Unsupported query: ")

    denied = await invoke(["--url", url, "--token", "x" + token, "--dataset", "visits", SQL])
    assert denied.exit_code == 1
    assert denied.stderr.startswith("error: Invalid token")
    assert token not in denied.stderr


async def test_unreachable_gateway_exits_1() -> None:
    result = await invoke(
        ["--url", "http://127.0.0.1:9", "--token", "t", "--dataset", "visits", SQL]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Service unavailable: could not reach the gateway")


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "http://127.0.0.1:9", "--dataset", "visits", SQL],  # no token anywhere
        ["--url", "http://127.0.0.1:9", "--token", "t", SQL],  # no dataset
        ["--url", "http://127.0.0.1:9", "--token", "t", "--dataset", "v", "--epsilon", "0", SQL],
        ["--url", "127.0.0.1:9", "--token", "t", "--dataset", "visits", SQL],  # not a URL
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["query", *args])
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(
    ("value", "ci95", "shown"),
    [
        (1234.4, 11.9, "1234 ±12"),
        (10412, 11.9, "10412 ±12"),
        (1893.24, 4.1, "1893.2 ±4.1"),
        (0.01234, 0.0034, "0.0123 ±0.0034"),
        (52.0, None, "52"),
        (None, 3.0, "-"),
        ("north", None, "north"),
    ],
)
def test_values_are_rounded_to_their_noise(value: Any, ci95: float | None, shown: str) -> None:
    assert format_value(value, ci95) == shown


def test_table_aligns_text_left_and_numbers_right() -> None:
    text = format_table(["region", "n"], [["central", "12 ±3"], ["east", "1234 ±3"]])
    assert text.splitlines() == [
        "region         n",
        "-------  -------",
        "central    12 ±3",
        "east     1234 ±3",
    ]


async def invoke_with_input(args: list[str], text: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, ["query", *args], input=text)


async def test_accuracy_targets_from_the_command_line(make_gateway: Any) -> None:
    url, token = await gateway(make_gateway)
    base = ["--url", url, "--token", token, "--dataset", "visits"]
    count = "SELECT COUNT(*) AS n FROM visits"
    est = await invoke([*base, "--accuracy", "n=50", "--estimate", count])
    assert est.exit_code == 0, est.output
    assert "(the smallest that meets the accuracy targets)" in est.stdout
    assert "  target:      n ci95 <= 50, achieved 49.9" in est.stdout
    ran = await invoke([*base, "--accuracy", "n=50", "--json", count])
    assert ran.exit_code == 0, ran.output
    body = json.loads(ran.stdout)
    assert body["epsilon_source"] == "accuracy" and body["accuracy"]["n"]["ci95"] <= 50
    for bad in (["--accuracy", "n"], ["--accuracy", "n=-3"], ["--accuracy", "=4"]):
        assert (await invoke([*base, *bad, count])).exit_code == 2
    both = await invoke([*base, "--accuracy", "n=50", "--epsilon", "0.2", count])
    assert both.exit_code == 2 and "give --epsilon or --accuracy, not both" in both.output


async def test_a_large_spend_is_confirmed_first(make_gateway: Any) -> None:
    url, token = await gateway(make_gateway)
    base = ["--url", url, "--token", token, "--dataset", "visits", "--epsilon", "1"]
    ask = [*base, "--confirm-share", "0.1", "SELECT COUNT(*) AS n FROM visits"]
    declined = await invoke_with_input(ask, "n\n")
    assert declined.exit_code == 1
    assert "this query spends epsilon 1, 20% of the 5 left on visits. Run it?" in declined.stderr
    assert "error: not run: this query spends epsilon 1, 20%" in declined.stderr
    assert declined.stdout == ""
    silent = await invoke(ask)  # no terminal and no answer: not run
    assert silent.exit_code == 1 and "error: not run" in silent.stderr

    accepted = await invoke_with_input(ask, "y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "spent:         epsilon 1, delta 0" in accepted.stdout
    assert "budget left:   epsilon 4," in accepted.stdout  # only this run spent

    forced = await invoke([*base, "--yes", "SELECT SUM(age) AS s FROM visits"])
    assert forced.exit_code == 0 and forced.stderr == ""
    assert "budget left:   epsilon 3," in forced.stdout
    small = ["--url", url, "--token", token, "--dataset", "visits", "--epsilon", "0.5"]
    under = await invoke([*small, "SELECT SUM(age) AS t FROM visits WHERE age > 2"])
    assert under.exit_code == 0 and under.stderr == ""  # 0.5 of the 3 left: not asked
    over = await invoke([*small, "--confirm-share", "0.1", "SELECT SUM(age) AS u FROM visits"])
    assert over.exit_code == 1 and "20% of the 2.5 left" in over.stderr

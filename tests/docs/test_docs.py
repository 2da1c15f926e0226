"""The docs are tested: what users can see is documented, links resolve, the README's commands run.

Reference checks read every page of ``docs/`` (so a page added later counts): every config key
is a row of ``docs/configuration.md``'s table; every CLI command, route, problem type, metric
and audit action is named in some page; every ``enclave`` command line shown uses options its
command has; every file path named exists. The README stays short, links every page of
``docs/``, and its two commands are the ones CI runs; its first query runs on the demo here.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from aiohttp import ClientSession
from click.testing import CliRunner

from enclave.audit.record import ACTIONS
from enclave.cli import main
from enclave.config import CONFIG_KEYS, Config, load_config
from enclave.errors import EnclaveError
from enclave.metrics import Metrics
from enclave.web.app import create_app

REPO = Path(__file__).resolve().parents[2]
README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = REPO / "docs"
PAGES = {path: path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))}
ALL_DOCS = "\n".join(PAGES.values())
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_MAX_LINES = 200


def _commands(group: click.Group, prefix: str = "enclave") -> Iterator[tuple[str, click.Command]]:
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, full)
        else:
            yield full, cmd


def _without_code(text: str) -> str:
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", _without_code(text), re.M)}


# --- the README --------------------------------------------------------------------------


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) < README_MAX_LINES


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = set(LINK.findall(README))
    pages = sorted(p.name for p in DOCS.iterdir() if p.is_file() and p.suffix in {".md", ".ipynb"})
    assert "configuration.md" in pages
    assert [name for name in pages if f"docs/{name}" not in linked] == []


def _sh_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```sh\n(.*?)^```", text, re.M | re.S)]


def test_the_readme_commands_are_the_ones_ci_runs() -> None:
    blocks = [block.strip() for block in _sh_blocks(README)]
    # the test command: CI's entry point ends by running exactly it
    assert "scripts/check" in blocks
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec bash scripts/check$", ci, re.M)
    assert (REPO / "scripts" / "check").stat().st_mode & 0o111
    # the demo command: install, then the CLI's own demo command with its defaults
    install = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/enclave demo"
    assert install in blocks
    assert isinstance(main.commands.get("demo"), click.Command)


# --- every reference is documented ------------------------------------------------------


def test_every_config_key_is_in_the_configuration_table() -> None:
    table = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", table, re.M))
    assert [key for key in CONFIG_KEYS if key not in rows] == []
    assert sorted(rows - set(CONFIG_KEYS)) == []  # no row for a key that does not exist


def test_every_cli_command_is_in_the_docs() -> None:
    missing = []
    for full, _ in _commands(main):
        *parent, leaf = full.split(" ")
        # "enclave licence suspend" or "enclave licence suspend|reactivate|revoke"
        pattern = re.escape(" ".join(parent)) + r" (?:[a-z-]+\|)*" + re.escape(leaf) + r"\b"
        if not re.search(pattern, ALL_DOCS):
            missing.append(full)
    assert missing == []


def _invocations(text: str) -> Iterator[str]:
    """Every ``enclave <command> ...`` line in code blocks and inline code spans."""
    spans = [m.group(1) for m in FENCE.finditer(text)]
    spans += re.findall(r"`([^`\n]+)`", _without_code(text))
    for span in spans:
        for line in span.replace("\\\n", " ").splitlines():
            m = re.search(r"(?:^|[\s/])enclave\s+([a-z]+)(.*)$", line)
            if m:
                yield m.group(1) + m.group(2).split(" #")[0]


def test_every_command_line_shown_uses_real_options() -> None:
    problems = []
    for path, text in [(README_PATH, README), *PAGES.items()]:
        for line in _invocations(text):
            name, _, rest = line.partition(" ")
            cmd = main.commands.get(name)
            if cmd is None:
                problems.append(f"{path.name}: enclave {line}: no command {name!r}")
                continue
            commands: list[click.Command] = [cmd]
            if isinstance(cmd, click.Group):
                sub = re.match(r"\s*([a-z][a-z|-]*)(.*)$", rest)
                if sub is None:
                    continue  # the group alone ("enclave licence")
                commands = []
                for leaf in sub.group(1).split("|"):
                    if leaf not in cmd.commands:
                        problems.append(f"{path.name}: enclave {line}: no command {leaf!r}")
                    else:
                        commands.append(cmd.commands[leaf])
                rest = sub.group(2)
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                for command in commands:
                    known = {o for p in command.params for o in p.opts} | {"--help"}
                    if option not in known:
                        problems.append(f"{path.name}: enclave {line}: no option {option}")
    assert problems == []


def test_every_route_is_in_the_docs(config_factory: Any) -> None:
    app = create_app(config_factory())
    missing = []
    seen = 0
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        seen += 1
        named = re.escape(f"{route.method} {route.resource.canonical}") + r"(?![\w/{])"
        if not re.search(named, ALL_DOCS):
            missing.append(f"{route.method} {route.resource.canonical}")
    assert seen >= 20
    assert missing == []


def _error_classes(cls: type[EnclaveError] = EnclaveError) -> Iterator[type[EnclaveError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _error_classes(sub)


def test_every_problem_type_is_in_the_docs() -> None:
    types = {cls.type for cls in _error_classes()}
    assert {"budget-exhausted", "release-failed", "internal"} <= types
    assert sorted(t for t in types if f"`{t}`" not in ALL_DOCS) == []


def test_the_problem_table_lists_every_type() -> None:
    """``security.md``'s table is the complete list the researcher guide points to."""
    table = PAGES[DOCS / "security.md"].split("## Problem types", 1)[1]
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \| (\d{3}) \|", table, re.M))
    expected = {(cls.type, str(cls.status)) for cls in _error_classes()}
    assert sorted(expected - rows) == []


def test_every_metric_is_in_the_docs() -> None:
    names = []
    for family in Metrics().registry.collect():
        names.append(family.name + "_total" if family.type == "counter" else family.name)
    assert "enclave_requests_total" in names
    assert [name for name in names if f"`{name}`" not in ALL_DOCS] == []


def test_every_audit_action_is_in_the_docs() -> None:
    assert "query" in ACTIONS
    assert [action for action in ACTIONS if f"`{action}`" not in ALL_DOCS] == []


# --- links and paths resolve -------------------------------------------------------------


def test_every_relative_link_resolves() -> None:
    broken = []
    for path, text in [(README_PATH, README), *PAGES.items()]:
        for target in LINK.findall(_without_code(text)):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and dest.suffix == ".md":
                if anchor not in _anchors(dest.read_text(encoding="utf-8")):
                    broken.append(f"{path.name}: {target} (no such heading)")
    assert broken == []


def test_every_file_path_named_exists() -> None:
    named = set()
    for text in [README, *PAGES.values()]:
        named |= set(
            re.findall(r"(?<![\w/.])((?:enclave|tests|bench|scripts|deploy)/[\w/.-]+\.\w+)", text)
        )
    assert len(named) > 10
    assert sorted(p for p in named if not (REPO / p).exists()) == []


# --- the README's first query runs on the demo --------------------------------------------


def _readme_query_body() -> dict[str, Any]:
    curl = next(b for b in _sh_blocks(README) if "curl" in b)
    body = re.search(r"-d '(.*?)'", curl, re.S)
    assert body is not None
    parsed: dict[str, Any] = json.loads(body.group(1))
    return parsed


def _readme_cli_query() -> list[str]:
    block = next(m.group(1) for m in FENCE.finditer(README) if "enclave query" in m.group(1))
    line = next(line for line in block.replace("\\\n", " ").splitlines() if "enclave query" in line)
    return shlex.split(line.split("enclave ", 1)[1])


async def test_the_readme_first_query_runs_on_the_demo(tmp_path: Path, aiohttp_server: Any) -> None:
    folder = tmp_path / "demo"
    made = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["demo", "--dir", str(folder), "--rows", "2000", "--no-serve"],
    )
    assert made.exit_code == 0, made.output
    body = _readme_query_body()
    assert json.dumps(body["sql"]) in made.output  # the query the demo prints
    tokens = dict(line.split("=", 1) for line in (folder / "tokens.env").read_text().splitlines())
    config: Config = load_config(folder / "enclave.toml")
    server = await aiohttp_server(create_app(config))
    url = str(server.make_url("")).rstrip("/")

    async with ClientSession() as session:
        headers = {"Authorization": f"Bearer {tokens['RESEARCHER_TOKEN']}"}
        async with session.post(f"{url}/v1/queries", json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
    assert answer["columns"] == ["region", "n", "mean_cost"]
    assert answer["epsilon_spent"] == body["epsilon"]

    args = _readme_cli_query()
    assert args[0] == "query"
    args[args.index("--url") + 1] = url
    ran = await asyncio.to_thread(
        CliRunner().invoke, main, args, env={"ENCLAVE_TOKEN": tokens["RESEARCHER_TOKEN"]}
    )
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.splitlines()[0].split() == ["region", "n", "median_age"]
    assert "budget left:   epsilon 4, delta 1e-06 (never renews)" in ran.stdout

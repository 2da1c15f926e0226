"""``server.processes``: worker processes per gateway (default one per core), validated."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from enclave.config import MAX_PROCESSES, config_from_dict
from enclave.errors import ConfigError

AUTH = {"issuer": "https://idp.test", "audience": "enclave", "jwks_file": "jwks.json"}


def load(server: dict[str, Any]) -> Any:
    return config_from_dict({"auth": AUTH, "server": server}, base=Path("/srv"))


def test_default_is_one_process_per_usable_core() -> None:
    cores = len(os.sched_getaffinity(0))
    assert load({}).server.processes == max(1, min(cores, MAX_PROCESSES))


@pytest.mark.parametrize("value", [1, 2, MAX_PROCESSES])
def test_accepted(value: int) -> None:
    assert load({"processes": value}).server.processes == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, f"server.processes: must be between 1 and {MAX_PROCESSES}"),
        (-2, f"server.processes: must be between 1 and {MAX_PROCESSES}"),
        (MAX_PROCESSES + 1, f"server.processes: must be between 1 and {MAX_PROCESSES}"),
        ("4", "server.processes: must be an integer"),
        (2.0, "server.processes: must be an integer"),
        (True, "server.processes: must be an integer"),
    ],
)
def test_refused_with_a_clear_problem(value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"processes": value, "port": 0})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert any(p.startswith("server.port") for p in caught.value.problems)  # all at once


def test_the_refusal_names_the_other_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"processes": 0})
    (problem,) = caught.value.problems
    assert "engine.workers" in problem  # not to be confused with DuckDB's concurrent queries


def test_an_in_memory_store_cannot_be_shared_by_processes() -> None:
    raw: dict[str, Any] = {"auth": AUTH, "store": {"url": "sqlite:///:memory:"}}
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**raw, "server": {"processes": 2}}, base=Path("/srv"))
    assert caught.value.problems == [
        "store.url: an in-memory SQLite database cannot be shared by worker processes; "
        "use a file or set server.processes = 1"
    ]
    alone = config_from_dict({**raw, "server": {"processes": 1}}, base=Path("/srv"))
    assert alone.store.url == "sqlite:///:memory:"

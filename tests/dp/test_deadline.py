"""The release step is padded to its deadline, on success and on failure alike."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from enclave.config import load_config
from enclave.dp.deadline import deadline_for, padded
from enclave.dp.mechanisms import price_plan
from enclave.errors import ConfigError
from enclave.query.plan import Aggregate
from tests.dp.test_mechanisms import make_plan, make_spec, make_tier


async def test_a_quick_step_answers_at_the_deadline_not_before() -> None:
    started = time.monotonic()
    assert await padded(lambda: 42, 0.2) == 42
    assert time.monotonic() - started >= 0.2  # a lower bound: sleeping never ends early


async def test_a_failing_step_fails_at_the_deadline_with_its_own_error() -> None:
    def boom() -> int:
        raise KeyError("x")

    started = time.monotonic()
    with pytest.raises(KeyError):
        await padded(boom, 0.2)
    assert time.monotonic() - started >= 0.2


async def test_no_deadline_adds_no_wait() -> None:
    assert await padded(lambda: "done", 0.0) == "done"


def test_only_undeclared_keys_are_padded() -> None:
    spec = make_spec()
    tier = make_tier(allow_undeclared_keys=True, budget_delta=Decimal("1e-5"))
    plan = make_plan(Aggregate("count", "n"))
    declared = price_plan(plan, spec, tier, Decimal(1), 5)
    undeclared = price_plan(plan, spec, tier, Decimal(1), None)
    assert deadline_for(declared, 250) == 0.0
    assert deadline_for(undeclared, 250) == 0.25


@pytest.mark.parametrize(("value", "ok"), [(0, True), (250, True), (-1, False), (1e9, False)])
def test_release_deadline_is_validated_at_load(tmp_path: Path, value: float, ok: bool) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    (tmp_path / "enclave.toml").write_text(
        '[auth]\nissuer = "https://idp.invalid"\naudience = "enclave"\n'
        f'jwks_file = "jwks.json"\n[server]\nrelease_deadline_ms = {value}\n'
    )
    if ok:
        assert load_config(tmp_path / "enclave.toml").server.release_deadline_ms == value
    else:
        with pytest.raises(ConfigError, match="server.release_deadline_ms"):
            load_config(tmp_path / "enclave.toml")

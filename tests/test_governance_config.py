"""The ``[governance]`` section: off by default, on in the example production config, and
every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.config import Config, load_config
from enclave.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_four_eyes_is_off_by_default_and_on_in_the_production_example() -> None:
    assert (Config().governance.four_eyes, Config().governance.proposal_ttl_hours) == (False, 72)
    deployed = load_config(REPO / "deploy" / "enclave.toml").governance
    assert deployed.four_eyes is True and deployed.proposal_ttl_hours == 72


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('four_eyes = "yes"', "governance.four_eyes: must be true or false"),
        ("proposal_ttl_hours = 0", "governance.proposal_ttl_hours: must be between 1 and 2160"),
        ("proposal_ttl_hours = 2161", "governance.proposal_ttl_hours: must be between 1 and"),
        ("proposal_ttl_hours = 1.5", "governance.proposal_ttl_hours: must be an integer"),
        ("second_admin = true", "governance.second_admin: unknown key"),
    ],
)
def test_bad_governance_settings_are_named(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "enclave.toml").write_text(
        '[auth]\nissuer = "https://idp"\naudience = "a"\njwks_url = "https://idp/jwks"\n'
        f"[governance]\n{text}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "enclave.toml")
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems

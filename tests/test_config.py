"""``config.py``: every key's type and range, unknown keys and sections, path resolution, the
one environment input (``ENCLAVE_CONFIG``), and one ``ConfigError`` listing every problem."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from enclave.config import (
    _SECTIONS,
    CONFIG_KEYS,
    Config,
    config_from_dict,
    default_config_path,
    load_config,
    sqlite_path,
)
from enclave.errors import ConfigError

AUTH = {"issuer": "https://idp.example.org", "audience": "enclave", "jwks_file": "keys/jwks.json"}
PATH_KEYS = {"auth.jwks_file", "policies.dir", "policies.data_dir", "engine.state_dir", "jobs.dir"}


def build(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {"auth": dict(AUTH)}
    for name, table in sections.items():
        raw[name] = {**raw.get(name, {}), **table}
    return config_from_dict(raw, base=tmp_path)


def problems(tmp_path: Path, raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, base=tmp_path)
    return info.value.problems


def with_key(key: str, value: Any) -> dict[str, Any]:
    section, _, name = key.partition(".")
    raw: dict[str, Any] = {"auth": dict(AUTH)}
    raw.setdefault(section, {})[name] = value
    return raw


def test_the_smallest_config_takes_every_default(tmp_path: Path) -> None:
    cfg = build(tmp_path)
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8080
    assert cfg.auth.algorithms == ("ES256", "RS256", "EdDSA")
    assert cfg.policies.dir == (tmp_path / "policies").resolve()
    assert cfg.engine.state_dir == (tmp_path / "state").resolve()
    assert cfg.store.url == "sqlite:///" + str((tmp_path / "state/enclave.db").resolve())
    assert cfg.path is None


def test_every_key_is_listed_once() -> None:
    expected = [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in fields(cls)]
    assert list(CONFIG_KEYS) == expected and len(set(CONFIG_KEYS)) == len(CONFIG_KEYS)


def _wrong_value(key: str) -> tuple[Any, str]:
    """A value of the wrong type for ``key``, and the problem it must produce."""
    if key in PATH_KEYS:
        return 7, "must be a non-empty path string"
    section, _, name = key.partition(".")
    default = getattr(_SECTIONS[section](), name)
    if isinstance(default, bool):
        return "yes", "must be true or false"
    if isinstance(default, int):
        return 1.5, "must be an integer"
    if isinstance(default, float):
        return "fast", "must be a number"
    if isinstance(default, tuple):
        return ["ok", 3], "must be a list of strings"
    return 12, "must be a string"


@pytest.mark.parametrize("key", CONFIG_KEYS)
def test_every_key_refuses_a_wrong_type(tmp_path: Path, key: str) -> None:
    value, what = _wrong_value(key)
    assert f"{key}: {what}" in problems(tmp_path, with_key(key, value))


NUMBER_KEYS = [
    f"{s}.{f.name}"
    for s, cls in _SECTIONS.items()
    for f in fields(cls)
    if type(getattr(cls(), f.name)) in (int, float)
]


@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_a_boolean_is_never_a_number(tmp_path: Path, key: str) -> None:
    assert any(p.startswith(f"{key}: must be") for p in problems(tmp_path, with_key(key, True)))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("server.port", 0, "server.port: must be between 1 and 65535"),
        ("server.port", 65536, "server.port: must be between 1 and 65535"),
        ("server.max_body_bytes", 0, "server.max_body_bytes: must be positive"),
        ("server.query_timeout_s", 0, "server.query_timeout_s: must be positive"),
        ("server.header_timeout_s", -1, "server.header_timeout_s: must be positive"),
        ("server.body_timeout_s", 0.0, "server.body_timeout_s: must be positive"),
        ("server.release_deadline_ms", -1, "server.release_deadline_ms: must be between 0"),
        ("server.release_deadline_ms", 60_001, "server.release_deadline_ms: must be between 0"),
        ("auth.issuer", "", "auth.issuer: required"),
        ("auth.audience", "", "auth.audience: required"),
        ("auth.jwks_url", "ftp://x", "auth: exactly one of jwks_file / jwks_url is required"),
        ("auth.algorithms", [], "auth.algorithms: must list at least one algorithm"),
        ("auth.algorithms", ["HS256"], "auth.algorithms: HS256 is never accepted"),
        ("auth.algorithms", ["none"], "auth.algorithms: none is never accepted"),
        ("auth.algorithms", ["NONE"], "auth.algorithms: NONE is never accepted"),
        ("auth.algorithms", ["ES999"], "auth.algorithms: unsupported algorithm ES999"),
        ("auth.leeway_s", -1, "auth.leeway_s: must be between 0 and 300"),
        ("auth.leeway_s", 301, "auth.leeway_s: must be between 0 and 300"),
        ("auth.roles_claim", "", "auth.roles_claim: must not be empty"),
        ("auth.jwks_refresh_s", 0, "auth.jwks_refresh_s: must be positive"),
        ("auth.jwks_min_refresh_s", -1, "auth.jwks_refresh_s: must be positive"),
        ("auth.jwks_max_stale_s", 10, "auth.jwks_max_stale_s: must be at least"),
        ("store.url", "mysql://x", "store.url: must start with sqlite:/// or postgresql://"),
        ("engine.threads", 0, "engine.threads, engine.workers and engine.prepare_workers"),
        ("engine.workers", 0, "engine.threads, engine.workers and engine.prepare_workers"),
        ("engine.prepare_workers", 0, "engine.threads, engine.workers"),
        ("engine.prepare_timeout_s", 0, "engine.prepare_timeout_s: must be between 0 and 86400"),
        ("engine.prepare_timeout_s", 86401, "engine.prepare_timeout_s: must be between 0"),
        ("jobs.max_active_per_licence", 0, "jobs.max_active_per_licence: must be from 1"),
        ("jobs.max_active_per_licence", 10_001, "jobs.max_active_per_licence: must be from 1"),
        ("policies.dir", "", "policies.dir: must be a non-empty path string"),
        ("policies.data_dir", "a\x00b", "policies.data_dir: must be a non-empty path string"),
    ]
    + [
        (f"limits.{f}", 0, f"limits.{f}: must be at least 1")
        for f in (
            "per_address_per_minute",
            "per_subject_per_minute",
            "unauthenticated_per_minute",
            "audit_sql_chars",
            "audit_name_chars",
        )
    ],  # fmt: skip
)
def test_range_rules(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    found = problems(tmp_path, with_key(key, value))
    assert any(p.startswith(expected) for p in found), found


def test_the_jwks_url_must_be_http_when_it_is_the_only_source(tmp_path: Path) -> None:
    raw = {"auth": {**AUTH, "jwks_file": None}}
    del raw["auth"]["jwks_file"]
    raw["auth"]["jwks_url"] = "ftp://idp.example.org/certs"
    assert problems(tmp_path, raw) == ["auth.jwks_url: must be an http(s) URL"]
    raw["auth"]["jwks_url"] = "https://idp.example.org/certs"
    assert config_from_dict(raw, base=tmp_path).auth.jwks_file is None


def test_console_sign_in_needs_openid_and_an_http_issuer(tmp_path: Path) -> None:
    raw = {
        "auth": {**AUTH, "issuer": "urn:idp"},
        "console": {"oidc_client_id": "enclave-console", "oidc_scopes": ["profile"]},
    }
    assert problems(tmp_path, raw) == [
        "console.oidc_scopes: must include openid",
        "console.oidc_client_id: needs auth.issuer to be an http(s) URL",
    ]


def test_unknown_keys_and_sections_are_problems(tmp_path: Path) -> None:
    raw = {"auth": {**AUTH, "isuer": "x"}, "servr": {"port": 1}, "server": {"prot": 80}}
    assert sorted(problems(tmp_path, raw)) == [
        "[servr]: unknown section",
        "auth.isuer: unknown key",
        "server.prot: unknown key",
    ]


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert "[server]: must be a table" in problems(tmp_path, {"auth": AUTH, "server": 8080})


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    raw = {
        "server": {"port": "80", "max_body_bytes": 0},
        "auth": {"leeway_s": 999},
        "limits": {"audit_sql_chars": 0},
        "engine": {"memory_limit": 2},
        "colour": {},
    }
    found = problems(tmp_path, raw)
    for expected in (
        "[colour]: unknown section",
        "server.port: must be an integer",
        "server.max_body_bytes: must be positive",
        "auth.issuer: required",
        "auth.audience: required",
        "auth: exactly one of jwks_file / jwks_url is required",
        "auth.leeway_s: must be between 0 and 300",
        "limits.audit_sql_chars: must be at least 1",
        "engine.memory_limit: must be a string",
    ):
        assert expected in found, (expected, found)
    assert len(found) == 9


def test_numbers_and_lists_take_the_section_types(tmp_path: Path) -> None:
    cfg = build(
        tmp_path,
        server={"query_timeout_s": 5, "port": 9000},
        auth={"algorithms": ["ES256"]},
        console={"enabled": False},
    )
    assert cfg.server.query_timeout_s == 5.0 and isinstance(cfg.server.query_timeout_s, float)
    assert cfg.server.port == 9000
    assert cfg.auth.algorithms == ("ES256",)
    assert cfg.console.enabled is False


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere"
    cfg = build(
        tmp_path,
        policies={"dir": "../pol", "data_dir": str(absolute)},
        store={"url": "sqlite:///db/x.db"},
    )
    assert cfg.policies.dir == (tmp_path / "../pol").resolve()
    assert cfg.policies.data_dir == absolute
    assert cfg.auth.jwks_file == (tmp_path / "keys/jwks.json").resolve()
    assert sqlite_path(cfg.store.url) == str((tmp_path / "db/x.db").resolve())
    memory = build(tmp_path, server={"processes": 1}, store={"url": "sqlite:///:memory:"})
    assert memory.store.url == "sqlite:///:memory:"
    pg = build(tmp_path, store={"url": "postgresql://u@h:5432/db"})
    assert pg.store.url == "postgresql://u@h:5432/db"


def test_load_config_reads_toml_and_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "enclave.toml"
    path.write_text(
        '[auth]\nissuer = "https://i"\naudience = "a"\njwks_file = "k.json"\n'
        "[server]\nport = 9001\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert cfg.path == path.resolve() and cfg.server.port == 9001
    assert cfg.auth.jwks_file == (tmp_path / "k.json").resolve()


def test_load_config_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: file not found"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems[0].startswith(f"{bad}: not valid TOML")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[server]")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert info.value.problems[0].startswith(f"{binary}: not valid TOML")


def test_enclave_config_is_the_only_environment_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENCLAVE_CONFIG", raising=False)
    assert default_config_path() == Path("enclave.toml")
    monkeypatch.setenv("ENCLAVE_CONFIG", str(tmp_path / "x.toml"))
    assert default_config_path() == tmp_path / "x.toml"
    # no other variable changes a loaded config
    monkeypatch.setenv("ENCLAVE_SERVER_PORT", "1")
    monkeypatch.setenv("ENCLAVE_STORE_URL", "postgresql://x")
    cfg = build(tmp_path)
    assert cfg.server.port == 8080 and cfg.store.url.startswith("sqlite:///")

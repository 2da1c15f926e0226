"""Configuration: ``enclave.toml`` loaded once into frozen, typed sections.

``load_config(path)`` reads TOML with ``tomllib``, resolves every path against the config
file's folder, and reports *all* problems at once in a ``ConfigError``. The only environment
input anywhere in the gateway is ``ENCLAVE_CONFIG`` (the default path for ``enclave serve``).
Unknown sections and keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError

FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
SUPPORTED_ALGORITHMS = ("ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536
    query_timeout_s: float = 30.0
    header_timeout_s: float = 20.0  # from connect (or the last answer) to complete headers
    body_timeout_s: float = 30.0  # for the whole body, once the handler starts reading it
    release_deadline_ms: float = 250.0  # addition: undeclared-key releases are padded to it


@dataclass(frozen=True)
class AuthConfig:
    issuer: str = ""
    audience: str = ""
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
    roles_claim: str = "roles"
    leeway_s: int = 30
    jwks_min_refresh_s: float = 30.0  # addition: at most one unknown-kid refresh per interval
    jwks_refresh_s: float = 300.0  # reload the key set when it is older than this
    jwks_max_stale_s: float = 3600.0  # no successful load for this long: refuse every token


@dataclass(frozen=True)
class LimitsConfig:
    """Request rate limits (fixed one-minute windows, counted in the store) and audit caps."""

    per_address_per_minute: int = 600  # every non-public request, before authentication
    per_subject_per_minute: int = 300  # every authenticated request, refused ones included
    unauthenticated_per_minute: int = 60  # failed authentications, per source address
    audit_sql_chars: int = 2000  # SQL kept in an audit record (the SHA-256 covers all of it)
    audit_name_chars: int = 200  # dataset name and path kept in an audit record


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///state/enclave.db"


@dataclass(frozen=True)
class PoliciesConfig:
    dir: Path = Path("policies")
    data_dir: Path = Path("data")


@dataclass(frozen=True)
class EngineConfig:
    """Addition: DuckDB resources and where bounded (truncated) tables live."""

    state_dir: Path = Path("state")  # bounded tables and the truncation seed live here
    memory_limit: str = "2GB"
    threads: int = 2
    workers: int = 4  # concurrent DuckDB queries (thread pool size)
    prepare_timeout_s: float = 600.0  # a dataset preparation (bounding) is killed after this
    prepare_workers: int = 2  # concurrent preparations (child processes)


@dataclass(frozen=True)
class JobsConfig:
    """Addition: the durable job runner (``jobs/runner.py``; docs/synthetic.md)."""

    dir: Path = Path("state/jobs")  # result files, one folder per job (default: <state_dir>/jobs)
    workers: int = 1  # jobs run at once by this gateway (each in a child process)
    lease_s: float = 60.0  # a running job is claimed again if its runner stops renewing
    poll_s: float = 2.0  # how often an idle runner looks for queued jobs
    timeout_s: float = 1800.0  # one job's run is killed after this (charged: data was read)


@dataclass(frozen=True)
class ConsoleConfig:
    """Addition: the web console at ``/console`` (static files calling the public API)."""

    enabled: bool = True
    oidc_client_id: str = ""  # public client for the browser sign-in; "" = paste a token only
    oidc_scopes: tuple[str, ...] = ("openid",)


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "auth": AuthConfig,
    "store": StoreConfig,
    "policies": PoliciesConfig,
    "engine": EngineConfig,
    "limits": LimitsConfig,
    "console": ConsoleConfig,
    "jobs": JobsConfig,
}
_PATH_KEYS = {
    ("auth", "jwks_file"),
    ("policies", "dir"),
    ("policies", "data_dir"),
    ("engine", "state_dir"),
    ("jobs", "dir"),
}


def default_config_path() -> Path:
    return Path(os.environ.get("ENCLAVE_CONFIG", "enclave.toml"))


def load_config(path: str | Path) -> Config:
    """Read, type-check and resolve ``path``; raise ``ConfigError`` listing every problem."""
    cfg_path = Path(path)
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{cfg_path}: file not found"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{cfg_path}: not valid TOML ({exc})"]) from None
    return config_from_dict(raw, base=cfg_path.resolve().parent, path=cfg_path.resolve())


def config_from_dict(raw: dict[str, Any], base: Path, path: Path | None = None) -> Config:
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name in raw:
        if name not in _SECTIONS:
            problems.append(f"[{name}]: unknown section")
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"[{name}]: must be a table")
            table = {}
        sections[name] = _build_section(name, cls, table, base, problems)
    auth: AuthConfig = sections["auth"]
    problems.extend(_check_auth(auth))
    server: ServerConfig = sections["server"]
    if not 0 < server.port < 65536:
        problems.append("server.port: must be between 1 and 65535")
    if server.max_body_bytes <= 0:
        problems.append("server.max_body_bytes: must be positive")
    for name in ("query_timeout_s", "header_timeout_s", "body_timeout_s"):
        if getattr(server, name) <= 0:
            problems.append(f"server.{name}: must be positive")
    if not 0 <= server.release_deadline_ms <= 60_000:
        problems.append("server.release_deadline_ms: must be between 0 and 60000")
    limits: LimitsConfig = sections["limits"]
    for fld in fields(LimitsConfig):
        if getattr(limits, fld.name) < 1:
            problems.append(f"limits.{fld.name}: must be at least 1")
    store: StoreConfig = sections["store"]
    if not store.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        problems.append("store.url: must start with sqlite:/// or postgresql://")
    engine: EngineConfig = sections["engine"]
    if engine.threads < 1 or engine.workers < 1 or engine.prepare_workers < 1:
        problems.append(
            "engine.threads, engine.workers and engine.prepare_workers: must be at least 1"
        )
    if not 0 < engine.prepare_timeout_s <= 86400:
        problems.append("engine.prepare_timeout_s: must be between 0 and 86400 seconds")
    jobs: JobsConfig = sections["jobs"]
    if "dir" not in (raw.get("jobs") or {}):  # default: beside the bounded tables
        jobs = sections["jobs"] = replace(jobs, dir=engine.state_dir / "jobs")
    if jobs.workers < 1 or not 0 < jobs.poll_s <= jobs.lease_s / 2:
        problems.append("jobs.workers: at least 1; jobs.poll_s: positive, at most lease_s / 2")
    if not 0 < jobs.timeout_s <= 86400:
        problems.append("jobs.timeout_s: must be between 0 and 86400 seconds")
    console: ConsoleConfig = sections["console"]
    if console.oidc_client_id and "openid" not in console.oidc_scopes:
        problems.append("console.oidc_scopes: must include openid")
    if console.oidc_client_id and not auth.issuer.startswith(("https://", "http://")):
        problems.append("console.oidc_client_id: needs auth.issuer to be an http(s) URL")
    if problems:
        raise ConfigError(problems)
    return Config(path=path, **sections)


def _build_section(
    name: str, cls: type[Any], table: dict[str, Any], base: Path, problems: list[str]
) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    default = cls()
    for key, value in table.items():
        if key not in known:
            problems.append(f"{name}.{key}: unknown key")
            continue
        expected = getattr(default, key)
        if (name, key) in _PATH_KEYS:
            if not isinstance(value, str) or not value:
                problems.append(f"{name}.{key}: must be a non-empty path string")
                continue
            values[key] = (base / value).resolve()
        elif isinstance(expected, bool):
            if not isinstance(value, bool):
                problems.append(f"{name}.{key}: must be true or false")
                continue
            values[key] = value
        elif isinstance(expected, int) and not isinstance(expected, bool):
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{name}.{key}: must be an integer")
                continue
            values[key] = value
        elif isinstance(expected, float):
            if not isinstance(value, int | float) or isinstance(value, bool):
                problems.append(f"{name}.{key}: must be a number")
                continue
            values[key] = float(value)
        elif isinstance(expected, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{name}.{key}: must be a list of strings")
                continue
            values[key] = tuple(value)
        else:
            if not isinstance(value, str):
                problems.append(f"{name}.{key}: must be a string")
                continue
            values[key] = value
    obj = cls(**values)
    # defaults that are paths resolve against the config folder too
    for fname, fld in known.items():
        if (name, fname) in _PATH_KEYS and fname not in values:
            current = getattr(obj, fname)
            if isinstance(current, Path):
                obj = replace(obj, **{fname: (base / current).resolve()})
        del fld
    if name == "store" and "url" in values:
        obj = replace(obj, url=resolve_store_url(values["url"], base))
    elif name == "store":
        obj = replace(obj, url=resolve_store_url(obj.url, base))
    return obj


def resolve_store_url(url: str, base: Path) -> str:
    """Make a relative ``sqlite:///`` path absolute against ``base``."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        rest = url[len(prefix) :]
        if rest == ":memory:":
            return url
        p = Path(rest)
        if not p.is_absolute():
            p = (base / p).resolve()
        return prefix + str(p)
    return url


def sqlite_path(url: str) -> str:
    """The file path inside a resolved ``sqlite:///`` URL."""
    return url[len("sqlite:///") :]


def _check_auth(auth: AuthConfig) -> list[str]:
    problems: list[str] = []
    if not auth.issuer:
        problems.append("auth.issuer: required")
    if not auth.audience:
        problems.append("auth.audience: required")
    if (auth.jwks_file is None) == (auth.jwks_url is None):
        problems.append("auth: exactly one of jwks_file / jwks_url is required")
    if auth.jwks_url is not None and not auth.jwks_url.startswith(("https://", "http://")):
        problems.append("auth.jwks_url: must be an http(s) URL")
    if not auth.algorithms:
        problems.append("auth.algorithms: must list at least one algorithm")
    for alg in auth.algorithms:
        if alg in FORBIDDEN_ALGORITHMS or alg.lower() == "none":
            problems.append(f"auth.algorithms: {alg} is never accepted (public keys only)")
        elif alg not in SUPPORTED_ALGORITHMS:
            problems.append(f"auth.algorithms: unsupported algorithm {alg}")
    if auth.leeway_s < 0 or auth.leeway_s > 300:
        problems.append("auth.leeway_s: must be between 0 and 300")
    if not auth.roles_claim:
        problems.append("auth.roles_claim: must not be empty")
    if auth.jwks_refresh_s <= 0 or auth.jwks_min_refresh_s < 0:
        problems.append("auth.jwks_refresh_s: must be positive (jwks_min_refresh_s not negative)")
    if auth.jwks_max_stale_s < auth.jwks_refresh_s:
        problems.append("auth.jwks_max_stale_s: must be at least auth.jwks_refresh_s")
    return problems


# Documentation of every key (the README config table is checked against this list).
CONFIG_KEYS: tuple[str, ...] = tuple(
    f"{section}.{f.name}" for section, cls in _SECTIONS.items() for f in fields(cls)
)

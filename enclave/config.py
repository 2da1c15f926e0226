"""Configuration: ``enclave.toml`` loaded once into frozen, typed sections.

``load_config(path)`` reads TOML with ``tomllib``, resolves every path against the config
file's folder, and reports *all* problems at once in a ``ConfigError``. The only environment
input anywhere in the gateway is ``ENCLAVE_CONFIG`` (the default path for ``enclave serve``).
Unknown sections and keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError

MAX_PROCESSES = 64
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
MAX_PROPOSAL_TTL_HOURS = 24 * 90
SUPPORTED_ALGORITHMS = ("ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536
    query_timeout_s: float = 30.0
    header_timeout_s: float = 20.0  # from connect (or the last answer) to complete headers
    body_timeout_s: float = 30.0  # for the whole body, once the handler starts reading it
    release_deadline_ms: float = 250.0  # undeclared-key releases are padded to it
    # HTTP worker processes sharing one socket (not engine.workers: DuckDB queries)
    processes: int = field(default_factory=lambda: default_processes())


@dataclass(frozen=True)
class AuthConfig:
    issuer: str = ""
    audience: str = ""
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
    roles_claim: str = "roles"
    leeway_s: int = 30
    jwks_min_refresh_s: float = 30.0  # at most one unknown-kid refresh per interval
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
    """DuckDB resources and where bounded (truncated) tables live."""

    state_dir: Path = Path("state")  # bounded tables and the truncation seed live here
    memory_limit: str = "2GB"
    threads: int = 2
    workers: int = 4  # concurrent DuckDB queries (thread pool size)
    prepare_timeout_s: float = 600.0  # a dataset preparation (bounding) is killed after this
    prepare_workers: int = 2  # concurrent preparations (child processes)


@dataclass(frozen=True)
class JobsConfig:
    """The durable job runner (``jobs/runner.py``; docs/synthetic.md)."""

    dir: Path = Path("state/jobs")  # result files, one folder per job (default: <state_dir>/jobs)
    workers: int = 1  # jobs run at once by this gateway (each in a child process)
    lease_s: float = 60.0  # a running job is claimed again if its runner stops renewing
    poll_s: float = 2.0  # how often an idle runner looks for queued jobs
    timeout_s: float = 1800.0  # one job's run is killed after this (charged: data was read)
    max_active_per_licence: int = 8  # queued or running jobs of one licence; more: 429


@dataclass(frozen=True)
class ConsoleConfig:
    """The web console at ``/console`` (static files calling the public API)."""

    enabled: bool = True
    oidc_client_id: str = ""  # public client for the browser sign-in; "" = paste a token only
    oidc_scopes: tuple[str, ...] = ("openid",)


@dataclass(frozen=True)
class TransparencyConfig:
    """``GET /v1/transparency`` (``docs/transparency.md``)."""

    public: bool = False  # true: anyone may read the report; false: auditors only


@dataclass(frozen=True)
class GovernanceConfig:
    """Four-eyes approval of changes that raise risk (``docs/governance.md``)."""

    four_eyes: bool = False  # a change that raises risk becomes a proposal a second admin approves
    proposal_ttl_hours: int = 72  # a proposal not decided within this many hours expires


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
    transparency: TransparencyConfig = field(default_factory=TransparencyConfig)
    governance: GovernanceConfig = field(default_factory=GovernanceConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "auth": AuthConfig,
    "store": StoreConfig,
    "policies": PoliciesConfig,
    "engine": EngineConfig,
    "limits": LimitsConfig,
    "console": ConsoleConfig,
    "transparency": TransparencyConfig,
    "governance": GovernanceConfig,
    "jobs": JobsConfig,
}
_PATH_KEYS = {
    ("auth", "jwks_file"),
    ("policies", "dir"),
    ("policies", "data_dir"),
    ("engine", "state_dir"),
    ("jobs", "dir"),
}


def default_processes() -> int:
    """``server.processes`` when not set: one worker process per core this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_PROCESSES))


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
    """Build a ``Config`` from parsed TOML; ``ConfigError`` lists every problem."""
    problems = [f"[{name}]: unknown section" for name in raw if name not in _SECTIONS]
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"[{name}]: must be a table")
            table = {}
        sections[name] = _build_section(name, cls, table, base, problems)
    if "dir" not in (raw.get("jobs") or {}):  # default: beside the bounded tables
        sections["jobs"] = replace(sections["jobs"], dir=sections["engine"].state_dir / "jobs")
    for check in _CHECKS:
        problems.extend(check(sections))
    if problems:
        raise ConfigError(problems)
    return Config(path=path, **sections)


def _build_section(
    name: str, cls: type[Any], table: dict[str, Any], base: Path, problems: list[str]
) -> Any:
    """One section: each key type-checked against its default's type, paths resolved."""
    default = cls()
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            problems.append(f"{name}.{key}: unknown key")
            continue
        if (name, key) in _PATH_KEYS:
            ok = isinstance(value, str) and bool(value) and "\x00" not in value
            what = "must be a non-empty path string"
            converted = (base / str(value)).resolve() if ok else value
        else:
            ok, what, converted = _typed(value, getattr(default, key))
        if ok:
            values[key] = converted
        else:
            problems.append(f"{name}.{key}: {what}")
    obj = cls(**values)
    for key in known - set(values):  # default paths resolve against the config folder too
        if (name, key) in _PATH_KEYS and isinstance(getattr(obj, key), Path):
            obj = replace(obj, **{key: (base / getattr(obj, key)).resolve()})
    if isinstance(obj, StoreConfig):
        obj = replace(obj, url=resolve_store_url(obj.url, base))
    return obj


def _typed(value: Any, expected: Any) -> tuple[bool, str, Any]:
    """``value`` checked against the type of ``expected`` (the key's default): whether it
    fits, the problem if not, and the value converted to the section's type."""
    if isinstance(expected, bool):
        return isinstance(value, bool), "must be true or false", value
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, int):
        return is_int, "must be an integer", value
    if isinstance(expected, float):
        ok = is_int or isinstance(value, float)
        return ok, "must be a number", float(value) if ok else value
    if isinstance(expected, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return ok, "must be a list of strings", tuple(value) if ok else value
    return isinstance(value, str), "must be a string", value


def _check_server(s: dict[str, Any]) -> list[str]:
    server: ServerConfig = s["server"]
    problems = []
    if not 0 < server.port < 65536:
        problems.append("server.port: must be between 1 and 65535")
    if server.max_body_bytes <= 0:
        problems.append("server.max_body_bytes: must be positive")
    for name in ("query_timeout_s", "header_timeout_s", "body_timeout_s"):
        if getattr(server, name) <= 0:
            problems.append(f"server.{name}: must be positive")
    if not 0 <= server.release_deadline_ms <= 60_000:
        problems.append("server.release_deadline_ms: must be between 0 and 60000")
    if not 1 <= server.processes <= MAX_PROCESSES:
        problems.append(
            f"server.processes: must be between 1 and {MAX_PROCESSES} (worker processes "
            "serving HTTP; engine.workers is the DuckDB queries of each)"
        )
    return problems


def _check_limits(s: dict[str, Any]) -> list[str]:
    limits: LimitsConfig = s["limits"]
    return [
        f"limits.{fld.name}: must be at least 1"
        for fld in fields(LimitsConfig)
        if getattr(limits, fld.name) < 1
    ]


def _check_store(s: dict[str, Any]) -> list[str]:
    url = s["store"].url
    problems = []
    if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        problems.append("store.url: must start with sqlite:/// or postgresql://")
    if url == "sqlite:///:memory:" and s["server"].processes > 1:
        problems.append(
            "store.url: an in-memory SQLite database cannot be shared by worker processes; "
            "use a file or set server.processes = 1"
        )
    return problems


def _check_engine(s: dict[str, Any]) -> list[str]:
    engine: EngineConfig = s["engine"]
    problems = []
    if engine.threads < 1 or engine.workers < 1 or engine.prepare_workers < 1:
        problems.append(
            "engine.threads, engine.workers and engine.prepare_workers: must be at least 1"
        )
    if not 0 < engine.prepare_timeout_s <= 86400:
        problems.append("engine.prepare_timeout_s: must be between 0 and 86400 seconds")
    return problems


def _check_console(s: dict[str, Any]) -> list[str]:
    console: ConsoleConfig = s["console"]
    problems = []
    if console.oidc_client_id and "openid" not in console.oidc_scopes:
        problems.append("console.oidc_scopes: must include openid")
    if console.oidc_client_id and not s["auth"].issuer.startswith(("https://", "http://")):
        problems.append("console.oidc_client_id: needs auth.issuer to be an http(s) URL")
    return problems


def _check_jobs(s: dict[str, Any]) -> list[str]:
    jobs: JobsConfig = s["jobs"]
    problems = []
    if jobs.workers < 1 or not 0 < jobs.poll_s <= jobs.lease_s / 2:
        problems.append("jobs.workers: at least 1; jobs.poll_s: positive, at most lease_s / 2")
    if not 0 < jobs.timeout_s <= 86400:
        problems.append("jobs.timeout_s: must be between 0 and 86400 seconds")
    if not 1 <= jobs.max_active_per_licence <= 10_000:
        problems.append("jobs.max_active_per_licence: must be from 1 to 10000")
    return problems


def _check_governance(s: dict[str, Any]) -> list[str]:
    if not 1 <= s["governance"].proposal_ttl_hours <= MAX_PROPOSAL_TTL_HOURS:
        return [f"governance.proposal_ttl_hours: must be between 1 and {MAX_PROPOSAL_TTL_HOURS}"]
    return []


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


def _check_auth(s: dict[str, Any]) -> list[str]:
    auth: AuthConfig = s["auth"]
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


#: Rules between keys and ranges, per section, run once every key has its type.
_CHECKS: tuple[Callable[[dict[str, Any]], list[str]], ...] = (
    _check_auth,
    _check_server,
    _check_limits,
    _check_store,
    _check_engine,
    _check_console,
    _check_governance,
    _check_jobs,
)

# Documentation of every key (docs/configuration.md is checked against this list).
CONFIG_KEYS: tuple[str, ...] = tuple(
    f"{section}.{f.name}" for section, cls in _SECTIONS.items() for f in fields(cls)
)

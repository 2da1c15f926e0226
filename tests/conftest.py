"""Shared fixtures: keys and tokens, a synthetic dataset, configs and live test clients.

Factories, not shared state: every test gets its own state folder and store; only the key
pair and the synthetic Parquet file (read-only) are shared across the session.

The tests mirror the package: the tests of ``enclave/<package>/<module>.py`` live in
``tests/<package>/test_<module>.py`` (several files may share a module, e.g.
``tests/engine/test_bounding.py`` and ``test_bounding_values.py``), and those of a top-level
module ``enclave/<module>.py`` in ``tests/test_<module>.py``. These folders follow another
rule:

    tests/web/        HTTP routes through the app factory (enclave/web/), per role
    tests/client/     the researcher client against a live loopback gateway
    tests/cli/        CliRunner per command group (enclave/cli/), and the benchmarks' smoke runs
    tests/store/      one suite run on SQLite and, when configured, PostgreSQL (its own conftest)
    tests/security/   security and privacy properties, together whatever module they attack;
                      marked ``security`` by its conftest (``pytest -m security``); helpers
                      imported by path: ``tests.security.hostile``, ``tests.security.privacy_audit``
    tests/browser/    the web console in headless Chromium, marked ``browser`` (its own
                      conftest; the fake identity provider is ``tests.browser.idp``)
    tests/docs/       the docs: every reference documented, links, the README's commands, the
                      researcher notebook

Markers (registered in pyproject.toml): ``postgres``, ``slow``, ``browser``, ``security``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from enclave.audit.record import AuditDraft
from enclave.config import Config, load_config
from enclave.devkeys import KeyPaths, generate_keys, mint_token
from enclave.engine.synth import generate_visits
from enclave.models import Licence, utcnow
from enclave.web.app import create_app
from enclave.web.keys import services_key

REPO = Path(__file__).resolve().parent.parent
ISSUER = "https://idp.test/realms/enclave"
AUDIENCE = "enclave-gateway"
TEST_ROWS = 20_000

# Only ENCLAVE_TEST_* variables may reach the tests from outside; clear the rest of ours.
for _name in list(os.environ):
    if _name.startswith("ENCLAVE_") and not _name.startswith("ENCLAVE_TEST_"):
        del os.environ[_name]


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> KeyPaths:
    return generate_keys(tmp_path_factory.mktemp("keys"), kid="test-key")


@pytest.fixture(scope="session")
def visits_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "visits.parquet"
    generate_visits(path, rows=TEST_ROWS, seed=11)
    return path


TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def token_factory(keypair: KeyPaths) -> TokenFactory:
    def make(sub: str = "alice", roles: Any = ("researcher",), **claims: Any) -> str:
        ttl = claims.pop("ttl_s", 600)
        headers = claims.pop("headers", None)
        return mint_token(
            keypair.private_pem,
            sub=sub,
            roles=list(roles) if isinstance(roles, tuple) else roles,
            issuer=claims.pop("iss", ISSUER),
            audience=claims.pop("aud", AUDIENCE),
            ttl_s=ttl,
            kid=claims.pop("kid", "test-key"),
            jti=claims.pop("jti", None),
            extra_claims=claims or None,
            headers=headers,
        )

    return make


ConfigFactory = Callable[..., Config]


@pytest.fixture
def config_factory(tmp_path: Path, keypair: KeyPaths, visits_parquet: Path) -> ConfigFactory:
    """Write a deployment folder (config, policies, data) in tmp_path and load its config."""

    def make(store_url: str = "sqlite:///state/enclave.db", **sections: dict[str, Any]) -> Config:
        root = tmp_path / "deploy"
        if not (root / "policies").exists():
            shutil.copytree(REPO / "policies", root / "policies")
            (root / "data").mkdir(parents=True)
            shutil.copy(visits_parquet, root / "data" / "visits.parquet")
            shutil.copy(keypair.jwks_json, root / "jwks.json")
        merged: dict[str, dict[str, Any]] = {
            "server": {"query_timeout_s": 20},
            "auth": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "jwks.json"},
            "store": {"url": store_url},
            "policies": {"dir": "policies", "data_dir": "data"},
            "engine": {"state_dir": "state", "memory_limit": "1GB", "threads": 1},
        }
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        (root / "enclave.toml").write_text(_toml(merged))
        return load_config(root / "enclave.toml")

    return make


def _toml(data: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list):
                lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
            else:
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@dataclass
class Gateway:
    """A live app on a loopback test server, with helpers to issue licences and call it."""

    client: Any
    config: Config
    tokens: TokenFactory
    licences: dict[str, Licence] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        return self.client.server.app

    @property
    def services(self) -> Any:
        return self.app[services_key]

    async def licence(
        self,
        subject: str = "alice",
        tier: str = "standard",
        datasets: tuple[str, ...] = ("visits",),
        jurisdiction: str = "GB",
        status: str = "active",
        **over: Any,
    ) -> Licence:
        now = utcnow()
        lic = Licence(
            id=over.pop("id", f"lic_{subject}_{tier}_{len(self.licences)}"),
            subject=subject,
            organization=over.pop("organization", "Test University"),
            tier=tier,
            datasets=datasets,
            purpose=over.pop("purpose", "testing"),
            jurisdiction=jurisdiction,
            valid_from=over.pop("valid_from", now - dt.timedelta(days=1)),
            valid_until=over.pop("valid_until", now + dt.timedelta(days=365)),
            status="active",
            created_at=now,
            updated_at=now,
        )
        await self.services.store.insert_licence(
            lic,
            AuditDraft(
                action="licence.create",
                outcome="ok",
                actor="test-admin",
                roles=("admin",),
                licence_id=lic.id,
                tier=tier,
            ),
        )
        if status != "active":
            lic, _ = await self.services.store.update_licence(
                lic.id,
                {"status": status},
                AuditDraft(
                    action="licence.update",
                    outcome="ok",
                    actor="test-admin",
                    roles=("admin",),
                    licence_id=lic.id,
                    reason="test",
                ),
            )
        self.licences[lic.id] = lic
        return lic

    def auth(
        self, sub: str = "alice", roles: Any = ("researcher",), **claims: Any
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens(sub, roles, **claims)}"}

    async def query(
        self,
        sql: str,
        epsilon: float | None = 0.5,
        dataset: str = "visits",
        sub: str = "alice",
        path: str = "/v1/queries",
    ) -> Any:
        body: dict[str, Any] = {"dataset": dataset, "sql": sql}
        if epsilon is not None:
            body["epsilon"] = epsilon
        return await self.client.post(path, json=body, headers=self.auth(sub))


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    aiohttp_client: Any, config_factory: ConfigFactory, token_factory: TokenFactory
) -> AsyncIterator[MakeGateway]:
    async def make(**over: Any) -> Gateway:
        cfg = config_factory(**over)
        client = await aiohttp_client(create_app(cfg))
        return Gateway(client=client, config=cfg, tokens=token_factory)

    yield make

"""Property-based run of the whole API from its own ``/openapi.json`` (schemathesis), against a
live gateway: the real app on a loopback TCP port, served from its own thread as ``enclave
serve`` would, with real signed tokens for each role, the shipped (demo) policies and a small
synthetic dataset. Every operation is called with generated parameters and bodies, valid and
not; no answer may be a 500, and every answer must match the documented status codes, media
types and schemas.

Examples per operation are kept modest (``EXAMPLES``) so the run takes about a minute; it is
marked slow, and CI runs it like every other test.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from enclave.config import load_config
from enclave.devkeys import KeyPaths
from enclave.engine.synth import generate_visits
from enclave.web.app import create_app
from enclave.web.openapi import build_document
from tests.conftest import AUDIENCE, ISSUER, REPO, TokenFactory, _toml

pytestmark = pytest.mark.slow
EXAMPLES = 15
COVERAGE_CASES = 60
ROWS = 2_000
ROLES = ("researcher", "admin", "auditor")


@dataclass
class LiveGateway:
    url: str
    tokens: dict[str, str]  # role -> bearer token

    def headers_for(self, operation: Any) -> dict[str, str]:
        role = operation.definition.raw.get("x-required-role")
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}


def _serve(app: web.Application, ready: threading.Event, box: dict[str, Any]) -> None:
    """Run ``app`` on 127.0.0.1 (a free port) in this thread's own event loop, until
    ``box["stop"]`` is set: the same runner ``web.run_app`` uses."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = runner.addresses[0][1]
        stop = asyncio.Event()
        box["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
        ready.set()
        await stop.wait()
        await runner.cleanup()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, keypair: KeyPaths, token_factory: TokenFactory
) -> Iterator[LiveGateway]:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "policies", root / "policies")
    (root / "data").mkdir()
    generate_visits(root / "data" / "visits.parquet", rows=ROWS, seed=5)
    shutil.copy(keypair.jwks_json, root / "jwks.json")
    (root / "enclave.toml").write_text(
        _toml(
            {
                "server": {"query_timeout_s": 20},
                "auth": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "jwks.json"},
                "store": {"url": "sqlite:///state/enclave.db"},
                "policies": {"dir": "policies", "data_dir": "data"},
                "engine": {"state_dir": "state", "memory_limit": "1GB", "threads": 1},
                # thousands of requests from one address: the limits have tests of their own
                "limits": {
                    "per_address_per_minute": 1_000_000,
                    "per_subject_per_minute": 1_000_000,
                    "unauthenticated_per_minute": 1_000_000,
                },
            }
        )
    )
    app = create_app(load_config(root / "enclave.toml"))
    ready, box = threading.Event(), {}
    thread = threading.Thread(target=_serve, args=(app, ready, box), daemon=True)
    thread.start()
    assert ready.wait(30), "the gateway did not start"
    tokens = {
        "researcher": token_factory("alice", ["researcher"], ttl_s=3600),
        "admin": token_factory("steward", ["admin"], ttl_s=3600),
        "auditor": token_factory("oversight", ["auditor"], ttl_s=3600),
    }
    gw = LiveGateway(f"http://127.0.0.1:{box['port']}", tokens)
    _seed(gw)
    try:
        yield gw
    finally:
        box["stop"]()
        thread.join(30)


def _seed(gw: LiveGateway) -> None:
    """As the demo does: a licence per tier, through the admin API, and one real release."""
    admin = {"Authorization": f"Bearer {gw.tokens['admin']}"}
    for subject, tier, juris in (("alice", "standard", "GB"), ("carol", "accredited", "IE")):
        body = {
            "subject": subject, "organization": "Test University", "tier": tier,
            "datasets": ["visits"], "purpose": "fuzzing", "jurisdiction": juris,
            "valid_until": "2099-12-31",
        }  # fmt: skip
        resp = requests.post(f"{gw.url}/v1/admin/licences", json=body, headers=admin, timeout=30)
        assert resp.status_code == 201, resp.text
    query = {"dataset": "visits", "sql": "SELECT COUNT(*) AS n FROM visits", "epsilon": 0.1}
    researcher = {"Authorization": f"Bearer {gw.tokens['researcher']}"}
    resp = requests.post(f"{gw.url}/v1/queries", json=query, headers=researcher, timeout=30)
    assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def api_schema(live: LiveGateway) -> Any:
    """The document the live gateway serves, as schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


OPERATIONS = [
    (
        f"{method.upper()} {path}",
        any(p["in"] == "query" for p in op.get("parameters", ())) or "requestBody" in op,
    )
    for path, item in build_document()["paths"].items()
    for method, op in item.items()
]
CASES = [
    pytest.param(label, mode, id=f"{mode.value}-{label}")
    for label, has_input in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # a path segment is always a string: with no query or body there is nothing invalid to send
    if has_input or mode is GenerationMode.POSITIVE
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_500_and_every_answer_matches_the_schema(
    api_schema: Any, live: LiveGateway, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    headers = live.headers_for(operation)

    def check(case: Any) -> None:
        response = case.call(base_url=live.url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    # the boundary cases schemathesis derives from each constraint (min/max, lengths, enums,
    # formats, duplicate and unknown parameters), then random ones
    config = api_schema.config.generation_for(operation=operation)
    for case in islice(
        api_schema.iter_coverage_cases(
            operation, generation_modes=[mode], generation_config=config
        ),
        COVERAGE_CASES,
    ):
        check(case)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        check(case)

    fuzz()


def test_the_run_reaches_the_live_gateway(live: LiveGateway) -> None:
    """The fixture's server is the real app: a token-less call is refused as documented."""
    resp = requests.get(f"{live.url}/v1/budget", timeout=30)
    assert resp.status_code == 401 and resp.headers["Content-Type"].startswith(
        "application/problem+json"
    )

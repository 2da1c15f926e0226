"""``enclave demo``: a complete local deployment in one folder, made from nothing.

Synthetic hospital visits (DuckDB-generated, no download), dev keys, the example tiers and
dataset from the repository's ``policies/``, three licences (one per tier), and tokens for a
researcher, an admin and an auditor. Running it again on the same folder reuses what is there.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import enclave
from enclave.audit.record import AuditDraft
from enclave.config import Config, load_config
from enclave.devkeys import KeyPaths, generate_keys, mint_token
from enclave.engine.synth import generate_visits
from enclave.errors import EnclaveError
from enclave.licences import licence_digest_fields
from enclave.models import Licence, utcnow
from enclave.policy.registry import registry_for
from enclave.store import open_store

log = logging.getLogger("enclave.demo")
ISSUER = "https://idp.example.org/realms/enclave"
AUDIENCE = "enclave-gateway"
DEMO_LICENCES = (
    # subject, organization, tier, jurisdiction, purpose
    (
        "alice",
        "Northern Health Research Unit",
        "standard",
        "GB",
        "Regional variation in hospital costs",
    ),
    ("bob", "Open Data Institute", "open", "US", "Teaching: counts by region"),
    ("carol", "Dublin Epidemiology Centre", "accredited", "IE", "Age structure of hospital use"),
)


@dataclass(frozen=True)
class DemoTokens:
    researcher: str
    admin: str
    auditor: str
    others: dict[str, str]


def policies_source() -> Path:
    """The example policies shipped with the repository."""
    root = Path(enclave.__file__).resolve().parent.parent / "policies"
    if not (root / "tiers").is_dir():
        raise EnclaveError(
            "the example policies/ folder was not found next to the package; "
            "run the demo from a source checkout (pip install -e .)"
        )
    return root


def make_demo(folder: Path, rows: int, port: int) -> Config:
    """The demo deployment in ``folder``. It holds live secrets (the signing key, admin tokens,
    the state), so the folder and its ``keys/`` and ``state/`` are private to the user (0700)
    and secret files 0600, also when an earlier run left them readable."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    if not (folder / "policies").exists():
        shutil.copytree(policies_source(), folder / "policies")
    data = folder / "data" / "visits.parquet"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        log.info("generating %s synthetic visits in %s ...", f"{rows:,}", data)
        persons = generate_visits(data, rows=rows)
        log.info("... %s visits by %s persons", f"{rows:,}", f"{persons:,}")
    keys = folder / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    keys.chmod(0o700)
    if not (keys / "private.pem").exists():
        generate_keys(keys, kid="demo-key")
    (keys / "private.pem").chmod(0o600)
    (folder / "state").mkdir(mode=0o700, exist_ok=True)
    (folder / "state").chmod(0o700)
    (folder / "enclave.toml").write_text(_demo_toml(port))
    return load_config(folder / "enclave.toml")


def write_tokens(folder: Path, tokens: DemoTokens) -> Path:
    """``tokens.env`` (mode 0600: it holds live admin and auditor tokens)."""
    text = (
        f"RESEARCHER_TOKEN={tokens.researcher}\nADMIN_TOKEN={tokens.admin}\n"
        f"AUDITOR_TOKEN={tokens.auditor}\n"
        + "".join(f"{k.upper()}_TOKEN={v}\n" for k, v in tokens.others.items())
    )
    path = folder / "tokens.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an older run keeps its mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


async def seed_licences(cfg: Config) -> None:
    store = open_store(cfg.store.url)
    await store.open()
    try:
        registry = registry_for(store, cfg)
        await registry.seed()
        existing = {lic.subject for lic in await store.list_licences()}
        now = utcnow()
        for subject, org, tier, jurisdiction, purpose in DEMO_LICENCES:
            if subject in existing:
                continue
            lic = Licence(
                id=f"lic_demo_{subject}",
                subject=subject,
                organization=org,
                tier=tier,
                datasets=("visits",),
                purpose=purpose,
                jurisdiction=jurisdiction,
                valid_from=now - dt.timedelta(minutes=5),
                valid_until=now + dt.timedelta(days=365),
                created_at=now,
                updated_at=now,
            )
            await store.insert_licence(
                lic,
                AuditDraft(
                    action="licence.create",
                    outcome="ok",
                    actor="enclave-demo",
                    roles=("admin",),
                    request_id="demo",
                    licence_id=lic.id,
                    tier=tier,
                    client="cli",
                    detail={"after": licence_digest_fields(lic)},
                ),
            )
    finally:
        await store.close()


def demo_tokens(keys: KeyPaths, ttl_s: int = 12 * 3600) -> DemoTokens:
    def tok(sub: str, roles: list[str]) -> str:
        return mint_token(
            keys.private_pem,
            sub=sub,
            roles=roles,
            issuer=ISSUER,
            audience=AUDIENCE,
            ttl_s=ttl_s,
            kid="demo-key",
        )

    return DemoTokens(
        researcher=tok("alice", ["researcher"]),
        admin=tok("steward", ["admin"]),
        auditor=tok("oversight", ["auditor"]),
        others={"bob": tok("bob", ["researcher"]), "carol": tok("carol", ["researcher"])},
    )


def demo_keys(folder: Path) -> KeyPaths:
    keys = folder / "keys"
    return KeyPaths(
        private_pem=keys / "private.pem",
        public_pem=keys / "public.pem",
        jwks_json=keys / "jwks.json",
    )


def _demo_toml(port: int) -> str:
    return f"""# Enclave Gateway demo (made by `enclave demo`). Dev keys: not for production.
[server]
host = "127.0.0.1"
port = {port}

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "keys/jwks.json"

[store]
url = "sqlite:///state/enclave.db"

[policies]
dir = "policies"
data_dir = "data"

[engine]
state_dir = "state"
"""

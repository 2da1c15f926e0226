"""Dev keys and tokens: files, modes, JWKS shape, minted tokens, TTLs and the CLI commands."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import click
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclave.auth.jwks import JwksCache
from enclave.auth.jwt import verify_token
from enclave.cli.keys import keys_group, token_command
from enclave.config import AuthConfig
from enclave.devkeys import generate_keys, kid_for, mint_token, parse_ttl, public_jwk, thumbprint

ISS = "https://idp.test/realms/enclave"
AUD = "enclave-gateway"


def test_generate_keys_files_and_modes(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path / "k")
    assert stat.S_IMODE(paths.private_pem.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(paths.private_pem.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    public = serialization.load_pem_public_key(paths.public_pem.read_bytes())
    assert public == key.public_key()
    doc = json.loads(paths.jwks_json.read_text("utf-8"))
    (jwk,) = doc["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert jwk["alg"] == "ES256" and jwk["use"] == "sig"
    assert jwk["kid"] == paths.kid == thumbprint(public_jwk(key.public_key()))
    assert not {"d", "p", "q"} & jwk.keys()  # public only


def test_generate_keys_explicit_kid_and_no_overwrite(tmp_path: Path) -> None:
    first = generate_keys(tmp_path, kid="mine")
    assert json.loads(first.jwks_json.read_text("utf-8"))["keys"][0]["kid"] == "mine"
    before = first.private_pem.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keys(tmp_path)
    assert first.private_pem.read_bytes() == before
    second = generate_keys(tmp_path, overwrite=True)
    assert second.private_pem.read_bytes() != before
    assert stat.S_IMODE(second.private_pem.stat().st_mode) == 0o600


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1 example key and its thumbprint
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
        "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNL"
        "yrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJ"
        "zKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_mint_token_claims_and_header(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path)
    assert paths.kid is not None
    before = int(time.time())
    tok = mint_token(
        paths.private_pem,
        sub="alice",
        roles=["researcher", "admin"],
        issuer=ISS,
        audience=AUD,
        ttl_s=900,
        kid=paths.kid,
        headers={"typ": "at+jwt"},
    )
    header = jwt.get_unverified_header(tok)
    assert header == {"alg": "ES256", "kid": paths.kid, "typ": "at+jwt"}
    public = serialization.load_pem_public_key(paths.public_pem.read_bytes())
    claims = jwt.decode(tok, public, algorithms=["ES256"], audience=AUD, issuer=ISS)  # type: ignore[arg-type]
    assert claims["sub"] == "alice" and claims["roles"] == ["researcher", "admin"]
    assert claims["iat"] == claims["nbf"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 900
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16


def test_mint_token_random_jti_extra_claims_and_removal(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path)
    pem = paths.private_pem.read_bytes()  # bytes work as well as a path
    common = {"sub": "a", "roles": [], "issuer": ISS, "audience": AUD, "ttl_s": 60, "kid": "k"}
    t1 = jwt.decode(mint_token(pem, **common), options={"verify_signature": False})  # type: ignore[arg-type]
    t2 = jwt.decode(mint_token(pem, **common), options={"verify_signature": False})  # type: ignore[arg-type]
    assert t1["jti"] != t2["jti"]
    t3 = jwt.decode(
        mint_token(pem, **common, jti="fixed", extra_claims={"exp": None, "org": "x"}),  # type: ignore[arg-type]
        options={"verify_signature": False},
    )
    assert t3["jti"] == "fixed" and "exp" not in t3 and t3["org"] == "x"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("30m", 1800), ("900s", 900), ("2d", 172800), ("900", 900), (" 5M ", 300)],
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "h", "1w", "-5m", "1.5h", "1h30m", "soon"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_ttl(text)


def test_kid_for_reads_jwks_beside_key_else_thumbprint(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path / "a", kid="named")
    assert kid_for(paths.private_pem) == "named"
    paths.jwks_json.unlink()
    key = serialization.load_pem_private_key(paths.private_pem.read_bytes(), None)
    assert kid_for(paths.private_pem) == thumbprint(public_jwk(key.public_key()))
    # a jwks.json for another key does not lend its kid
    other = generate_keys(tmp_path / "b", kid="other")
    paths.jwks_json.write_bytes(other.jwks_json.read_bytes())
    assert kid_for(paths.private_pem) != "other"


# -- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("enclave")
    group.add_command(keys_group)
    group.add_command(token_command)
    return group


def write_config(folder: Path, jwks: Path) -> Path:
    path = folder / "enclave.toml"
    path.write_text(
        f'[auth]\nissuer = "{ISS}"\naudience = "{AUD}"\njwks_file = "{jwks}"\n', "utf-8"
    )
    return path


async def test_cli_generate_then_token_verifies(tmp_path: Path, cli: click.Group) -> None:
    runner = CliRunner()
    out = tmp_path / "keys"
    result = runner.invoke(cli, ["keys", "generate", "--out", str(out), "--kid", "cli-key"])
    assert result.exit_code == 0, result.output
    assert "cli-key" in result.output and "private.pem" in result.output
    config = write_config(tmp_path, out / "jwks.json")
    result = runner.invoke(
        cli,
        [
            "token",
            "--key",
            str(out / "private.pem"),
            "--sub",
            "alice",
            "--roles",
            "researcher,admin",
            "--ttl",
            "30m",
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    tok = result.output.strip()
    assert "\n" not in tok  # only the token on stdout
    assert jwt.get_unverified_header(tok)["kid"] == "cli-key"
    auth = AuthConfig(issuer=ISS, audience=AUD, jwks_file=out / "jwks.json")
    async with JwksCache(auth) as cache:
        claims = await verify_token(tok, cache, auth)
    assert claims["sub"] == "alice" and claims["roles"] == ["researcher", "admin"]
    assert claims["exp"] - claims["iat"] == 1800


def test_cli_generate_refuses_to_overwrite(tmp_path: Path, cli: click.Group) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "generate", "--out", str(tmp_path)]).exit_code == 0
    again = runner.invoke(cli, ["keys", "generate", "--out", str(tmp_path)])
    assert again.exit_code != 0 and "--force" in again.output
    assert (
        runner.invoke(cli, ["keys", "generate", "--out", str(tmp_path), "--force"]).exit_code == 0
    )


def test_cli_token_flags_override_and_kid(tmp_path: Path, cli: click.Group) -> None:
    paths = generate_keys(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "token",
            "--key",
            str(paths.private_pem),
            "--sub",
            "bob",
            "--roles",
            "auditor",
            "--issuer",
            "https://other.test",
            "--audience",
            "aud-x",
            "--kid",
            "forced",
            "--jti",
            "t-1",
        ],
    )
    assert result.exit_code == 0, result.output
    tok = result.output.strip()
    claims = jwt.decode(tok, options={"verify_signature": False})
    assert claims["iss"] == "https://other.test" and claims["aud"] == "aud-x"
    assert claims["jti"] == "t-1" and claims["roles"] == ["auditor"]
    assert jwt.get_unverified_header(tok)["kid"] == "forced"


def test_cli_token_without_issuer_or_config(
    tmp_path: Path, cli: click.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = generate_keys(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENCLAVE_CONFIG", raising=False)
    args = ["token", "--key", str(paths.private_pem), "--sub", "a", "--roles", "researcher"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--issuer" in result.output
    # the default ./enclave.toml is used when present
    write_config(tmp_path, paths.jwks_json)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert jwt.decode(result.output.strip(), options={"verify_signature": False})["iss"] == ISS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--roles", "researcher,root"], "unknown role"),
        (["--roles", "researcher", "--ttl", "forever"], "duration"),
    ],
)
def test_cli_token_bad_options(
    tmp_path: Path, cli: click.Group, args: list[str], message: str
) -> None:
    paths = generate_keys(tmp_path)
    base = ["token", "--key", str(paths.private_pem), "--sub", "a", "--issuer", ISS]
    result = CliRunner().invoke(cli, [*base, "--audience", AUD, *args])
    assert result.exit_code == 2
    assert message in result.output

"""Development keys and tokens (``enclave keys generate``, ``enclave token``, ``enclave demo``).

Not an identity provider: production deployments point ``auth.jwks_url`` at a real IdP.
Keys are EC P-256 (ES256). The default ``kid`` is the key's RFC 7638 thumbprint, so the same
key always gets the same id and ``enclave token`` can find it again without being told.
``private.pem`` is created with mode 0600 and is never overwritten unless asked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes


@dataclass(frozen=True)
class KeyPaths:
    """Where a dev key pair lives; ``kid`` is set when ``generate_keys`` made it."""

    private_pem: Path
    public_pem: Path
    jwks_json: Path
    kid: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: PublicKeyTypes) -> dict[str, str]:
    """The bare public JWK (members of RFC 7638 only) of an EC, RSA or Ed25519 key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        size = (public_key.curve.key_size + 7) // 8
        nums = public_key.public_numbers()
        return {
            "crv": crv[public_key.curve.name],
            "kty": "EC",
            "x": _b64(nums.x.to_bytes(size, "big")),
            "y": _b64(nums.y.to_bytes(size, "big")),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        rn = public_key.public_numbers()
        return {
            "e": _b64(rn.e.to_bytes((rn.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": _b64(rn.n.to_bytes((rn.n.bit_length() + 7) // 8, "big")),
        }
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    raise ValueError("unsupported key type")


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (base64url)."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {k: jwk[k] for k in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode("utf-8")).digest())


def algorithm_for(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    """The JWS algorithm this project uses for a key type."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        return by_curve[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError("unsupported key type")


def jwks_document(public_key: PublicKeyTypes, kid: str) -> dict[str, Any]:
    """A one-key JWKS for ``public_key`` with ``kid``, ``alg`` and ``use: sig``."""
    jwk: dict[str, Any] = {**public_jwk(public_key), "kid": kid, "use": "sig"}
    jwk["alg"] = algorithm_for(public_key)
    return {"keys": [jwk]}


def generate_keys(out_dir: Path, kid: str | None = None, *, overwrite: bool = False) -> KeyPaths:
    """Write ``private.pem`` (0600), ``public.pem`` and ``jwks.json`` for a new P-256 key."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = KeyPaths(out_dir / "private.pem", out_dir / "public.pem", out_dir / "jwks.json")
    if not overwrite:
        for p in (paths.private_pem, paths.public_pem, paths.jwks_json):
            if p.exists():
                raise FileExistsError(f"{p} already exists")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    kid = kid or thumbprint(public_jwk(public))
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths.private_pem.unlink(missing_ok=True)  # so the 0600 mode applies to a fresh file
    fd = os.open(paths.private_pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    paths.public_pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    paths.jwks_json.write_text(json.dumps(jwks_document(public, kid), indent=2) + "\n", "utf-8")
    return KeyPaths(paths.private_pem, paths.public_pem, paths.jwks_json, kid)


def load_private_key(private_key_pem: bytes | Path) -> PrivateKeyTypes:
    data = private_key_pem.read_bytes() if isinstance(private_key_pem, Path) else private_key_pem
    return serialization.load_pem_private_key(data, password=None)


def kid_for(private_key_path: Path) -> str:
    """The ``kid`` of a private key: its entry in ``jwks.json`` beside it, else its thumbprint."""
    key = load_private_key(private_key_path)
    jwk = public_jwk(key.public_key())
    jwks_path = private_key_path.parent / "jwks.json"
    if jwks_path.is_file():
        document = json.loads(jwks_path.read_text("utf-8"))
        for entry in document.get("keys", []):
            if all(entry.get(k) == v for k, v in jwk.items()) and isinstance(entry.get("kid"), str):
                return str(entry["kid"])
    return thumbprint(jwk)


def mint_token(
    private_key_pem: bytes | Path,
    *,
    sub: str,
    roles: list[str] | tuple[str, ...],
    issuer: str,
    audience: str,
    ttl_s: int,
    kid: str,
    jti: str | None = None,
    extra_claims: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign a token with ``iss aud sub roles iat nbf exp jti``.

    ``extra_claims`` are merged last; a value of ``None`` removes that claim (tests use it
    to build tokens missing a required claim). ``headers`` are merged into the JOSE header.
    """
    key = load_private_key(private_key_pem)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "roles": list(roles),
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "jti": jti or secrets.token_urlsafe(16),
    }
    for name, value in (extra_claims or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    header = {"kid": kid, "typ": "JWT", **(headers or {})}
    return jwt.encode(claims, key, algorithm=algorithm_for(key), headers=header)  # type: ignore[arg-type]


_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``"1h"`` / ``"30m"`` / ``"900s"`` / ``"2d"`` / ``"900"`` → seconds (positive)."""
    match = _TTL.match(text.lower())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 900s, 30m, 1h, 2d")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds

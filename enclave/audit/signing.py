"""Signed chain heads: the gateway's Ed25519 statement "record ``seq`` of my log has ``hash``".

The hash chain alone shows that a log is internally consistent; it cannot show that the log
is *the* log. Someone with write access to the store can cut off the tail, or rebuild the
whole chain with re-computed hashes, and it still verifies. A signed head closes both gaps:
an auditor saves a head from time to time (``GET /v1/audit/verify`` or
``enclave audit head``); any later export must contain that head's ``seq`` with the same
``hash`` (a shorter export was truncated, a different hash means the history was rewritten),
and a forged head fails the signature check against the public key the auditor kept.

The key lives at ``<engine.state_dir>/audit-signing.pem`` (PKCS#8 PEM, created once, mode
0600, published through ``GET /v1/audit/key``). Replicas sharing one store should share the
file; ``key_id`` (the RFC 7638 JWK thumbprint) says which key signed a head.

A signed head is ``{"seq", "hash", "ts", "key_id", "signature"}``; ``signature`` is the
base64url (unpadded) Ed25519 signature over the canonical JSON (RFC 8785, ``chain.canonicalize``)
of ``{"hash", "key_id", "seq", "ts"}``. The gateway signs only a head it has just verified.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enclave.audit.chain import canonicalize
from enclave.ids import new_id
from enclave.models import iso, utcnow

log = logging.getLogger("enclave.audit")
KEY_FILE = "audit-signing.pem"
_HEX = frozenset("0123456789abcdef")


class HeadError(ValueError):
    """A signed head or key that cannot be read (malformed, wrong type)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def key_id_for(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 of the JWK's required members, canonical, base64url."""
    return b64url(hashlib.sha256(canonicalize(public_jwk(key))).digest())


@dataclass(frozen=True)
class SignedHead:
    seq: int
    hash: str
    ts: str
    key_id: str
    signature: str

    def payload(self) -> bytes:
        return head_payload(self.seq, self.hash, self.ts, self.key_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "ts": self.ts,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: Any) -> SignedHead:
        """Accept a head, or any object holding one under ``signed_head`` (a saved
        ``/v1/audit/verify`` answer, an export's last line)."""
        if isinstance(data, dict) and isinstance(data.get("signed_head"), dict):
            data = data["signed_head"]
        if not isinstance(data, dict):
            raise HeadError("a signed head must be a JSON object")
        seq, hash_ = data.get("seq"), data.get("hash")
        if type(seq) is not int or seq < 0:
            raise HeadError("signed head: seq must be a non-negative integer")
        if not isinstance(hash_, str) or len(hash_) != 64 or not set(hash_) <= _HEX:
            raise HeadError("signed head: hash must be 64 lowercase hex digits")
        texts = [data.get(k) for k in ("ts", "key_id", "signature")]
        if not all(isinstance(t, str) and t for t in texts):
            raise HeadError("signed head: ts, key_id and signature must be non-empty strings")
        return cls(seq, hash_, str(texts[0]), str(texts[1]), str(texts[2]))


def head_payload(seq: int, hash_: str, ts: str, key_id: str) -> bytes:
    return canonicalize({"seq": seq, "hash": hash_, "ts": ts, "key_id": key_id})


def verify_head(head: SignedHead, key: Ed25519PublicKey) -> str | None:
    """``None`` if ``head`` was signed by ``key``; otherwise the reason it was not."""
    if head.key_id != key_id_for(key):
        return "the head was signed by a different key (key_id does not match)"
    try:
        key.verify(b64url_decode(head.signature), head.payload())
    except (InvalidSignature, ValueError):
        return "the head's signature does not verify with this key"
    return None


class HeadSigner:
    """The gateway's signing key; ``sign(seq, hash)`` makes a head stamped now."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_for(self.public_key)

    def sign(self, seq: int, hash_: str, ts: str | None = None) -> SignedHead:
        ts = ts or iso(utcnow())
        signature = self._key.sign(head_payload(seq, hash_, ts, self.key_id))
        return SignedHead(seq, hash_, ts, self.key_id, b64url(signature))

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def key_json(self) -> dict[str, Any]:
        """The body of ``GET /v1/audit/key``."""
        jwk = {**public_jwk(self.public_key), "kid": self.key_id, "alg": "EdDSA", "use": "sig"}
        return {
            "key_id": self.key_id,
            "algorithm": "Ed25519",
            "public_key_pem": self.public_pem(),
            "jwk": jwk,
        }


def load_or_create_signer(state_dir: Path) -> HeadSigner:
    """Read ``state_dir/audit-signing.pem``, creating it (mode 0600) on first use.

    Creation is atomic across processes: the key is written to a private temporary file and
    hard-linked into place, which fails if another process got there first (then its key is
    read). Blocking file I/O: call it from a worker thread in async code.
    """
    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        _create(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); it should be 0600", path, mode)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise HeadError(f"{KEY_FILE} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise HeadError(f"{KEY_FILE} does not hold an Ed25519 key")
    return HeadSigner(key)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{KEY_FILE}.{new_id('tmp')}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, a JWK, or a saved ``/v1/audit/key`` answer."""
    text = data.strip()
    if text.startswith(b"{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise HeadError("the key file is not valid JSON") from exc
        if isinstance(obj, dict) and isinstance(obj.get("jwk"), dict):
            obj = obj["jwk"]
        if not (isinstance(obj, dict) and obj.get("kty") == "OKP" and obj.get("crv") == "Ed25519"):
            raise HeadError("the key is not an Ed25519 JWK")
        try:
            return Ed25519PublicKey.from_public_bytes(b64url_decode(str(obj.get("x", ""))))
        except ValueError as exc:
            raise HeadError("the JWK's x is not an Ed25519 public key") from exc
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError as exc:
        raise HeadError("the key file is neither a PEM public key nor a JWK") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise HeadError("the key is not an Ed25519 public key")
    return key

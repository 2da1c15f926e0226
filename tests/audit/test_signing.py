"""``audit/signing.py``: the head-signing key on disk, signed heads, and public key formats."""

from __future__ import annotations

import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enclave.audit.signing import (
    KEY_FILE,
    HeadError,
    HeadSigner,
    SignedHead,
    b64url_decode,
    key_id_for,
    load_or_create_signer,
    load_public_key,
    verify_head,
)

HASH = "ab" * 32


def test_key_id_is_the_rfc7638_thumbprint() -> None:
    # RFC 8037 Appendix A.3: the JWK thumbprint of its Ed25519 example key.
    raw = b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    key = Ed25519PublicKey.from_public_bytes(raw)
    assert key_id_for(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nested"
    first = load_or_create_signer(state)
    path = state / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_signer(state).key_id == first.key_id
    assert [p.name for p in state.iterdir()] == [KEY_FILE]  # no temporary file left behind


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda _: load_or_create_signer(tmp_path).key_id, range(16)))
    assert len(ids) == 1


def test_a_key_file_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(HeadError, match="Ed25519"):
        load_or_create_signer(tmp_path)
    (tmp_path / KEY_FILE).write_text("garbage")
    with pytest.raises(HeadError):
        load_or_create_signer(tmp_path)


def test_signature_covers_the_canonical_head() -> None:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    head = signer.sign(42, HASH, ts="2026-01-01T00:00:00.000Z")
    assert (
        head.payload()
        == (
            f'{{"hash":"{HASH}","key_id":"{signer.key_id}","seq":42,'
            '"ts":"2026-01-01T00:00:00.000Z"}'
        ).encode()
    )
    signer.public_key.verify(b64url_decode(head.signature), head.payload())
    assert verify_head(head, signer.public_key) is None
    assert SignedHead.from_json(json.loads(json.dumps(head.to_json()))) == head
    for changed in (
        SignedHead(43, head.hash, head.ts, head.key_id, head.signature),
        SignedHead(head.seq, "cd" * 32, head.ts, head.key_id, head.signature),
        SignedHead(head.seq, head.hash, "2027-01-01T00:00:00.000Z", head.key_id, head.signature),
        SignedHead(head.seq, head.hash, head.ts, head.key_id, head.signature[:-4] + "AAAA"),
        SignedHead(head.seq, head.hash, head.ts, head.key_id, "!!not base64!!"),
    ):
        assert "signature" in (verify_head(changed, signer.public_key) or "")
    other = HeadSigner(Ed25519PrivateKey.generate())
    assert "different key" in (verify_head(head, other.public_key) or "")


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"seq": "1", "hash": HASH, "ts": "t", "key_id": "k", "signature": "s"},
        {"seq": -1, "hash": HASH, "ts": "t", "key_id": "k", "signature": "s"},
        {"seq": 1, "hash": HASH.upper(), "ts": "t", "key_id": "k", "signature": "s"},
        {"seq": 1, "hash": HASH[:-1], "ts": "t", "key_id": "k", "signature": "s"},
        {"seq": 1, "hash": HASH, "ts": "", "key_id": "k", "signature": "s"},
        {"seq": 1, "hash": HASH, "ts": "t", "key_id": "k"},
        {"signed_head": None},
    ],
)
def test_malformed_heads_are_refused(bad: object) -> None:
    with pytest.raises(HeadError):
        SignedHead.from_json(bad)


def test_public_keys_load_from_pem_jwk_and_the_key_endpoint_body() -> None:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    body = signer.key_json()
    assert body["jwk"]["kid"] == signer.key_id and body["algorithm"] == "Ed25519"
    for data in (
        signer.public_pem().encode(),
        json.dumps(body["jwk"]).encode(),
        json.dumps(body).encode(),
    ):
        assert key_id_for(load_public_key(data)) == signer.key_id
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for junk in (
        b"nonsense",
        b"{not json",
        b'{"kty": "RSA"}',
        b'{"kty":"OKP","crv":"Ed25519","x":"AA"}',
        ec_pem,
    ):
        with pytest.raises(HeadError):
            load_public_key(junk)

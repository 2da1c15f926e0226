"""The hash chain over audit records: one canonical encoding, one hash rule, one verifier.

``hash = sha256(prev_hash + canonical_json(record))`` where ``prev_hash`` is the previous
record's hash as ASCII hex (64 zeros for the first record) and ``canonical_json`` is the
record's JSON *without* ``hash``: sorted keys, no whitespace (separators ``,`` and ``:``),
``ensure_ascii=False``, encoded as UTF-8.

Which fields are hashed: every field of ``AuditRecord`` except ``hash`` (``detail`` included,
``null`` when absent). A dict is reduced to exactly those fields, a missing one read as
``null``, so an export that adds a column (or drops a ``null`` one) still verifies; a change to
any hashed value does not.

Numbers: ``epsilon`` and ``delta`` are finite floats and are written as Python's shortest
round-trip ``repr`` (``0.5``, ``1e-06``), which is what ``json.dumps`` does. NaN and infinity
are refused (``ValueError``): they are not JSON, and a verifier in another language could not
reproduce them. ``seq`` is an integer and ``cached`` a boolean. A verifier written elsewhere
must format floats the same way (shortest round-trip, exponent as Python prints it).

``verify`` streams: it keeps only the previous hash and the expected ``seq``, so it runs in
constant memory over an export of any length. It detects an edited record (hash mismatch), a
deleted, inserted or reordered record (``seq`` must run 1, 2, 3, … and each ``prev_hash`` must
equal the previous record's ``hash``). It cannot detect a truncated tail, or a tail re-hashed
by someone with write access: the chain has no key. Signed heads (a later addition) close that.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from enclave.audit.record import GENESIS_HASH, AuditRecord

#: The hashed fields, in sorted order (the canonical key order).
HASHED_FIELDS: tuple[str, ...] = tuple(
    sorted(f.name for f in fields(AuditRecord) if f.name != "hash")
)

_encode_sorted = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True
).encode
_encode_str: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)


def _fast(get: Callable[[str], Any]) -> str:
    """One ``%`` over a fixed template: the common record shape (every value a str, None, the
    usual number types, ``detail`` None). Raises ``_Slow`` (or TypeError) otherwise."""
    enc = _encode_str
    seq, cached, eps, delta = get("seq"), get("cached"), get("epsilon"), get("delta")
    if (
        type(seq) is not int
        or type(cached) is not bool
        or type(eps) is not float
        or type(delta) is not float
        or not (math.isfinite(eps) and math.isfinite(delta))
        or get("detail") is not None
    ):
        raise _Slow
    roles = get("roles")
    if type(roles) is not list:
        raise _Slow

    def opt(name: str) -> str:
        value = get(name)
        return "null" if value is None else enc(value)

    return _TEMPLATE % (
        enc(get("action")),
        enc(get("actor")),
        "true" if cached else "false",
        opt("client"),
        opt("dataset"),
        float.__repr__(delta),
        float.__repr__(eps),
        opt("licence_id"),
        enc(get("outcome")),
        enc(get("prev_hash")),
        opt("reason"),
        enc(get("request_id")),
        opt("result_sha256"),
        "[" + ",".join(map(enc, roles)) + "]",
        int.__repr__(seq),
        opt("sql"),
        opt("tier"),
        enc(get("ts")),
    )


class _Slow(Exception):
    pass


_TEMPLATE = (
    '{"action":%s,"actor":%s,"cached":%s,"client":%s,"dataset":%s,"delta":%s,"detail":null,'
    '"epsilon":%s,"licence_id":%s,"outcome":%s,"prev_hash":%s,"reason":%s,"request_id":%s,'
    '"result_sha256":%s,"roles":%s,"seq":%s,"sql":%s,"tier":%s,"ts":%s}'
)
if tuple(re.findall(r'"(\w+)":', _TEMPLATE)) != HASHED_FIELDS:  # AuditRecord gained a field
    raise RuntimeError("audit/chain.py: _TEMPLATE is out of step with AuditRecord")


def canonical_json(record: dict[str, Any] | AuditRecord) -> bytes:
    """The record's canonical JSON without ``hash``, as UTF-8 bytes.

    The fast path fills a fixed template whose keys are already sorted (byte-for-byte what
    ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` gives, as
    ``tests/unit/test_chain.py`` checks over many random records); anything unusual (a
    ``detail`` object, a value of an unexpected type, a non-finite float) goes through ``json``
    itself, which refuses NaN and infinity. Verification speed is a requirement: an auditor
    re-verifies the whole log on demand.
    """
    get = record.get if isinstance(record, dict) else record.__dict__.get
    try:
        return _fast(get).encode("utf-8")
    except (_Slow, TypeError):
        body = {name: get(name) for name in HASHED_FIELDS}
        return _encode_sorted(body).encode("utf-8")


def chain_hash(prev_hash: str, record: dict[str, Any] | AuditRecord) -> str:
    """SHA-256 (hex) over ``prev_hash`` (ASCII) followed by ``canonical_json(record)``."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical_json(record))
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """``count`` and ``head`` describe the verified prefix (all of it when ``valid``)."""

    valid: bool
    count: int
    head: str
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.valid:
            return {"valid": True, "count": self.count, "head": self.head}
        return {"valid": False, "first_bad_seq": self.first_bad_seq, "reason": self.reason}


def verify(records: Iterable[dict[str, Any] | AuditRecord]) -> VerifyResult:
    """Check the chain in order. ``first_bad_seq`` is the position (1-based, which is the seq
    the record there should have) of the first record that does not follow from its
    predecessor; ``reason`` says which check failed and never quotes record contents."""
    prev = GENESIS_HASH
    expected = 1
    for record in records:
        if isinstance(record, AuditRecord):
            seq: Any = record.seq
            prev_hash: Any = record.prev_hash
            stored: Any = record.hash
        else:
            seq, prev_hash, stored = record.get("seq"), record.get("prev_hash"), record.get("hash")
        if type(seq) is not int or seq != expected:
            reason = (
                "sequence gap" if type(seq) is int and seq > expected else "sequence out of order"
            )
            return _bad(expected, prev, f"{reason}: expected seq {expected}")
        if prev_hash != prev:
            return _bad(expected, prev, "prev_hash does not match the previous record's hash")
        try:
            computed = chain_hash(prev, record)
        except (ValueError, TypeError, UnicodeEncodeError):
            return _bad(expected, prev, "record cannot be encoded canonically")
        if computed != stored:
            return _bad(expected, prev, "hash does not match the record's contents")
        prev = computed
        expected += 1
    return VerifyResult(valid=True, count=expected - 1, head=prev)


def _bad(seq: int, head: str, reason: str) -> VerifyResult:
    return VerifyResult(valid=False, count=seq - 1, head=head, first_bad_seq=seq, reason=reason)

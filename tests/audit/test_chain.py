"""``audit/chain.py``: the canonical encoding, the hash rule and the streaming verifier."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import subprocess
from typing import Any

import pytest

from enclave.audit.chain import (
    HASHED_FIELDS,
    CanonicalError,
    ChainVerifier,
    canonical_json,
    canonicalize,
    chain_hash,
    format_number,
    verify,
)
from enclave.audit.record import FIELDS, GENESIS_HASH, AuditRecord


def _record(seq: int, prev: str, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "seq": seq,
        "ts": "2026-11-22T10:31:07.120Z",
        "request_id": f"req_{seq}",
        "actor": "alice",
        "roles": ["researcher"],
        "licence_id": "lic_1",
        "tier": "standard",
        "action": "query",
        "dataset": "visits",
        "sql": "SELECT region, COUNT(*) FROM visits GROUP BY region",
        "epsilon": 0.5,
        "delta": 0.0,
        "cached": False,
        "outcome": "ok",
        "reason": None,
        "client": "203.0.113.7",
        "result_sha256": "ab" * 32,
        "prev_hash": prev,
        "detail": None,
    }
    rec.update(over)
    rec["hash"] = chain_hash(prev, rec)
    return rec


def _chain(n: int) -> list[dict[str, Any]]:
    out, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        rec = _record(seq, prev)
        out.append(rec)
        prev = rec["hash"]
    return out


def _reference(record: dict[str, Any]) -> bytes:
    """The contract's rule written the obvious way: the general RFC 8785 encoder over the
    hashed fields (the fast path must agree with it byte for byte)."""
    return canonicalize({k: record.get(k) for k in HASHED_FIELDS})


def test_hash_is_sha256_of_prev_hash_and_canonical_json() -> None:
    rec = _record(1, GENESIS_HASH, epsilon=1e-06, delta=5.0)
    expected = hashlib.sha256(GENESIS_HASH.encode() + _reference(rec)).hexdigest()
    assert rec["hash"] == expected
    text = canonical_json(rec).decode()
    assert '"hash"' not in text and " " not in text.replace(
        "SELECT region, COUNT(*) FROM visits GROUP BY region", ""
    )
    assert text.startswith('{"action":"query","actor":"alice","cached":false,')
    # ECMAScript number layout, not Python's: 1e-06 -> 0.000001, 5.0 -> 5
    assert '"epsilon":0.000001,' in text and '"delta":5,' in text


def _random_value(rng: random.Random, name: str) -> Any:
    pick = rng.random()
    if name == "detail":
        return rng.choice(
            [None, {"z": 1, "a": [1.5, "x"], "m": {"q": None, "b": True}}, {}, {"\u20ac": 1e-7}]
        )
    if name == "roles":
        return rng.choice([[], ["researcher"], ["auditor", "admin"], ['ü"\\\n'], [1]])
    if name in ("epsilon", "delta"):
        return rng.choice([0.0, 0.1, 1e-06, 1e-300, 123456789.125, 0.30000000000000004, 2, True])
    if name in ("seq",):
        return rng.choice([1, 10**12, "7", 3.0, False])
    if name == "cached":
        return rng.choice([True, False, 0, 1])
    if pick < 0.2:
        return None
    if pick < 0.25:
        return rng.choice([7, 2.5, ["x"]])
    alphabet = "aZ09 \"\\/\n\t\x00\x1f\x7f\u00e9\u2028\U0001f600<>&'"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def test_fast_encoding_matches_the_general_encoder_on_random_records() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        rec = {name: _random_value(rng, name) for name in HASHED_FIELDS}
        rec["hash"] = "ignored"
        if rng.random() < 0.2:
            rec["extra"] = "not hashed"
        assert canonical_json(rec) == _reference(rec)
    fields = {name: _random_value(rng, name) for name in HASHED_FIELDS}
    record = AuditRecord(**{**fields, "hash": "h"})
    assert canonical_json(record) == _reference(fields)


# RFC 8785 Appendix B: IEEE-754 bit patterns and their canonical text.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), RFC8785_NUMBERS)
def test_rfc8785_number_vectors(bits: str, text: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert format_number(value) == text


def test_integers_and_layout_edges() -> None:
    assert [format_number(v) for v in (5.0, 1e20, 1e21, 1e-7, 1e16, 0.5, -2.0)] == [
        "5", "100000000000000000000", "1e+21", "1e-7", "10000000000000000", "0.5", "-2",
    ]  # fmt: skip
    assert format_number(2**60) == "1152921504606847000"  # a double exactly: ES layout
    assert format_number(-(2**53)) == "-9007199254740992"
    with pytest.raises(CanonicalError):
        format_number(2**53 + 1)  # not representable: refused rather than rounded


def test_rfc8785_sample_object_and_key_order() -> None:
    sample = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert (
        canonicalize(sample)
        == (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    order = json.loads(canonicalize(dict.fromkeys(keys, 0)))
    assert list(order) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_lone_surrogates_are_refused_clearly() -> None:
    with pytest.raises(CanonicalError, match="surrogate"):
        canonical_json(_record(1, GENESIS_HASH) | {"sql": "SELECT '\ud800'"})
    with pytest.raises(CanonicalError, match="surrogate"):
        canonicalize({"k": ["\udfff"]})
    # a proper pair (one code point in Python) is fine, and written as UTF-8
    assert canonicalize("\U0001f600") == '"\U0001f600"'.encode()


def test_strings_are_escaped_as_json_stringify_does() -> None:
    text = 'q"b\\s/\b\f\n\r\t\x00\x1f\x7f\u2028\u2029é'
    assert canonicalize(text).decode() == (
        '"q\\"b\\\\s/\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\u2028\u2029é"'
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({**_record(1, GENESIS_HASH), "epsilon": bad})


def test_missing_null_fields_and_extra_columns_do_not_matter() -> None:
    rec = _record(1, GENESIS_HASH)
    trimmed = {k: v for k, v in rec.items() if v is not None}
    assert chain_hash(GENESIS_HASH, trimmed) == rec["hash"]
    assert chain_hash(GENESIS_HASH, {**rec, "exported_by": "x"}) == rec["hash"]


def test_valid_chain_and_empty_chain() -> None:
    records = _chain(50)
    result = verify(iter(records))
    assert (result.valid, result.count, result.head) == (True, 50, records[-1]["hash"])
    assert result.to_json() == {"valid": True, "count": 50, "head": records[-1]["hash"]}
    assert verify([]) == verify([]).__class__(True, 0, GENESIS_HASH)
    records_as_objects = [AuditRecord(**{n: r.get(n) for n in FIELDS}) for r in records]
    assert verify(records_as_objects).valid


def _tampered(kind: str) -> list[dict[str, Any]]:
    records = _chain(10)
    if kind == "edit":
        records[4] = {**records[4], "actor": "mallory"}
    elif kind == "edit-detail":
        records[4] = {**records[4], "detail": {"note": "added"}}
    elif kind == "rehash-one":  # recomputed hash, but the successor still points at the old
        forged = {**records[4], "epsilon": 0.001}
        forged["hash"] = chain_hash(forged["prev_hash"], forged)
        records[4] = forged
    elif kind == "delete":
        del records[4]
    elif kind == "reorder":
        records[4], records[5] = records[5], records[4]
    elif kind == "renumber-after-delete":
        del records[4]
        records[4:] = [{**r, "seq": r["seq"] - 1} for r in records[4:]]
    elif kind == "insert":
        records.insert(4, _record(5, records[3]["hash"], actor="mallory"))
        records[5:] = [{**r, "seq": r["seq"] + 1} for r in records[5:]]
    elif kind == "bad-genesis":
        records[0] = _record(1, "f" * 64)
        return records[:1]
    elif kind == "duplicate":
        records.insert(5, records[4])
    elif kind == "seq-type":
        records[4] = {**records[4], "seq": "5"}
    return records


@pytest.mark.parametrize(
    ("kind", "first_bad", "reason"),
    [
        ("edit", 5, "hash"),
        ("edit-detail", 5, "hash"),
        ("rehash-one", 6, "prev_hash"),
        ("delete", 5, "gap"),
        ("reorder", 5, "gap"),
        ("renumber-after-delete", 5, "prev_hash"),
        ("insert", 6, "prev_hash"),
        ("bad-genesis", 1, "prev_hash"),
        ("duplicate", 6, "order"),
        ("seq-type", 5, "order"),
    ],
)
def test_tampering_is_detected(kind: str, first_bad: int, reason: str) -> None:
    result = verify(_tampered(kind))
    assert not result.valid
    assert result.first_bad_seq == first_bad
    assert result.count == first_bad - 1
    assert reason in (result.reason or "")
    assert "mallory" not in (result.reason or "")
    assert set(result.to_json()) == {"valid", "first_bad_seq", "reason"}


def test_verify_streams() -> None:
    records = _chain(20000)
    consumed = 0

    def stream() -> Any:
        nonlocal consumed
        for r in records:
            consumed += 1
            yield r

    result = verify(stream())
    assert result.valid and consumed == 20000
    # Speed is measured by bench/ (audit verify), never asserted here: a loaded machine made
    # a floor of 20k records/s fail at 10k.


def test_incremental_verifier_stops_at_the_first_bad_record() -> None:
    records = _tampered("edit")
    checker = ChainVerifier()
    fed = [checker.feed(r) for r in records]
    assert fed[:4] == [True] * 4 and not any(fed[4:])
    assert checker.result() == verify(records)


NODE_NUMBERS = """
const lines = require("fs").readFileSync(0, "utf8").trim().split("\\n");
const num = (h) => JSON.stringify(Buffer.from(h, "hex").readDoubleBE(0));
for (const h of lines) process.stdout.write(num(h) + "\\n");
"""


def test_number_formatting_matches_node_on_random_doubles() -> None:
    """An independent check of the ECMAScript layout: node's own JSON.stringify."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot cross-check number formatting")
    rng = random.Random(3)
    values = [
        struct.pack(">d", rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)) for _ in range(3000)
    ]
    values += [struct.pack(">Q", rng.getrandbits(64)) for _ in range(3000)]
    values = [v for v in values if struct.unpack(">d", v)[0] == struct.unpack(">d", v)[0]]
    finite = [v for v in values if abs(struct.unpack(">d", v)[0]) != float("inf")]
    out = subprocess.run(
        [node, "-e", NODE_NUMBERS],
        input="\n".join(v.hex() for v in finite),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    ours = [format_number(struct.unpack(">d", v)[0]) for v in finite]
    assert ours == out

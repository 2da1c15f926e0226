"""``audit/export.py``: JSONL and CSV rendering (hostile text, formula injection) and the
offline verification of an export file."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit.chain import build_record, verify
from enclave.audit.export import csv_rows, neutralise, trailer_line, verify_export
from enclave.audit.record import FIELDS, GENESIS_HASH, AuditDraft, AuditRecord
from enclave.audit.rows import record_line
from enclave.audit.signing import HeadSigner

HOSTILE = [
    'SELECT 1 -- "quoted", comma\nnew line\r\nCRLF',
    "\u2028\u2029\x85\x0b\x0c\x1c separators \U0001f600 é",
    '=HYPERLINK("http://evil")',
    "back\\slash \x00 nul",
]


def _chain(n: int) -> list[AuditRecord]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        draft = AuditDraft(
            action="query",
            outcome="ok",
            actor="alice" if i % 2 else "=bob",
            roles=("researcher",),
            dataset="visits",
            sql=HOSTILE[i % len(HOSTILE)],
            epsilon=0.1 * (i + 1),
            delta=1e-7,
            detail={"n": i, "why": "-x"} if i % 3 else None,
        )
        record = build_record(draft, i + 1, f"2026-01-01T00:00:{i % 60:02d}.000Z", prev)
        out.append(record)
        prev = record.hash
    return out


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\nx", "'\nx"),
        ("SELECT =1", "SELECT =1"),
        ("", ""),
        ("'already", "'already"),
    ],
)
def test_neutralise(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


def test_jsonl_lines_are_single_ascii_lines_that_round_trip_and_verify() -> None:
    records = _chain(12)
    lines = [record_line(r) for r in records]
    for line, record in zip(lines, records, strict=True):
        assert line.isascii() and line.endswith("\n") and line.count("\n") == 1
        assert len(line.splitlines()) == 1  # even str.splitlines, which splits on U+2028
        assert json.loads(line) == record.to_json()
        assert list(json.loads(line)) == list(FIELDS)
    assert verify(json.loads(line) for line in lines).valid


def test_csv_quotes_properly_and_neutralises_every_text_cell() -> None:
    records = _chain(8)
    text = csv_rows([None, *records])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(FIELDS) and len(rows) == 9
    sql_col, actor_col = FIELDS.index("sql"), FIELDS.index("actor")
    detail_col = FIELDS.index("detail")
    for row, record in zip(rows[1:], records, strict=True):
        assert row[sql_col] == neutralise(record.sql or "")
        assert row[actor_col] == neutralise(record.actor)
        assert row[FIELDS.index("seq")] == str(record.seq)
        if record.detail is not None:
            assert json.loads(row[detail_col]) == record.detail
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r", "\n"))
    assert rows[3][sql_col] == '\'=HYPERLINK("http://evil")'


def _export_lines(records: list[AuditRecord], signer: HeadSigner) -> list[str]:
    result = verify(records)
    head = signer.sign(result.count, result.head)
    return [record_line(r) for r in records] + [trailer_line(head, result)]


def test_verify_export_accepts_a_clean_file_and_checks_its_trailer() -> None:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    lines = _export_lines(_chain(20), signer)
    verdict = verify_export(lines, key=signer.public_key)
    assert verdict.valid and verdict.result.count == 20 and verdict.notes == ()
    assert verify_export(lines).valid and verify_export(lines).notes  # unkeyed: a note
    other = HeadSigner(Ed25519PrivateKey.generate())
    assert not verify_export(lines, key=other.public_key).valid
    empty = _export_lines([], signer)
    assert verify_export(empty, key=signer.public_key).valid


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda ls: [*ls[:3], "not json\n", *ls[3:]], "not valid JSON"),
        (lambda ls: [*ls[:3], "[1]\n", *ls[3:]], "not a JSON object"),
        (lambda ls: [*ls, ls[0]], "follows the signed-head trailer"),
        (lambda ls: ls[:-1], "no signed-head trailer"),
        (lambda ls: [*ls[:5], *ls[6:]], "chain broken at seq 6"),
        (lambda ls: [*ls[:-2], ls[-1]], "does not match its last record"),
        (
            lambda ls: [*ls[:-1], '{"signed_head": null, "verify": {"valid": false}}\n'],
            "did not sign",
        ),
        (lambda ls: [ls[0].replace('"seq":1', '"seq":NaN'), *ls[1:]], "not valid JSON"),
        # A line must be exactly the record: the documented independent verifier hashes the
        # line as written, so an extra member or a dropped null must not pass here either.
        (
            lambda ls: [ls[0], ls[1].replace('{"seq":2,', '{"seq":2,"note":"ok",'), *ls[2:]],
            "line 2 does not hold exactly the record's fields",
        ),
        (
            lambda ls: [ls[0].replace(',"reason":null', ""), *ls[1:]],
            "line 1 does not hold exactly the record's fields",
        ),
        # A repeated member: the hash covers the last value, grep and some readers the first.
        (
            lambda ls: [ls[0], ls[1].replace('"actor":', '"actor":"bob","actor":', 1), *ls[2:]],
            "line 2 is not valid JSON: a member name repeats",
        ),
        (
            lambda ls: [ls[0], ls[1].replace('"detail":{', '"detail":{"n":9,', 1), *ls[2:]],
            "line 2 is not valid JSON: a member name repeats",
        ),
    ],
)
def test_verify_export_names_what_is_wrong(mutate: Any, fragment: str) -> None:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    verdict = verify_export(mutate(_export_lines(_chain(10), signer)), key=signer.public_key)
    assert not verdict.valid
    assert any(fragment in p for p in verdict.problems), verdict.problems

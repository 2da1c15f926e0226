"""Verifying the audit chain straight from database rows, in segments that can run in parallel.

``audit.chain.ChainVerifier`` checks ``AuditRecord`` objects; building one per row (and its
JSON decoding) cost more than the hashing, so store verification ran at ~36,000 records/s.
Here a row stays the tuple the driver returned (columns in ``ROW_COLUMNS`` order) and its
canonical JSON is filled into ``chain._TEMPLATE`` directly:

- text columns go through the same string escaper as ``chain.canonical_json``; ``roles`` and
  ``detail`` (stored as JSON text) are decoded and re-encoded with ``chain``'s general encoder,
  memoised per distinct text (a chain holds few distinct role lists); numbers through
  ``chain.format_number``, memoised per value;
- **anything the fast path does not expect, or any hash mismatch, is re-checked through the
  exact path** (``row_record`` → ``chain.chain_hash``, the code the records were hashed with),
  so the fast path can only ever be a shortcut to the same verdict, never a different one.

A chain splits into seq ranges (segments) that verify independently, because every row stores
its own ``prev_hash``: a segment checks its rows' seq run, links and hashes, and remembers the
``prev_hash`` of its first row; ``join_segments`` then checks that each segment's first
``prev_hash`` is the previous segment's last hash. The verdict (``first_bad_seq``, ``reason``,
``count``, ``head``) is exactly what ``ChainVerifier`` gives over the same rows in one pass
(``tests/store/test_chain_rows.py`` compares them on tampered chains).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from enclave.audit.chain import (
    _TEMPLATE,
    VerifyResult,
    _encode_str,
    _write,
    chain_hash,
    format_number,
)
from enclave.audit.record import GENESIS_HASH, AuditRecord

ROW_COLUMNS: tuple[str, ...] = (
    "seq", "ts", "request_id", "actor", "roles", "licence_id", "tier", "action", "dataset",
    "sql", "epsilon", "delta", "cached", "outcome", "reason", "client", "result_sha256",
    "detail", "prev_hash", "hash",
)  # fmt: skip
_MEMO_MAX = 4096
_numbers: dict[float, str] = {}
_json_texts: dict[str, str] = {}
Progress = Callable[[int], None]


def row_record(row: Sequence[Any]) -> AuditRecord:
    """The ``AuditRecord`` of a row, decoded as ``codec.record_from_row`` does."""
    values = dict(zip(ROW_COLUMNS, row, strict=True))
    detail = values["detail"]
    values.update(
        seq=int(values["seq"]),
        roles=list(json.loads(values["roles"])),
        epsilon=float(values["epsilon"]),
        delta=float(values["delta"]),
        cached=bool(values["cached"]),
        detail=json.loads(detail) if detail is not None else None,
    )
    return AuditRecord(**values)


def _number(value: Any) -> str:
    text = _numbers.get(value)
    if text is None:
        text = format_number(float(value))
        if len(_numbers) < _MEMO_MAX:
            _numbers[value] = text
    return text


def _json(text: str, as_list: bool) -> str:
    found = _json_texts.get(text) if as_list else None
    if found is None:
        value = json.loads(text)
        out: list[str] = []
        _write(list(value) if as_list else value, out)
        found = "".join(out)
        if as_list and len(_json_texts) < _MEMO_MAX:
            _json_texts[text] = found
    return found


def fast_canonical(row: Sequence[Any]) -> bytes:
    """``chain.canonical_json`` of a row's record, built straight from the row; raises
    ``TypeError``/``ValueError`` on anything unusual (the escaper refuses a non-string, so a
    text column holding a number is never silently encoded as text)."""
    (seq, ts, request_id, actor, roles, licence_id, tier, action, dataset, sql, eps, delta,
     cached, outcome, reason, client, result_sha256, detail, prev_hash, _hash) = row  # fmt: skip
    if type(seq) is not int or type(roles) is not str:
        raise TypeError("unusual row")
    enc = _encode_str
    nums = _numbers
    text = _TEMPLATE % (
        enc(action),
        enc(actor),
        "true" if cached else "false",
        "null" if client is None else enc(client),
        "null" if dataset is None else enc(dataset),
        nums.get(delta) or _number(delta),
        "null" if detail is None else _json(detail, False),
        nums.get(eps) or _number(eps),
        "null" if licence_id is None else enc(licence_id),
        enc(outcome),
        enc(prev_hash),
        "null" if reason is None else enc(reason),
        enc(request_id),
        "null" if result_sha256 is None else enc(result_sha256),
        _json_texts.get(roles) or _json(roles, True),
        format_number(seq),
        "null" if sql is None else enc(sql),
        "null" if tier is None else enc(tier),
        enc(ts),
    )
    return text.encode("utf-8")


def row_hash(prev: str, row: Sequence[Any]) -> str:
    """The chain hash of ``row`` after ``prev``, by the exact path (raises ``ValueError``/
    ``TypeError`` for a row with no canonical form)."""
    return chain_hash(prev, row_record(row))


@dataclass(frozen=True)
class Segment:
    """What one seq range ``[start, end]`` showed. ``count`` rows verified from ``start``;
    ``first_prev`` is the first row's ``prev_hash`` (its link is checked by ``join_segments``);
    ``last_hash`` the hash of the last verified row; ``bad`` a ``(kind, reason)`` for the row at
    ``start + count`` (kind ``seq``, ``link`` or ``hash``); ``watched`` the hash of the row
    ``watch``, if verified here."""

    start: int
    end: int
    count: int
    first_prev: str | None
    last_hash: str | None
    bad: tuple[str, str] | None
    watched: str | None = None


def verify_segment(rows: Iterable[Sequence[Any]], start: int, end: int, watch: int = -1) -> Segment:
    """Check rows meant to hold seq ``start..end`` in order (see ``Segment``)."""
    sha256 = hashlib.sha256
    expected = start
    prev: str | None = None
    first_prev: str | None = None
    watched: str | None = None
    bad: tuple[str, str] | None = None
    for row in rows:
        seq, prev_hash, stored = row[0], row[18], row[19]
        if type(seq) is not int or seq != expected:
            gap = type(seq) is int and seq > expected
            reason = "sequence gap" if gap else "sequence out of order"
            bad = ("seq", f"{reason}: expected seq {expected}")
            break
        if prev is None:
            first_prev = prev_hash if type(prev_hash) is str else ""
            prev = first_prev
        elif prev_hash != prev:
            bad = ("link", "prev_hash does not match the previous record's hash")
            break
        try:
            computed = sha256(prev.encode("ascii") + fast_canonical(row)).hexdigest()
        except (ValueError, TypeError, KeyError, UnicodeEncodeError):
            computed = ""
        if computed != stored:
            try:
                computed = row_hash(prev, row)
            except (ValueError, TypeError, UnicodeEncodeError):
                bad = ("hash", "record cannot be encoded canonically")
                break
            if computed != stored:
                bad = ("hash", "hash does not match the record's contents")
                break
        if seq == watch:
            watched = computed
        prev = computed
        expected += 1
        if expected > end:
            break
    return Segment(start, end, expected - start, first_prev, prev, bad, watched)


class SegmentJoiner:
    """Joins consecutive segments (the first starting at seq 1) into one verdict.

    ``add`` returns False once the chain is known to break (later segments change nothing).
    ``progress(seq)`` is called at every multiple of ``every`` verified records, as
    ``audit.export.verify_store`` does; ``watched`` is the hash of record ``watch`` if it
    verified."""

    def __init__(
        self, watch: int = -1, progress: Progress | None = None, every: int = 100_000
    ) -> None:
        self._every = max(1, every)
        self.head = GENESIS_HASH
        self.count = 0
        self.watch = watch
        self.watched: str | None = GENESIS_HASH if watch == 0 else None
        self._progress = progress
        self._bad: VerifyResult | None = None

    def add(self, seg: Segment) -> bool:
        if self._bad is not None:
            return False
        if seg.start != self.count + 1:
            raise ValueError("segments must be consecutive from seq 1")
        first_is_seq_failure = seg.count == 0 and seg.bad is not None and seg.bad[0] == "seq"
        if not first_is_seq_failure and seg.first_prev is not None and seg.first_prev != self.head:
            return self._fail("prev_hash does not match the previous record's hash")
        if seg.count:
            if self._progress is not None:
                every = self._every
                first_mark = (self.count // every + 1) * every
                for mark in range(first_mark, self.count + seg.count + 1, every):
                    self._progress(mark)
            self.count += seg.count
            self.head = seg.last_hash or self.head
            self.watched = seg.watched or self.watched
        if seg.bad is not None:
            return self._fail(seg.bad[1])
        if seg.start + seg.count <= seg.end:  # rows missing at the end of the range
            return self._fail(f"sequence gap: expected seq {self.count + 1}")
        return True

    def _fail(self, reason: str) -> bool:
        self._bad = VerifyResult(
            valid=False,
            count=self.count,
            head=self.head,
            first_bad_seq=self.count + 1,
            reason=reason,
        )
        return False

    def result(self) -> tuple[VerifyResult, str | None]:
        if self._bad is not None:
            return self._bad, self.watched
        return VerifyResult(valid=True, count=self.count, head=self.head), self.watched


def join_segments(
    segments: Iterable[Segment], watch: int = -1, progress: Progress | None = None
) -> tuple[VerifyResult, str | None]:
    """``SegmentJoiner`` over ``segments``: the verdict and the hash of record ``watch``."""
    joiner = SegmentJoiner(watch, progress)
    for seg in segments:
        if not joiner.add(seg):
            break
    return joiner.result()


# --- export lines straight from rows -------------------------------------------------------

_LINE = (
    '{"seq":%s,"ts":%s,"request_id":%s,"actor":%s,"roles":%s,"licence_id":%s,"tier":%s,'
    '"action":%s,"dataset":%s,"sql":%s,"epsilon":%s,"delta":%s,"cached":%s,"outcome":%s,'
    '"reason":%s,"client":%s,"result_sha256":%s,"detail":%s,"prev_hash":%s,"hash":%s}\n'
)
_ascii: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring_ascii", None) or (
    json.encoder.py_encode_basestring_ascii
)
_line_numbers: dict[float, str] = {}
_line_roles: dict[str, str] = {}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _line_number(value: Any) -> str:
    text = _line_numbers.get(value)
    if text is None:
        text = _dumps(float(value))
        if len(_line_numbers) < _MEMO_MAX:
            _line_numbers[value] = text
    return text


def row_line(row: Sequence[Any]) -> str:
    """``audit.export.record_line(row_record(row))``, built straight from the row (the export
    field order is the column order). Anything unusual goes through that exact path."""
    (seq, ts, request_id, actor, roles, licence_id, tier, action, dataset, sql, eps, delta,
     cached, outcome, reason, client, result_sha256, detail, prev_hash, hash_) = row  # fmt: skip
    if type(seq) is not int or type(roles) is not str:
        return _exact_line(row)
    roles_text = _line_roles.get(roles)
    if roles_text is None:
        roles_text = _dumps(list(json.loads(roles)))
        if len(_line_roles) < _MEMO_MAX:
            _line_roles[roles] = roles_text
    enc = _ascii
    try:
        return _LINE % (
            seq,
            enc(ts),
            enc(request_id),
            enc(actor),
            roles_text,
            "null" if licence_id is None else enc(licence_id),
            "null" if tier is None else enc(tier),
            enc(action),
            "null" if dataset is None else enc(dataset),
            "null" if sql is None else enc(sql),
            _line_numbers.get(eps) or _line_number(eps),
            _line_numbers.get(delta) or _line_number(delta),
            "true" if cached else "false",
            enc(outcome),
            "null" if reason is None else enc(reason),
            "null" if client is None else enc(client),
            "null" if result_sha256 is None else enc(result_sha256),
            "null" if detail is None else _dumps(json.loads(detail)),
            enc(prev_hash),
            enc(hash_),
        )
    except TypeError:  # a text column holding another type
        return _exact_line(row)


def _exact_line(row: Sequence[Any]) -> str:
    body = dataclasses.asdict(row_record(row))
    return _dumps({name: body[name] for name in ROW_COLUMNS}) + "\n"

"""Audit records as database rows: encoding, decoding, and verifying straight from rows.

A row is the tuple a driver returns for ``SELECT <FIELDS> FROM audit`` (``record.FIELDS``
order; ``roles`` and ``detail`` as JSON text, ``cached`` as a bool or 0/1). ``record_values``
and ``record_from_row`` convert between a record and its row; the store writes and reads
through them and knows nothing else of the record's shape.

Verification speed: ``audit.chain.ChainVerifier`` checks ``AuditRecord`` objects; building
one per row (and its JSON decoding) cost more than the hashing, so store verification ran at
~36,000 records/s. Here a row stays the tuple the driver returned and its canonical JSON is
filled into ``chain.TEMPLATE`` directly:

- text columns go through the same string escaper as ``chain.canonical_json``; ``roles`` and
  ``detail`` (stored as JSON text) are decoded and re-encoded with ``chain``'s general encoder,
  memoised per distinct text (a chain holds few distinct role lists); numbers through
  ``chain.format_number``, memoised per value;
- **anything the fast path does not expect, or any hash mismatch, is re-checked through the
  exact path** (``record_from_row`` → ``chain.chain_hash``, the code the records were hashed
  with), so the fast path can only ever be a shortcut to the same verdict, never a different
  one.

A chain splits into seq ranges (segments) that verify independently, because every row stores
its own ``prev_hash``: a segment checks its rows' seq run, links and hashes, and remembers the
``prev_hash`` of its first row; ``SegmentJoiner`` then checks that each segment's first
``prev_hash`` is the previous segment's last hash. The verdict (``first_bad_seq``, ``reason``,
``count``, ``head``) is exactly what ``ChainVerifier`` gives over the same rows in one pass
(``tests/store/test_chain_rows.py`` compares them on tampered chains).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from enclave.audit.chain import (
    HASHED_FIELDS,
    TEMPLATE,
    VerifyResult,
    chain_hash,
    compile_filler,
    encode_str,
    format_number,
    write_json,
)
from enclave.audit.log import Progress
from enclave.audit.record import FIELDS, GENESIS_HASH, JSON_FIELDS, KINDS, AuditRecord, dumps

_MEMO_MAX = 4096
_numbers: dict[float, str] = {}
_json_texts: dict[str, str] = {}
SEQ, PREV_HASH, HASH = (FIELDS.index(name) for name in ("seq", "prev_hash", "hash"))


# --- a record and its row ------------------------------------------------------------------


def record_values(record: AuditRecord) -> tuple[Any, ...]:
    """A record's column values in ``FIELDS`` order (JSON fields as text)."""
    return tuple(
        _json_column(getattr(record, name)) if name in JSON_FIELDS else getattr(record, name)
        for name in FIELDS
    )


def _json_column(value: Any) -> str | None:
    return dumps(value) if value is not None else None


def _loads_list(text: Any) -> list[Any]:
    return list(json.loads(text))


def _loads_optional(text: Any) -> Any:
    return json.loads(text) if text is not None else None


def _flag(value: Any) -> Any:
    """A boolean column's value: a bool, or 0/1 as SQLite keeps it. Anything else (text such
    as ``'false'``, which SQL reads as 0 and Python as true) is kept as it is, so it hashes
    as what it is, never as whichever boolean a reader would take it for."""
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    return value


def _flag_text(value: Any) -> str:
    flag = _flag(value)
    if type(flag) is not bool:
        raise TypeError("unusual row")
    return "true" if flag else "false"


_DECODE: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "bool": _flag,
    "list[str]": _loads_list,
    "dict[str, Any] | None": _loads_optional,
}
_DECODERS = tuple((name, _DECODE.get(KINDS[name])) for name in FIELDS)


def record_from_row(row: Sequence[Any]) -> AuditRecord:
    """The ``AuditRecord`` of a row (``sqlite3`` tuple or ``asyncpg.Record``)."""
    values = {
        name: value if decode is None else decode(value)
        for (name, decode), value in zip(_DECODERS, row, strict=True)
    }
    return AuditRecord(**values)


# --- canonical JSON straight from a row ----------------------------------------------------


def _number(value: Any) -> str:
    text = _numbers.get(value)
    if text is None:
        text = format_number(float(value))
        if len(_numbers) < _MEMO_MAX:
            _numbers[value] = text
    return text


def _json(text: Any, as_list: bool) -> str:
    if type(text) is not str:
        raise TypeError("unusual row")
    found = _json_texts.get(text) if as_list else None
    if found is None:
        value = json.loads(text)
        out: list[str] = []
        write_json(list(value) if as_list else value, out)
        found = "".join(out)
        if as_list and len(_json_texts) < _MEMO_MAX:
            _json_texts[text] = found
    return found


def _seq(value: Any) -> str:
    if type(value) is not int:
        raise TypeError("unusual row")
    return format_number(value)


#: Each declared type's canonical text, as an expression on the row's column ``{i}``.
_ROW_PARTS = {
    "int": "_seq(arg[{i}])",
    "str": "enc(arg[{i}])",
    "str | None": "('null' if (v := arg[{i}]) is None else enc(v))",
    "float": "(nums.get(v := arg[{i}]) or _number(v))",
    "bool": "_flag_text(arg[{i}])",
    "list[str]": "(texts.get(v := arg[{i}]) or _json(v, True))",
    "dict[str, Any] | None": "('null' if (v := arg[{i}]) is None else _json(v, False))",
}
_canonical_text = compile_filler(
    "row_canonical",
    TEMPLATE,
    (_ROW_PARTS[KINDS[n]].format(i=FIELDS.index(n)) for n in HASHED_FIELDS),
    {
        "enc": encode_str,
        "nums": _numbers,
        "texts": _json_texts,
        "_seq": _seq,
        "_flag_text": _flag_text,
        "_number": _number,
        "_json": _json,
    },
)


def fast_canonical(row: Sequence[Any]) -> bytes:
    """``chain.canonical_json`` of a row's record, built straight from the row; raises
    ``TypeError``/``ValueError`` on anything unusual (the escaper refuses a non-string, so a
    text column holding a number is never silently encoded as text)."""
    text: str = _canonical_text(row)
    return text.encode("utf-8")


def row_hash(prev: str, row: Sequence[Any]) -> str:
    """The chain hash of ``row`` after ``prev``, by the exact path (raises ``ValueError``/
    ``TypeError`` for a row with no canonical form)."""
    return chain_hash(prev, record_from_row(row))


# --- verifying segments --------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """What one seq range ``[start, end]`` showed. ``count`` rows verified from ``start``;
    ``first_prev`` is the first row's ``prev_hash`` (its link is checked by
    ``SegmentJoiner``); ``last_hash`` the hash of the last verified row; ``bad`` a
    ``(kind, reason)`` for the row at ``start + count`` (kind ``seq``, ``link`` or ``hash``);
    ``watched`` the hash of the row ``watch``, if verified here."""

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
        seq, prev_hash, stored = row[SEQ], row[PREV_HASH], row[HASH]
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
    ``progress(seq)`` is called at every multiple of ``every`` verified records; ``watched``
    is the hash of record ``watch`` if it verified."""

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


#: Rows per read when verifying in one process.
VERIFY_FETCH = 5000


async def verify_in_order(
    read: Callable[[int, int], Awaitable[list[Sequence[Any]]]],
    n: int,
    watch: int = -1,
    progress: Progress | None = None,
    every: int = 100_000,
) -> tuple[VerifyResult, str | None]:
    """Verify seq ``1..n`` in one process, ``read(start, end)`` (``AuditLog.audit_rows``)
    ``VERIFY_FETCH`` rows at a time, stopping at the first break."""
    joiner = SegmentJoiner(watch, progress, every)
    for start in range(1, n + 1, VERIFY_FETCH):
        end = min(start + VERIFY_FETCH - 1, n)
        if not joiner.add(verify_segment(await read(start, end), start, end, watch)):
            break
    return joiner.result()


# --- export lines straight from rows -------------------------------------------------------

_LINE = "{" + ",".join(f'"{name}":%s' for name in FIELDS) + "}\n"
_ascii: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring_ascii", None) or (
    json.encoder.py_encode_basestring_ascii
)
_line_numbers: dict[float, str] = {}
_line_roles: dict[str, str] = {}


def line_json(value: Any) -> str:
    """JSON as an export line writes it: ASCII escapes, no spaces, NaN refused."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _line_number(value: Any) -> str:
    text = _line_numbers.get(value)
    if text is None:
        text = line_json(float(value))
        if len(_line_numbers) < _MEMO_MAX:
            _line_numbers[value] = text
    return text


def _line_roles_text(roles: Any) -> str:
    if type(roles) is not str:
        raise TypeError("unusual row")
    text = _line_roles.get(roles)
    if text is None:
        text = line_json(list(json.loads(roles)))
        if len(_line_roles) < _MEMO_MAX:
            _line_roles[roles] = text
    return text


def _line_seq(value: Any) -> str:
    if type(value) is not int:
        raise TypeError("unusual row")
    return int.__repr__(value)


#: Each declared type's export text, as an expression on the row's column ``{i}``.
_LINE_PARTS = {
    "int": "_line_seq(arg[{i}])",
    "str": "asc(arg[{i}])",
    "str | None": "('null' if (v := arg[{i}]) is None else asc(v))",
    "float": "(nums.get(v := arg[{i}]) or _line_number(v))",
    "bool": "_flag_text(arg[{i}])",
    "list[str]": "_line_roles_text(arg[{i}])",
    "dict[str, Any] | None": "('null' if (v := arg[{i}]) is None else line_json(loads(v)))",
}
_line_text = compile_filler(
    "row_line_text",
    _LINE,
    (_LINE_PARTS[KINDS[n]].format(i=i) for i, n in enumerate(FIELDS)),
    {
        "asc": _ascii,
        "nums": _line_numbers,
        "loads": json.loads,
        "line_json": line_json,
        "_line_seq": _line_seq,
        "_flag_text": _flag_text,
        "_line_number": _line_number,
        "_line_roles_text": _line_roles_text,
    },
)


def record_line(record: AuditRecord) -> str:
    """One export line: every field of the record in ``FIELDS`` order, ASCII-escaped."""
    return line_json({name: getattr(record, name) for name in FIELDS}) + "\n"


def row_line(row: Sequence[Any]) -> str:
    """``record_line(record_from_row(row))``, built straight from the row. Anything unusual
    goes through that exact path."""
    try:
        text: str = _line_text(row)
    except TypeError:  # a text column holding another type
        return record_line(record_from_row(row))
    return text

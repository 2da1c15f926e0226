"""The hash chain over audit records: one canonical encoding, one hash rule, one verifier.

Canonical JSON is RFC 8785, the JSON Canonicalization Scheme (JCS), chosen because an auditor
can re-implement it in a few lines of any language (in JavaScript it is ``JSON.stringify`` with
sorted keys):

- objects: members sorted by key, comparing keys as sequences of UTF-16 code units; no
  whitespace anywhere (separators ``,`` and ``:``);
- strings: as ``JSON.stringify`` writes them: ``"`` and ``\\`` escaped, ``\\b \\f \\n \\r \\t``
  as those short escapes, every other character below U+0020 as ``\\u00xx`` (lowercase hex),
  everything else (``/``, U+007F, U+2028, emoji, …) written as itself; the text is UTF-8. A
  string holding a lone surrogate (U+D800–U+DFFF) is refused: it has no UTF-8 form;
- numbers: ECMAScript ``Number::toString`` of the IEEE-754 double: shortest round-trip digits,
  fixed notation from 1e-7 up to 1e21 (``0.000001``, ``5``, ``123.5``), otherwise ``1e-7``,
  ``1.5e+21``; ``-0`` is ``0``. NaN and infinities are refused (not JSON). An integer too large
  to be a double exactly (beyond 2**53 and not representable) is refused rather than rounded;
- ``true``, ``false``, ``null``; arrays in order.

The hashed object of a record is exactly the fields of ``AuditRecord`` except ``hash``
(``HASHED_FIELDS``; ``detail`` included, ``null`` when absent). A dict is reduced to those
fields, a missing one read as ``null``, so every export line (which holds exactly these fields
plus ``hash``) hashes as "the line without ``hash``".

``hash = SHA-256(prev_hash as ASCII hex + canonical JSON as UTF-8)``, lowercase hex; the first
record's ``prev_hash`` is 64 zeros.

``verify`` streams (``ChainVerifier`` keeps only the previous hash and the expected ``seq``), so
it runs in constant memory over an export of any length. It detects an edited record (hash
mismatch) and a deleted, inserted or reordered record (``seq`` must run 1, 2, 3, … and each
``prev_hash`` must equal the previous record's ``hash``). A truncated tail, or a whole chain
re-hashed by someone with write access, is caught only against a signed head saved earlier
(``audit/signing.py``).

``build_record`` seals a draft into the next record of the chain (the store calls it inside
its write transaction, under the chain lock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from enclave.audit.record import GENESIS_HASH, KINDS, AuditDraft, AuditRecord, dumps
from enclave.models import iso

#: The hashed fields, in canonical (sorted) order.
HASHED_FIELDS: tuple[str, ...] = tuple(
    sorted(f.name for f in fields(AuditRecord) if f.name != "hash")
)
_MAX_EXACT_INT = 2**53

#: JSON.stringify's string escaping; CPython's json escaper (ensure_ascii=False) is identical
#: for every string without a lone surrogate (checked in tests/audit/test_chain.py).
encode_str: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)


class CanonicalError(ValueError):
    """A value that has no canonical JSON form (NaN, infinity, lone surrogate, …)."""


def format_number(value: float | int) -> str:
    """ECMAScript ``Number::toString`` for a finite double (or an int exactly representable)."""
    if isinstance(value, int):
        if -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
            return int.__repr__(int(value))
        as_float = float(value)
        if int(as_float) != value:
            raise CanonicalError("an integer beyond 2**53 has no exact JSON number form")
        value = as_float
    x = float(value)
    if not math.isfinite(x):
        raise CanonicalError("NaN and infinity are not JSON numbers")
    if x == 0.0:
        return "0"
    text = float.__repr__(x)
    if "e" not in text:  # Python's fixed range (1e-4 <= |x| < 1e16) lies inside ECMAScript's
        return text[:-2] if text.endswith(".0") else text
    return _ecmascript_layout(x)


def _ecmascript_layout(x: float) -> str:
    sign = "-" if x < 0 else ""
    mantissa, _, exponent = float.__repr__(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    raw = whole + frac
    stripped = raw.lstrip("0")
    n = len(whole) + int(exponent or "0") - (len(raw) - len(stripped))
    digits = stripped.rstrip("0")
    k = len(digits)
    # ECMA-262 Number::toString: x = digits * 10**(n - k), k as small as possible.
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exp = n - 1
    exp_text = ("+" if exp >= 0 else "-") + str(abs(exp))
    if k == 1:
        return sign + digits + "e" + exp_text
    return sign + digits[0] + "." + digits[1:] + "e" + exp_text


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def write_json(value: Any, out: list[str]) -> None:
    """Append the canonical JSON text of ``value`` to ``out``."""
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(encode_str(value))
    elif isinstance(value, int | float):
        out.append(format_number(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        keys = value.keys()
        if all(type(k) is str and k.isascii() for k in keys):
            ordered = sorted(keys)  # code point order is UTF-16 order for ASCII
        else:
            ordered = sorted(keys, key=_key_of)
        for key in ordered:
            if not first:
                out.append(",")
            first = False
            out.append(encode_str(key))
            out.append(":")
            write_json(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            write_json(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"a {type(value).__name__} is not a JSON value")


def _key_of(key: object) -> bytes:
    if not isinstance(key, str):
        raise CanonicalError("object keys must be strings")
    return _utf16_key(key)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError(
            "a string holds a lone surrogate (U+D800-U+DFFF), which has no canonical form"
        ) from None


def canonicalize(value: Any) -> bytes:
    """RFC 8785 canonical JSON of any JSON value, as UTF-8 bytes."""
    out: list[str] = []
    write_json(value, out)
    return _utf8("".join(out))


class _Slow(Exception):
    pass


#: The canonical text of a record: its hashed fields in sorted order, values filled in.
TEMPLATE = "{" + ",".join(f'"{name}":%s' for name in HASHED_FIELDS) + "}"


_NUMBERS: dict[float, str] = {}  # memo of format_number for epsilon/delta (few distinct)


def _float_text(value: Any) -> str:
    if type(value) is not float:
        raise _Slow
    text = _NUMBERS.get(value)
    if text is None:
        text = format_number(value)
        if len(_NUMBERS) < 4096:
            _NUMBERS[value] = text
    return text


def _int_text(value: Any) -> str:
    if type(value) is not int or not -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
        raise _Slow
    return int.__repr__(value)


def _bool_text(value: Any) -> str:
    if type(value) is not bool:
        raise _Slow
    return "true" if value else "false"


def _roles_text(value: Any) -> str:
    if type(value) is not list:
        raise _Slow
    return "[" + ",".join(map(encode_str, value)) + "]"


def _detail_text(value: Any) -> str:
    if value is None:
        return "null"
    parts: list[str] = []
    write_json(value, parts)
    return "".join(parts)


def compile_filler(name: str, template: str, parts: Iterable[str], env: dict[str, Any]) -> Any:
    """``def name(arg): return template % (part, ...)``, generated from the record's one
    declaration as ``dataclasses`` generates ``__init__``. Why not a loop over the fields:
    that costs twice as much per record, and verification speed is a requirement (an auditor
    re-verifies the whole log on demand). The source holds only the ``parts`` built here and
    in ``audit/rows.py`` from ``KINDS`` and field positions, never data."""
    source = f"def {name}(arg):\n    return {template!r} % ({', '.join(parts)},)\n"
    scope = dict(env)
    exec(compile(source, f"<audit.{name}>", "exec"), scope)  # noqa: S102 (see above)
    return scope[name]


#: The fast encoder of a field of each declared type, as an expression on ``get(name)``.
_FAST_PARTS = {
    "int": "_int_text(arg({n!r}))",
    "str": "enc(arg({n!r}))",
    "str | None": "('null' if (v := arg({n!r})) is None else enc(v))",
    "float": "_float_text(arg({n!r}))",
    "bool": "_bool_text(arg({n!r}))",
    "list[str]": "_roles_text(arg({n!r}))",
    "dict[str, Any] | None": "_detail_text(arg({n!r}))",
}
_fill = compile_filler(
    "fast_template",
    TEMPLATE,
    (_FAST_PARTS[KINDS[n]].format(n=n) for n in HASHED_FIELDS),
    {
        "enc": encode_str,
        "_int_text": _int_text,
        "_float_text": _float_text,
        "_bool_text": _bool_text,
        "_roles_text": _roles_text,
        "_detail_text": _detail_text,
    },
)


def _fast(get: Callable[[str], Any]) -> str:
    """``TEMPLATE`` filled for the usual record shape (each field of its declared type).
    Raises ``_Slow`` otherwise; ``tests/audit/test_chain.py`` checks it against the general
    encoder over many random records. (The escaper raises ``TypeError`` for anything but a
    string, which is what sends a number in a text field, or a non-string role, to the
    general encoder.)"""
    try:
        text: str = _fill(get)
    except TypeError:
        raise _Slow from None
    return text


def canonical_json(record: dict[str, Any] | AuditRecord) -> bytes:
    """The record's canonical JSON (RFC 8785) over ``HASHED_FIELDS``, as UTF-8 bytes.

    Raises ``CanonicalError`` (a ``ValueError``) for a value with no canonical form.
    Verification speed is a requirement (an auditor re-verifies the whole log on demand), hence
    the template fast path; anything unusual goes through the general encoder.
    """
    get = record.get if isinstance(record, dict) else record.__dict__.get
    try:
        text = _fast(get)
    except _Slow:
        out: list[str] = []
        write_json({name: get(name) for name in HASHED_FIELDS}, out)
        text = "".join(out)
    return _utf8(text)


def chain_hash(prev_hash: str, record: dict[str, Any] | AuditRecord) -> str:
    """SHA-256 (lowercase hex) over ``prev_hash`` (ASCII) followed by ``canonical_json``."""
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


class ChainVerifier:
    """Incremental verifier: ``feed`` records in order until it returns False; ``result()``.

    ``first_bad_seq`` is the position (1-based: the seq the record there should have) of the
    first record that does not follow from its predecessor; ``reason`` says which check failed
    and never quotes record contents.
    """

    __slots__ = ("_bad", "expected", "prev")

    def __init__(self) -> None:
        self.prev = GENESIS_HASH
        self.expected = 1
        self._bad: VerifyResult | None = None

    def feed(self, record: dict[str, Any] | AuditRecord) -> bool:
        if self._bad is not None:
            return False
        if isinstance(record, AuditRecord):
            seq: Any = record.seq
            prev_hash: Any = record.prev_hash
            stored: Any = record.hash
        else:
            seq, prev_hash, stored = record.get("seq"), record.get("prev_hash"), record.get("hash")
        expected = self.expected
        if type(seq) is not int or seq != expected:
            reason = (
                "sequence gap" if type(seq) is int and seq > expected else "sequence out of order"
            )
            return self._fail(f"{reason}: expected seq {expected}")
        if prev_hash != self.prev:
            return self._fail("prev_hash does not match the previous record's hash")
        try:
            computed = chain_hash(self.prev, record)
        except (ValueError, TypeError, UnicodeEncodeError):
            return self._fail("record cannot be encoded canonically")
        if computed != stored:
            return self._fail("hash does not match the record's contents")
        self.prev = computed
        self.expected = expected + 1
        return True

    def _fail(self, reason: str) -> bool:
        seq = self.expected
        self._bad = VerifyResult(
            valid=False, count=seq - 1, head=self.prev, first_bad_seq=seq, reason=reason
        )
        return False

    @property
    def count(self) -> int:
        return self.expected - 1

    def result(self) -> VerifyResult:
        if self._bad is not None:
            return self._bad
        return VerifyResult(valid=True, count=self.expected - 1, head=self.prev)


def verify(records: Iterable[dict[str, Any] | AuditRecord]) -> VerifyResult:
    """Check a whole chain in order (constant memory)."""
    checker = ChainVerifier()
    for record in records:
        if not checker.feed(record):
            break
    return checker.result()


_DRAFT_FIELDS = tuple(f.name for f in fields(AuditDraft))


def build_record(draft: AuditDraft, seq: int, ts: str, prev_hash: str) -> AuditRecord:
    """The full record for ``draft`` at position ``seq``, hashed onto ``prev_hash``."""
    body: dict[str, Any] = {name: getattr(draft, name) for name in _DRAFT_FIELDS}
    body.update(
        seq=seq,
        ts=ts,
        prev_hash=prev_hash,
        roles=list(draft.roles),
        epsilon=float(draft.epsilon),
        delta=float(draft.delta),
        cached=bool(draft.cached),
        detail=json.loads(dumps(draft.detail)) if draft.detail is not None else None,
    )
    return AuditRecord(**body, hash=chain_hash(prev_hash, body))


def next_ts(now: dt.datetime, head_ts: str | None) -> str:
    """The new record's timestamp: now, but never before the head's (clocks can step back;
    ``seq`` is the order, and ``since``/``until`` filters should agree with it)."""
    ts = iso(now)
    return head_ts if head_ts is not None and head_ts > ts else ts

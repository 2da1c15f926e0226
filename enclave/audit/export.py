"""Reading the audit trail out of a store: streamed exports (JSONL, CSV), store verification,
the offline check of an export against a saved signed head, and the spend summary.

JSONL: one record per line, every field of the record (``record.FIELDS``) and nothing else,
written with ASCII escapes (``ensure_ascii``), so a newline, a U+2028 or an emoji in ``sql``
can never split a line, whatever tool splits it. The last line is the trailer
``{"signed_head": {...} | null, "verify": {...}}``: the gateway verifies the chain while it
streams and signs the head only if it verified; an export without a trailer is incomplete.

CSV is for reading in a spreadsheet, not for verification (use JSONL): every text cell that
begins with ``= + - @``, TAB, CR or LF gets a leading apostrophe (OWASP "CSV injection"),
which changes the cell, so CSV rows do not re-hash. Cells are quoted by the ``csv`` module
(RFC 4180: quotes doubled, cells with separators or newlines quoted); ``roles`` and
``detail`` are JSON text. The CSV's signed head travels in the ``Enclave-Signed-Head``
response header (see ``web/auditor.py``).

Everything here streams in bounded memory: records and rows come from the store
(``log.AuditLog``) in batches.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.chain import ChainVerifier, VerifyResult
from enclave.audit.log import AuditFilter, AuditLog, Progress, SummaryRow, decimal_text
from enclave.audit.record import FIELDS, GENESIS_HASH, AuditRecord
from enclave.audit.rows import SegmentJoiner, row_line, verify_segment
from enclave.audit.signing import SignedHead, verify_head
from enclave.ledger.grid import Amount

FORMATS: tuple[str, ...] = ("jsonl", "csv")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
INJECTION_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r", "\n")
PROGRESS_EVERY = 100_000
CHUNK_BYTES = 64 * 1024
ROWS_PER_FETCH = 2000
Signer = Callable[[int, str], SignedHead]


# --- rendering -----------------------------------------------------------------------------


def trailer_line(head: SignedHead | None, result: VerifyResult) -> str:
    body = {"signed_head": head.to_json() if head else None, "verify": result.to_json()}
    return json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n"


def neutralise(cell: str) -> str:
    """OWASP: a cell a spreadsheet could read as a formula is prefixed with ``'``."""
    return "'" + cell if cell.startswith(INJECTION_PREFIXES) else cell


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return neutralise(value)
    return neutralise(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def csv_rows(records: Iterable[AuditRecord | None]) -> str:
    """CSV text for ``records``; ``None`` stands for the header row."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    for rec in records:
        if rec is None:
            writer.writerow(FIELDS)
        else:
            writer.writerow([_cell(getattr(rec, name)) for name in FIELDS])
    return buf.getvalue()


# --- streaming out of a store --------------------------------------------------------------


async def records_upto(
    store: AuditLog, upto: int | None, batch: int = 2000
) -> AsyncIterator[AuditRecord]:
    """Records in ``seq`` order, stopping after ``upto`` (records appended meanwhile are left
    for the next export, so an export is one consistent prefix)."""
    async for record in store.audit_iter(batch=batch):
        if upto is not None and record.seq > upto:
            return
        yield record


async def verify_store(
    store: AuditLog, upto: int | None = None, progress: Progress | None = None, watch: int = -1
) -> tuple[VerifyResult, str | None]:
    """Verify the store's chain (``AuditLog.audit_verify``); also return the hash of record
    ``watch`` (if reached)."""
    return await store.audit_verify(upto, progress, watch, PROGRESS_EVERY)


async def stream_jsonl(
    store: AuditLog, upto: int | None, sign: Signer, progress: Progress | None = None
) -> AsyncIterator[bytes]:
    """The JSONL export in chunks, ending with the signed trailer. Lines are built and
    verified straight from the store's rows (``audit/rows.py``: the same bytes and the same
    verdict as ``record_line`` and ``ChainVerifier``, at about three times the speed)."""
    n = (await store.audit_head())[0]
    n = n if upto is None else max(0, min(n, upto))
    joiner = SegmentJoiner(progress=progress, every=PROGRESS_EVERY)
    for start in range(1, n + 1, ROWS_PER_FETCH):
        end = min(start + ROWS_PER_FETCH - 1, n)
        rows = await store.audit_rows(start, end)
        joiner.add(verify_segment(rows, start, end))  # after a break: lines only
        yield "".join(map(row_line, rows)).encode("ascii")
    result, _ = joiner.result()
    head = sign(result.count, result.head) if result.valid else None
    yield trailer_line(head, result).encode("ascii")


async def stream_csv(store: AuditLog, upto: int | None) -> AsyncIterator[bytes]:
    batch: list[AuditRecord | None] = [None]
    async for record in records_upto(store, upto):
        batch.append(record)
        if len(batch) >= 500:
            yield csv_rows(batch).encode("utf-8")
            batch = []
    yield csv_rows(batch).encode("utf-8")


# --- checking against a saved head ---------------------------------------------------------


def head_problems(
    result: VerifyResult, watched_hash: str | None, saved: SignedHead, key: Ed25519PublicKey
) -> list[str]:
    """Why a log (verified as ``result``) does not extend the signed head ``saved``."""
    problems = []
    reason = verify_head(saved, key)
    if reason is not None:
        problems.append(f"saved head: {reason}")
    if saved.seq > result.count:
        if result.valid:
            problems.append(
                f"truncated: the log ends at seq {result.count}, below the saved head's "
                f"seq {saved.seq}"
            )
        else:
            problems.append(f"the chain breaks before the saved head's seq {saved.seq}")
    elif watched_hash != saved.hash:
        problems.append(
            f"record {saved.seq} differs from the saved head: the log was rewritten or "
            "replaced after that head was signed"
        )
    return problems


@dataclass(frozen=True)
class ExportVerdict:
    """The offline verdict on an export file. ``problems`` empty means valid."""

    result: VerifyResult
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems


def verify_export(
    lines: Iterable[str | bytes],
    saved: SignedHead | None = None,
    key: Ed25519PublicKey | None = None,
    progress: Progress | None = None,
) -> ExportVerdict:
    """Check a JSONL export: the chain, its own trailer, and (given) a head saved earlier."""
    checker = ChainVerifier()
    problems: list[str] = []
    notes: list[str] = []
    trailer: Any = None
    watched = GENESIS_HASH if saved is not None and saved.seq == 0 else None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = _parse(raw)
        except json.JSONDecodeError:
            problems.append(f"line {number} is not valid JSON")
            break
        except ValueError as exc:  # NaN, infinity, a repeated member name
            problems.append(f"line {number} is not valid JSON: {exc}")
            break
        if not isinstance(obj, dict):
            problems.append(f"line {number} is not a JSON object")
            break
        if trailer is not None:
            problems.append(f"line {number} follows the signed-head trailer")
            break
        if "signed_head" in obj:
            trailer = obj
            continue
        if obj.keys() != _LINE_MEMBERS:
            problems.append(f"line {number} does not hold exactly the record's fields")
            break
        if not checker.feed(obj):
            break
        if saved is not None and obj.get("seq") == saved.seq:
            watched = obj.get("hash")
        if progress is not None and checker.count % PROGRESS_EVERY == 0:
            progress(checker.count)
    result = checker.result()
    if not result.valid:
        problems.insert(0, f"chain broken at seq {result.first_bad_seq}: {result.reason}")
    if result.valid and not problems:
        problems += _trailer_problems(trailer, result, key, notes)
    if saved is not None and key is not None:
        problems += head_problems(result, watched, saved, key)
    return ExportVerdict(result, tuple(problems), tuple(notes))


def _trailer_problems(
    trailer: Any, result: VerifyResult, key: Ed25519PublicKey | None, notes: list[str]
) -> list[str]:
    if trailer is None:
        return ["the export has no signed-head trailer: it is incomplete"]
    if trailer.get("signed_head") is None:
        return ["the gateway did not sign this export (its chain did not verify at export)"]
    try:
        own = SignedHead.from_json(trailer["signed_head"])
    except ValueError as exc:
        return [f"the export's trailer: {exc}"]
    if (own.seq, own.hash) != (result.count, result.head):
        return ["the export's signed head does not match its last record"]
    if key is None:
        notes.append("the export's signed head was not checked against a key (no --key)")
        return []
    reason = verify_head(own, key)
    return [f"the export's signed head: {reason}"] if reason else []


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object, refused if a member name repeats: the hash covers the last value, while a
    reader (or ``grep``) may see the first."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a member name repeats")
    return obj


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique_members)
#: The members of a record line: the record's fields, no more, no fewer (the hash covers the
#: line without ``hash``, so a missing ``null`` or an extra member would change it for an
#: independent verifier; ours must agree).
_LINE_MEMBERS = frozenset(FIELDS)


def _parse(raw: str | bytes) -> Any:
    """``json.loads(raw, parse_constant=_refuse_constant)`` with one shared decoder (making a
    decoder per line cost a quarter of the offline verification)."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    elif raw.startswith("\ufeff"):
        raise ValueError("a byte order mark in a text line")  # as json.loads refuses it
    return _DECODER.decode(raw)


# --- summary -------------------------------------------------------------------------------


async def summarize_records(
    store: AuditLog, since: dt.datetime | None, until: dt.datetime | None
) -> list[SummaryRow]:
    """``AuditLog.audit_summary`` recomputed from the records alone (``audit_events``, page by
    page): an independent check of the store's aggregate query."""
    counts: dict[tuple[str, str | None], list[int]] = {}
    spend: dict[tuple[str, str | None], Amount] = {}
    flt = AuditFilter(since=since, until=until)
    after = 0
    while page := await store.audit_events(flt, after_seq=after, limit=1000):
        for r in page:
            key = (r.actor, r.dataset)
            c = counts.setdefault(key, [0, 0, 0, 0])
            fresh = r.action == "query" and r.outcome == "ok" and not r.cached
            c[0] += fresh
            c[1] += r.action == "query" and r.outcome == "ok" and r.cached
            c[2] += r.outcome == "denied"
            c[3] += r.outcome == "error"
            if fresh:  # the record's float charge, back on the ledger's grid (rounded up)
                cost = Amount.charge(repr(r.epsilon), repr(r.delta))
                spend[key] = spend.get(key, Amount()).plus(cost)
        after = page[-1].seq
    out = []
    for key in sorted(counts, key=lambda k: (k[0], k[1] or "")):
        out.append(SummaryRow(key[0], key[1], spend.get(key, Amount()), *counts[key]))
    return out


def summary_totals(rows: list[SummaryRow]) -> dict[str, Any]:
    """The totals line of a summary: spend summed exactly (Decimal text, as in each row)."""
    total = Amount()
    for r in rows:
        total = total.plus(r.spent)
    return {
        "epsilon_spent": decimal_text(total.epsilon_decimal),
        "delta_spent": decimal_text(total.delta_decimal),
        "releases": sum(r.releases for r in rows),
        "cache_hits": sum(r.cache_hits for r in rows),
        "refusals": sum(r.refusals for r in rows),
        "errors": sum(r.errors for r in rows),
    }

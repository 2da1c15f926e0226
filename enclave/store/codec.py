"""What both adapters share: encoding values for storage, building audit records, and the
licence rules that do not depend on the database (conflicts, permitted changes).

Keeping these here means the SQLite and PostgreSQL adapters differ only in SQL and locking,
never in what they store or how a record is hashed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from enclave.audit.chain import chain_hash
from enclave.audit.record import AuditDraft, AuditRecord
from enclave.errors import BadRequest, Conflict
from enclave.ledger.grid import Amount
from enclave.models import LICENCE_STATUSES, Licence, iso, parse_time
from enclave.store.base import PolicyVersion

#: Licence columns, in the order of the ``Licence`` dataclass (one source of truth).
LICENCE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Licence))
#: Licence fields an update may change (``id`` and the timestamps are the store's).
MUTABLE_LICENCE_FIELDS: frozenset[str] = frozenset(LICENCE_COLUMNS) - {
    "id",
    "created_at",
    "updated_at",
}


#: Audit table columns, in insert order (both adapters).
AUDIT_COLUMNS = (
    "seq, ts, request_id, actor, roles, licence_id, tier, action, dataset, sql, epsilon, delta,"
    " cached, outcome, reason, client, result_sha256, detail, prev_hash, hash"
)


def audit_values(record: AuditRecord) -> tuple[Any, ...]:
    """A record's column values in the order of ``AUDIT_COLUMNS`` (JSON fields as text)."""
    return (
        record.seq,
        record.ts,
        record.request_id,
        record.actor,
        dumps(record.roles),
        record.licence_id,
        record.tier,
        record.action,
        record.dataset,
        record.sql,
        record.epsilon,
        record.delta,
        record.cached,
        record.outcome,
        record.reason,
        record.client,
        record.result_sha256,
        dumps(record.detail) if record.detail is not None else None,
        record.prev_hash,
        record.hash,
    )


def loads(text: str) -> Any:
    return json.loads(text)


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON; NaN and infinity refused (PostgreSQL ``jsonb`` would too)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def time_text(value: dt.datetime) -> str:
    """A licence timestamp at full precision, in UTC (``iso()`` keeps milliseconds only)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def as_time(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return parse_time(time_text(value))
    return parse_time(value)


def licence_from_row(row: Mapping[str, Any]) -> Licence:
    datasets = row["datasets"]
    if isinstance(datasets, str):
        datasets = json.loads(datasets)
    return Licence(
        id=row["id"],
        subject=row["subject"],
        organization=row["organization"],
        tier=row["tier"],
        datasets=tuple(datasets),
        purpose=row["purpose"],
        jurisdiction=row["jurisdiction"],
        valid_from=as_time(row["valid_from"]),
        valid_until=as_time(row["valid_until"]),
        status=row["status"],
        created_at=as_time(row["created_at"]) if row["created_at"] else None,
        updated_at=as_time(row["updated_at"]) if row["updated_at"] else None,
    )


def licence_values(lic: Licence) -> tuple[Any, ...]:
    """Column values in the order of ``LICENCE_COLUMNS``."""
    return (
        lic.id,
        lic.subject,
        lic.organization,
        lic.tier,
        dumps(list(lic.datasets)),
        lic.purpose,
        lic.jurisdiction,
        time_text(lic.valid_from),
        time_text(lic.valid_until),
        lic.status,
        time_text(lic.created_at) if lic.created_at else None,
        time_text(lic.updated_at) if lic.updated_at else None,
    )


def apply_changes(current: Licence, changes: Mapping[str, Any], now: dt.datetime) -> Licence:
    """The licence after ``changes``. ``Conflict`` if ``current`` is revoked (final);
    ``BadRequest`` for a field that cannot change or a status that does not exist."""
    if current.status == "revoked":
        raise Conflict("licence is revoked; revocation is final")
    unknown = sorted(set(changes) - MUTABLE_LICENCE_FIELDS)
    if unknown:
        raise BadRequest("these licence fields cannot be changed: " + ", ".join(unknown))
    values: dict[str, Any] = dict(changes)
    if "datasets" in values:
        values["datasets"] = tuple(values["datasets"])
    for key in ("valid_from", "valid_until"):
        if key in values:
            values[key] = as_time(values[key])
    if "status" in values and values["status"] not in LICENCE_STATUSES:
        raise BadRequest("unknown licence status")
    return replace(current, **values, updated_at=now)


def check_no_overlap(candidate: Licence, others: Iterable[Licence]) -> None:
    """``Conflict`` if ``candidate`` is active and the same subject holds another active
    licence covering one of its datasets (the contract: at most one active licence per
    subject and dataset, whatever the validity windows)."""
    if candidate.status != "active":
        return
    wanted = set(candidate.datasets)
    for other in others:
        if (
            other.id != candidate.id
            and other.subject == candidate.subject
            and other.status == "active"
            and wanted.intersection(other.datasets)
        ):
            raise Conflict("the subject already holds an active licence for one of these datasets")


def build_record(draft: AuditDraft, seq: int, ts: str, prev_hash: str) -> AuditRecord:
    """The full record for ``draft`` at position ``seq``, hashed onto ``prev_hash``."""
    body: dict[str, Any] = {
        "seq": seq,
        "ts": ts,
        "request_id": draft.request_id,
        "actor": draft.actor,
        "roles": list(draft.roles),
        "licence_id": draft.licence_id,
        "tier": draft.tier,
        "action": draft.action,
        "dataset": draft.dataset,
        "sql": draft.sql,
        "epsilon": float(draft.epsilon),
        "delta": float(draft.delta),
        "cached": bool(draft.cached),
        "outcome": draft.outcome,
        "reason": draft.reason,
        "client": draft.client,
        "result_sha256": draft.result_sha256,
        "prev_hash": prev_hash,
        "detail": json.loads(dumps(draft.detail)) if draft.detail is not None else None,
    }
    return AuditRecord(**body, hash=chain_hash(prev_hash, body))


def record_from_row(row: Any) -> AuditRecord:
    """An ``AuditRecord`` from a database row (sqlite3.Row or asyncpg.Record)."""
    detail = row["detail"]
    return AuditRecord(
        seq=int(row["seq"]),
        ts=row["ts"],
        request_id=row["request_id"],
        actor=row["actor"],
        roles=list(loads(row["roles"])),
        licence_id=row["licence_id"],
        tier=row["tier"],
        action=row["action"],
        dataset=row["dataset"],
        sql=row["sql"],
        epsilon=float(row["epsilon"]),
        delta=float(row["delta"]),
        cached=bool(row["cached"]),
        outcome=row["outcome"],
        reason=row["reason"],
        client=row["client"],
        result_sha256=row["result_sha256"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        detail=loads(detail) if detail is not None else None,
    )


def policy_from_row(row: Any) -> PolicyVersion:
    return PolicyVersion(
        kind=row["kind"],
        name=row["name"],
        version=int(row["version"]),
        body=dict(loads(row["body"])),
        created_at=row["created_at"],
        actor=row["actor"],
    )


def next_ts(now: dt.datetime, head_ts: str | None) -> str:
    """The new record's timestamp: now, but never before the head's (clocks can step back;
    ``seq`` is the order, and ``since``/``until`` filters should agree with it)."""
    ts = iso(now)
    return head_ts if head_ts is not None and head_ts > ts else ts


def with_licence(draft: AuditDraft, licence_id: str) -> AuditDraft:
    return draft if draft.licence_id else replace(draft, licence_id=licence_id)


def sum_units(rows: Iterable[tuple[Any, Any]]) -> Amount:
    """Exact sums of (epsilon, delta) ledger rows in grid units (Python ints never overflow)."""
    eps = delta = 0
    for e, d in rows:
        eps += int(e)
        delta += int(d)
    return Amount(eps, delta)


def add_spend(totals: dict[Any, Amount], key: Any, eps: Any, delta: Any) -> None:
    """Accumulate one ledger row (grid units) into ``totals[key]``."""
    totals[key] = totals.get(key, Amount()).plus(Amount(int(eps), int(delta)))


def next_policy_version(current: int | None, expected: int | None) -> int:
    """The version a policy write creates, read under the write lock: the lost-update
    guard, for both adapters. ``expected`` (None: write regardless) must equal the current
    version (0: no version yet), else ``Conflict``: someone changed it since it was read."""
    have = int(current or 0)
    if expected is not None and expected != have:
        if expected == 0:
            raise Conflict("it was created meanwhile; re-read and retry")
        raise Conflict(f"version {expected} is not the current version ({have}); re-read and retry")
    return have + 1


def decimal_text(value: Decimal) -> str:
    """An exact Decimal as plain text, without exponent or trailing zeros: ``4.65``,
    ``0.000003``, ``5``. Summaries give spend this way, so no sum is rounded to a float."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True)
class SummaryRow:
    """One line of ``audit_summary``: spend (exact, from the ledger) and counts per actor and
    dataset. ``releases`` are fresh query releases, ``cache_hits`` repeats at zero cost,
    ``refusals`` records with outcome ``denied``, ``errors`` outcome ``error``."""

    actor: str
    dataset: str | None
    spent: Amount
    releases: int
    cache_hits: int
    refusals: int
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "dataset": self.dataset,
            "epsilon_spent": decimal_text(self.spent.epsilon_decimal),
            "delta_spent": decimal_text(self.spent.delta_decimal),
            "releases": self.releases,
            "cache_hits": self.cache_hits,
            "refusals": self.refusals,
            "errors": self.errors,
        }


def summary_rows(
    counts: dict[tuple[str, str | None], list[int]],
    spend: dict[tuple[str, str | None], Amount],
) -> list[SummaryRow]:
    """Merge per-(actor, dataset) counts and exact spend into sorted rows."""
    out: list[SummaryRow] = []
    for key in sorted(set(counts) | set(spend), key=lambda k: (k[0], k[1] or "")):
        releases, hits, refusals, errors = counts.get(key, [0, 0, 0, 0])
        spent = spend.get(key, Amount())
        out.append(SummaryRow(key[0], key[1], spent, releases, hits, refusals, errors))
    return out

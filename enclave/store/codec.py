"""Store values as columns and back, and the licence and policy rules that depend on no
database (conflicts, permitted changes, the next version). Audit records are encoded by
``audit/rows.py``; JSON text is ``audit.record.dumps`` everywhere.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from enclave.audit.record import AuditDraft
from enclave.audit.record import dumps as dumps
from enclave.errors import BadRequest, Conflict
from enclave.ledger.grid import Amount
from enclave.models import LICENCE_STATUSES, Licence, parse_time
from enclave.store.base import PolicyVersion

#: Licence columns, in the order of the ``Licence`` dataclass (one source of truth).
LICENCE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Licence))
#: Licence fields an update may change (``id`` and the timestamps are the store's).
MUTABLE_LICENCE_FIELDS: frozenset[str] = frozenset(LICENCE_COLUMNS) - {
    "id",
    "created_at",
    "updated_at",
}
#: Policy columns as ``policy_from_row`` reads them.
POLICY_COLUMNS = "kind, name, version, body, created_at, actor"


def time_text(value: dt.datetime) -> str:
    """A licence timestamp at full precision, in UTC (``iso()`` keeps milliseconds only)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def as_time(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return parse_time(time_text(value))
    return parse_time(value)


def licence_from_row(row: Sequence[Any]) -> Licence:
    """A ``Licence`` from a row of ``LICENCE_COLUMNS``."""
    values = dict(zip(LICENCE_COLUMNS, row, strict=True))
    for key in ("valid_from", "valid_until", "created_at", "updated_at"):
        values[key] = as_time(values[key]) if values[key] else None
    values["datasets"] = tuple(json.loads(values["datasets"]))
    return Licence(**values)


def licence_values(lic: Licence) -> tuple[Any, ...]:
    """Column values in the order of ``LICENCE_COLUMNS``."""
    stamps = {"valid_from", "valid_until", "created_at", "updated_at"}
    values = {f: getattr(lic, f) for f in LICENCE_COLUMNS}
    values["datasets"] = dumps(list(lic.datasets))
    return tuple(time_text(v) if k in stamps and v is not None else v for k, v in values.items())


def apply_changes(current: Licence, changes: Mapping[str, Any], now: dt.datetime) -> Licence:
    """The licence after ``changes``. ``Conflict`` if ``current`` is revoked (revocation is
    final: the one place that rule is enforced, under the write lock); ``BadRequest`` for a
    field that cannot change or a status that does not exist."""
    if current.status == "revoked":
        raise Conflict("a revoked licence cannot be changed")
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
    licence covering one of its datasets (at most one active licence per subject and dataset,
    whatever the validity windows)."""
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


def with_licence(draft: AuditDraft, licence_id: str) -> AuditDraft:
    return draft if draft.licence_id else replace(draft, licence_id=licence_id)


def sum_units(rows: Iterable[Sequence[Any]]) -> Amount:
    """Exact sums of (epsilon, delta) ledger rows in grid units (Python ints never overflow)."""
    eps = delta = 0
    for e, d in rows:
        eps += int(e)
        delta += int(d)
    return Amount(eps, delta)


def policy_from_row(row: Sequence[Any]) -> PolicyVersion:
    """A ``PolicyVersion`` from a row of ``POLICY_COLUMNS``."""
    kind, name, version, body, created_at, actor = row
    return PolicyVersion(kind, name, int(version), dict(json.loads(body)), created_at, actor)


def next_policy_version(current: int | None, expected: int | None) -> int:
    """The version a policy write creates, read under the write lock: the lost-update
    guard. ``expected`` (None: write regardless) must equal the current version (0: no
    version yet), else ``Conflict``: someone changed it since it was read."""
    have = int(current or 0)
    if expected is not None and expected != have:
        if expected == 0:
            raise Conflict("it was created meanwhile; re-read and retry")
        raise Conflict(f"version {expected} is not the current version ({have}); re-read and retry")
    return have + 1

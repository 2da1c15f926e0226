"""Store values as columns and back (licences, policy versions, ledger sums). Audit records
are encoded by ``audit/rows.py``; JSON text is ``audit.record.dumps`` everywhere. The rules
these values obey are their domain's (``licences.py``, ``policy/version.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from typing import Any

from enclave.audit.record import AuditDraft
from enclave.audit.record import dumps as dumps
from enclave.ledger.grid import Amount
from enclave.models import Licence, as_time, time_text
from enclave.policy.version import PolicyVersion

#: Licence columns, in the order of the ``Licence`` dataclass (one source of truth).
LICENCE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Licence))
#: Policy columns as ``policy_from_row`` reads them.
POLICY_COLUMNS = "kind, name, version, body, created_at, actor"


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

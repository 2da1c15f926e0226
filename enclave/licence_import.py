"""Bulk licence import from CSV: every row checked first, every problem listed, then issued.

One row per licence, with a header naming the columns (``REQUIRED`` and optionally
``OPTIONAL``); ``datasets`` separates names with ``;``. Each row passes the same validation as
``POST /v1/admin/licences`` and the same checks of references (tiers and datasets exist) and of
the one-active-licence-per-dataset rule, against the store and against the earlier rows. With
``governance.four_eyes`` on, a row that raises risk (a reissue, ``governance/risk.py``) is a
problem too: an import has no second admin, and each reissue is proposed on its own through
``POST /v1/admin/licences``. Only a file without any problem is issued (a dry run stops before
that).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from enclave.audit.record import AuditDraft
from enclave.errors import BadRequest
from enclave.governance.organisations import suspension_problem
from enclave.governance.risk import reissued
from enclave.licences import licence_from_json
from enclave.models import Licence
from enclave.policy.registry import Registry
from enclave.store.base import Store

REQUIRED = ("subject", "organization", "tier", "datasets", "purpose", "jurisdiction",
            "valid_until")  # fmt: skip
OPTIONAL = ("valid_from", "id")
MAX_ROWS = 10_000


@dataclass
class ImportPlan:
    licences: list[Licence] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def plan_import(
    text: str, store: Store, registry: Registry, now: dt.datetime, *, four_eyes: bool
) -> ImportPlan:
    """Parse and check ``text`` (CSV); return the licences to issue and every problem found
    (``four_eyes``: ``governance.four_eyes``, under which a reissue is refused here)."""
    plan = ImportPlan()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        plan.problems.append(f"header: cannot be read as CSV ({exc})")
        return plan
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    plan.problems += [f"header: missing column {c}" for c in missing]
    plan.problems += [f"header: unknown column {c}" for c in unknown]
    if missing or unknown:
        return plan
    tiers = await registry.tier_map()
    known_datasets = {spec.name for spec in await registry.datasets()}
    taken: dict[tuple[str, str], str] = {}  # (subject, dataset) → where its active licence is
    ids: set[str] = set()
    for number, row in enumerate(_rows(reader, plan.problems), start=2):
        if number - 1 > MAX_ROWS:
            plan.problems.append(f"row {number}: more than {MAX_ROWS} rows")
            break
        where = f"row {number}"
        if None in row:
            plan.problems.append(f"{where}: more fields than columns")
            continue
        body: dict[str, Any] = {k: (v or "").strip() for k, v in row.items() if (v or "").strip()}
        if "datasets" in body:
            body["datasets"] = [d.strip() for d in body["datasets"].split(";") if d.strip()]
        found = _reference_problems(body, tiers, known_datasets)
        try:
            lic = licence_from_json(body, now)
        except BadRequest as err:
            plan.problems += [f"{where}: {p}" for p in err.problems or [err.detail]]
            plan.problems += [f"{where}: {p}" for p in found]
            continue
        if lic.id in ids or (await store.get_licence(lic.id)) is not None:
            found.append(f"id: {lic.id} already exists")
        ids.add(lic.id)
        held = await store.list_licences(lic.subject)
        if four_eyes and (found_risks := reissued(lic, held)):
            found += [f"{r}: with governance.four_eyes on, propose it through POST "
                      "/v1/admin/licences for a second admin" for r in found_risks]  # fmt: skip
        for existing in held:
            if existing.status == "active":
                for name in existing.datasets:
                    taken.setdefault((lic.subject, name), f"licence {existing.id}")
        for name in lic.datasets:
            other = taken.get((lic.subject, name))
            if other is not None:
                found.append(f"datasets: {lic.subject} already holds {other} for {name}")
            taken[(lic.subject, name)] = where
        if (suspended := await suspension_problem(store, lic)) is not None:
            found.append(suspended)
        plan.problems += [f"{where}: {p}" for p in found]
        if not found:
            plan.licences.append(lic)
    return plan


def _rows(reader: csv.DictReader[str], problems: list[str]) -> Iterator[dict[str, Any]]:
    """The reader's rows; a row the csv module cannot read (a field past its size limit) is
    a problem, and the rows after it are not read."""
    number = 2  # the row being read (the header is row 1)
    try:
        for row in reader:
            yield row
            number += 1
    except csv.Error as exc:
        problems.append(f"row {number}: cannot be read as CSV ({exc})")


def _reference_problems(body: dict[str, Any], tiers: dict[str, Any], known: set[str]) -> list[str]:
    tier = body.get("tier")
    out = [f"tier: unknown tier {tier!r}"] if tier and tier not in tiers else []
    out += [f"datasets: unknown dataset {d!r}" for d in body.get("datasets", []) if d not in known]
    return out


async def issue_import(
    store: Store, plan: ImportPlan, draft_for: Callable[[Licence], AuditDraft]
) -> None:
    """Issue every licence of a plan without problems, each with its own audit record
    (``licence.create``, from ``draft_for``), in file order, in one store transaction: a
    licence created meanwhile that conflicts with a row (409) leaves nothing issued. The CLI
    and the API share it."""
    await store.insert_licences([(lic, draft_for(lic)) for lic in plan.licences])

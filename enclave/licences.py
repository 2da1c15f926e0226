"""Licence validation and lifecycle rules, shared by the admin API and ``enclave licence``.

A licence binds a subject (the token's ``sub``) to a tier, datasets, a purpose, a
jurisdiction and a validity window. Status moves active ⇄ suspended, and either → revoked,
which is final. The store enforces both "revocation is final" and "at most one active licence
per subject and dataset" (``apply_changes``, ``check_no_overlap``: ``store/ops.py`` runs them
inside the write transaction).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from enclave.errors import BadRequest, Conflict
from enclave.ids import new_id
from enclave.inputs import MAX_NAME_CHARS, MAX_TEXT_CHARS, invalid, read_string, read_when
from enclave.models import LICENCE_STATUSES, Licence, as_time
from enclave.policy.decide import dataset_allows, tier_allows

if TYPE_CHECKING:
    from enclave.policy.registry import Registry

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_JURISDICTION = re.compile(r"^[A-Z]{2}$")
_LICENCE_ID = re.compile(r"^lic_[A-Za-z0-9_]{1,64}$")
_STAMPS = {"created_at", "updated_at"}  # set by the gateway, never by a request
CREATE_FIELDS = {f.name for f in fields(Licence)} - _STAMPS
PATCH_FIELDS = (CREATE_FIELDS - {"id", "subject"}) | {"reason"}
# changes that can change what a licence may spend: they need a reason, recorded in the audit
# ``organization`` keys the organisation budget layer (``budget_layers.py``): moving a
# licence to another organisation moves its future spend there
REASON_REQUIRED_FIELDS = {"tier", "datasets", "valid_from", "valid_until", "status", "organization"}
TEXT_LIMITS = {"subject": MAX_NAME_CHARS, "organization": MAX_NAME_CHARS, "purpose": MAX_TEXT_CHARS}
MAX_DATASETS = 100
#: Licence fields an update may change (``id`` and the timestamps are the store's).
MUTABLE_LICENCE_FIELDS: frozenset[str] = frozenset(CREATE_FIELDS) - {"id"}


def licence_from_json(body: Any, now: dt.datetime) -> Licence:
    """Validate a create request; raise ``BadRequest`` listing every problem."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    problems = [f"{k}: unknown field" for k in sorted(set(body) - CREATE_FIELDS)]
    texts = {
        name: read_string(problems, body.get(name), name, limit)
        for name, limit in TEXT_LIMITS.items()
    }
    if not isinstance(body.get("tier"), str) or not body["tier"].strip():
        problems.append("tier: required, a non-empty string")
    if not isinstance(body.get("jurisdiction"), str) or not body["jurisdiction"].strip():
        problems.append("jurisdiction: required, a non-empty string")
    values = _check_common(body, problems)
    valid_from = values.get("valid_from", now)
    valid_until = values.get("valid_until")
    if "valid_until" not in body:
        problems.append("valid_until: required (a licence has a sunset date)")
    elif valid_until is not None and valid_until <= now:
        problems.append("valid_until: must be in the future")
    if "datasets" not in body:
        problems.append("datasets: required")
    status = body.get("status", "active")
    if status != "active":
        problems.append("status: a new licence is active")
    lid = body.get("id")
    if lid is not None and (not isinstance(lid, str) or not _LICENCE_ID.match(lid)):
        problems.append("id: must look like lic_<letters, digits or _>")
    if problems:
        raise invalid(problems)
    return Licence(
        id=lid or new_id("lic"),
        subject=texts["subject"] or "",
        organization=texts["organization"] or "",
        tier=body["tier"],
        datasets=values["datasets"],
        purpose=texts["purpose"] or "",
        jurisdiction=body["jurisdiction"],
        valid_from=valid_from,
        valid_until=valid_until or now,
        status="active",
        created_at=now,
        updated_at=now,
    )


def licence_request(body: Any, now: dt.datetime) -> tuple[Licence, str | None]:
    """``POST /v1/admin/licences``: ``licence_from_json`` plus an optional ``reason`` (kept
    in the audit log; a reissue that waits for a second admin needs one), every problem
    listed together."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    problems: list[str] = []
    reason = read_string(problems, body.get("reason"), "reason", MAX_TEXT_CHARS, required=False)
    try:
        licence = licence_from_json({k: v for k, v in body.items() if k != "reason"}, now)
    except BadRequest as err:
        raise invalid([*(err.problems or [err.detail]), *problems]) from None
    if problems:
        raise invalid(problems)
    return licence, reason


def patch_licence(licence: Licence, body: Any, now: dt.datetime) -> tuple[Licence, str | None]:
    """Apply a PATCH; return the new licence and the reason given. Raise on bad input."""
    if not isinstance(body, dict) or not body:
        raise BadRequest("the body must be a non-empty JSON object")
    problems = [
        f"{k}: cannot be changed" if k in CREATE_FIELDS else f"{k}: unknown field"
        for k in sorted(set(body) - PATCH_FIELDS)
    ]
    texts = {
        name: read_string(problems, body[name], name, TEXT_LIMITS[name])
        for name in ("organization", "purpose")
        if name in body
    }
    if "tier" in body and (not isinstance(body["tier"], str) or not body["tier"].strip()):
        problems.append("tier: must be a non-empty string")
    values = _check_common(body, problems)
    status = body.get("status", licence.status)
    if status not in LICENCE_STATUSES:
        problems.append(f"status: must be one of {', '.join(LICENCE_STATUSES)}")
    needs_reason = bool(REASON_REQUIRED_FIELDS & set(body))
    reason = None
    if "reason" in body:  # null is no reason
        reason = read_string(
            problems, body["reason"], "reason", MAX_TEXT_CHARS, required=needs_reason
        )
    elif needs_reason:
        problems.append("reason: required when changing tier, datasets, validity or status")
    if problems:
        raise invalid(problems)
    changes: dict[str, Any] = {k: body[k] for k in ("tier", "jurisdiction") if k in body}
    changes.update({k: v for k, v in texts.items() if v is not None})
    changes.update(values)
    changes["status"] = status
    updated = replace(licence, **changes, updated_at=now)
    if updated.valid_until <= updated.valid_from:
        raise BadRequest("valid_until: must be after valid_from")
    return updated, reason


async def check_licence_policy(
    registry: Registry, licence: Licence, before: Licence | None = None
) -> None:
    """``BadRequest`` naming every tier or dataset a licence refers to that does not exist,
    and every tier or dataset rule its jurisdiction breaks: such a licence could never be
    used. ``before`` (a PATCH): unchanged references are not re-checked for existence, and
    nothing is checked unless the tier, datasets or jurisdiction change, so a suspension or
    revocation always goes through."""
    if before is not None and (before.tier, before.datasets, before.jurisdiction) == (
        licence.tier,
        licence.datasets,
        licence.jurisdiction,
    ):
        return
    problems: list[str] = []
    juris = licence.jurisdiction
    tier = await registry.tier(licence.tier)
    if tier is None:
        problems.append(f"tier: unknown tier '{licence.tier}'")
    elif not tier_allows(tier, juris):
        allowed = ", ".join(tier.allowed_jurisdictions)
        problems.append(
            f"jurisdiction: {juris} is not allowed by tier '{tier.name}' "
            f"(its allowed_jurisdictions: {allowed})"
        )
    for name in licence.datasets:
        spec = await registry.dataset(name)
        if spec is None:
            problems.append(f"datasets: unknown dataset '{name}'")
        elif not dataset_allows(spec, juris):
            allowed = ", ".join(spec.allowed_jurisdictions or ())
            problems.append(
                f"jurisdiction: {juris} is not allowed for dataset '{name}' "
                f"(its allowed_jurisdictions: {allowed})"
            )
    if problems:
        raise invalid(problems)


def _check_common(body: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "jurisdiction" in body and (
        not isinstance(body["jurisdiction"], str) or not _JURISDICTION.match(body["jurisdiction"])
    ):
        problems.append("jurisdiction: must be a two-letter upper-case country code")
    if "tier" in body and isinstance(body["tier"], str) and not _NAME.match(body["tier"]):
        problems.append("tier: not a valid tier name")
    if "datasets" in body:
        ds = body["datasets"]
        if (
            not isinstance(ds, list)
            or not ds
            or len(ds) > MAX_DATASETS
            or not all(isinstance(d, str) and _NAME.match(d) for d in ds)
            or len(set(ds)) != len(ds)
        ):
            problems.append(
                f"datasets: must be a non-empty list of at most {MAX_DATASETS} distinct "
                "dataset names"
            )
        else:
            values["datasets"] = tuple(ds)
    for key in ("valid_from", "valid_until"):
        if key in body:
            when = read_when(problems, body[key], key, end_of_day=key == "valid_until")
            if when is not None:
                values[key] = when
    if (
        "valid_from" in values
        and "valid_until" in values
        and (values["valid_until"] <= values["valid_from"])
    ):
        problems.append("valid_until: must be after valid_from")
    return values


def licence_digest_fields(licence: Licence) -> dict[str, Any]:
    """The fields an audit record keeps of a licence change (no personal data beyond sub)."""
    data = licence.to_json()
    data.pop("created_at", None)
    data.pop("updated_at", None)
    return data


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

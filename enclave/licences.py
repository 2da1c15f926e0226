"""Licence validation and lifecycle rules, shared by the admin API and ``enclave licence``.

A licence binds a subject (the token's ``sub``) to a tier, datasets, a purpose, a
jurisdiction and a validity window. Status moves active ⇄ suspended, and either → revoked,
which is final. The store enforces "at most one active licence per subject and dataset".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import fields, replace
from typing import Any

from enclave.errors import BadRequest, Conflict
from enclave.ids import new_id
from enclave.models import LICENCE_STATUSES, Licence, parse_time

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_JURISDICTION = re.compile(r"^[A-Z]{2}$")
_LICENCE_ID = re.compile(r"^lic_[A-Za-z0-9_]{1,64}$")
_STAMPS = {"created_at", "updated_at"}  # set by the gateway, never by a request
CREATE_FIELDS = {f.name for f in fields(Licence)} - _STAMPS
PATCH_FIELDS = (CREATE_FIELDS - {"id", "subject"}) | {"reason"}
# changes that can change what a licence may spend: they need a reason, recorded in the audit
BUDGET_FIELDS = {"tier", "datasets", "valid_from", "valid_until", "status"}


def licence_from_json(body: Any, now: dt.datetime) -> Licence:
    """Validate a create request; raise ``BadRequest`` listing every problem."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    problems = [f"{k}: unknown field" for k in sorted(set(body) - CREATE_FIELDS)]
    for name in ("subject", "organization", "tier", "purpose", "jurisdiction"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            problems.append(f"{name}: required, a non-empty string")
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
        raise BadRequest("; ".join(problems))
    return Licence(
        id=lid or new_id("lic"),
        subject=body["subject"].strip(),
        organization=body["organization"].strip(),
        tier=body["tier"],
        datasets=values["datasets"],
        purpose=body["purpose"].strip(),
        jurisdiction=body["jurisdiction"],
        valid_from=valid_from,
        valid_until=valid_until or now,
        status="active",
        created_at=now,
        updated_at=now,
    )


def patch_licence(licence: Licence, body: Any, now: dt.datetime) -> tuple[Licence, str | None]:
    """Apply a PATCH; return the new licence and the reason given. Raise on bad input."""
    if not isinstance(body, dict) or not body:
        raise BadRequest("the body must be a non-empty JSON object")
    problems = [
        f"{k}: cannot be changed" if k in CREATE_FIELDS else f"{k}: unknown field"
        for k in sorted(set(body) - PATCH_FIELDS)
    ]
    for name in ("organization", "tier", "purpose"):
        if name in body and (not isinstance(body[name], str) or not body[name].strip()):
            problems.append(f"{name}: must be a non-empty string")
    values = _check_common(body, problems)
    status = body.get("status", licence.status)
    if status not in LICENCE_STATUSES:
        problems.append(f"status: must be one of {', '.join(LICENCE_STATUSES)}")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        problems.append("reason: must be a non-empty string")
    if BUDGET_FIELDS & set(body) and not reason:
        problems.append("reason: required when changing tier, datasets, validity or status")
    if problems:
        raise BadRequest("; ".join(problems))
    if licence.status == "revoked":
        raise Conflict("a revoked licence cannot be changed")
    changes: dict[str, Any] = {k: body[k] for k in ("organization", "tier", "purpose") if k in body}
    changes.update(values)
    changes["status"] = status
    updated = replace(licence, **changes, updated_at=now)
    if updated.valid_until <= updated.valid_from:
        raise BadRequest("valid_until: must be after valid_from")
    return updated, reason


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
            or not all(isinstance(d, str) and _NAME.match(d) for d in ds)
            or len(set(ds)) != len(ds)
        ):
            problems.append("datasets: must be a non-empty list of distinct dataset names")
        else:
            values["datasets"] = tuple(ds)
    for key in ("valid_from", "valid_until"):
        if key in body:
            try:
                values[key] = parse_time(str(body[key])) if isinstance(body[key], str) else None
            except ValueError:
                values[key] = None
            if values[key] is None:
                problems.append(f"{key}: must be an ISO 8601 date or timestamp")
                del values[key]
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

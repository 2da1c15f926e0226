"""Admin licences over HTTP: create, list (by subject, nearing expiry), read, patch; the
reason rule; revoked is final; one active licence per subject and dataset; every change
audited with before/after digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from typing import Any

import pytest

from enclave.audit.log import AuditFilter
from enclave.models import utcnow

ADMIN = ("root", ["admin"])
PROBLEM = "https://enclave-gateway.org/problems/"


def iso(days: float) -> str:
    return (utcnow() + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_licence(**over: Any) -> dict[str, Any]:
    body = {
        "subject": "bob",
        "organization": "Example University",
        "tier": "standard",
        "datasets": ["visits"],
        "purpose": "Readmission rates",
        "jurisdiction": "GB",
        "valid_until": iso(365),
    }
    body.update(over)
    return body


async def call(gw: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await gw.client.request(method, path, json=body, headers=gw.auth(*ADMIN))
    return resp.status, await resp.json(content_type=None)


def sha(licence: dict[str, Any]) -> str:
    derived = ("created_at", "updated_at", "status_reason")
    plain = {k: v for k, v in licence.items() if k not in derived}
    return hashlib.sha256(
        json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


async def records(gw: Any, action: str) -> list[Any]:
    found: list[Any] = await gw.services.store.audit_events(AuditFilter(action=action))
    return found


async def test_create_read_and_list(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, lic = await call(gw, "POST", "/v1/admin/licences", new_licence())
    assert status == 201, lic
    assert lic["id"].startswith("lic_") and lic["status"] == "active"
    assert lic["subject"] == "bob" and lic["datasets"] == ["visits"]
    assert await call(gw, "GET", f"/v1/admin/licences/{lic['id']}") == (200, lic)
    await call(gw, "POST", "/v1/admin/licences", new_licence(subject="carol"))
    status, listing = await call(gw, "GET", "/v1/admin/licences")
    assert [x["subject"] for x in listing["licences"]] == ["bob", "carol"]
    status, only = await call(gw, "GET", "/v1/admin/licences?subject=carol")
    assert [x["subject"] for x in only["licences"]] == ["carol"]
    assert (await call(gw, "GET", "/v1/admin/licences/lic_nope"))[0] == 404
    [created, _] = await records(gw, "licence.create")
    assert created.actor == "root" and created.licence_id == lic["id"]
    assert created.detail["before_sha256"] is None
    assert created.detail["after_sha256"] == sha(lic)


async def test_a_new_licence_is_usable_at_once(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, _ = await call(gw, "POST", "/v1/admin/licences", new_licence(subject="alice"))
    assert status == 201
    assert (await gw.query("SELECT COUNT(*) FROM visits")).status == 200


BAD_CREATES = [
    ({"valid_until": "2026-13-45"}, "valid_until"),
    ({"valid_until": "next year"}, "valid_until"),
    ({"valid_until": 20990101}, "valid_until"),
    ({"valid_from": iso(10), "valid_until": iso(5)}, "valid_until: must be after valid_from"),
    ({"valid_until": iso(-1)}, "valid_until: must be in the future"),
    ({"valid_until": None}, "valid_until"),
    ({"jurisdiction": "gb"}, "jurisdiction"),
    ({"datasets": []}, "datasets"),
    ({"datasets": ["visits", "visits"]}, "datasets"),
    ({"subject": "  "}, "subject"),
    ({"status": "suspended"}, "status"),
    ({"budget_bonus": 10}, "budget_bonus: unknown field"),
    ({"tier": "gold"}, "tier: unknown tier 'gold'"),
    ({"datasets": ["visits", "secret"]}, "datasets: unknown dataset 'secret'"),
    ({"id": "../etc"}, "id"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CREATES)
async def test_bad_licences_are_refused(
    make_gateway: Any, change: dict[str, Any], message: str
) -> None:
    gw = await make_gateway()
    status, problem = await call(gw, "POST", "/v1/admin/licences", new_licence(**change))
    assert status == 400, problem
    assert message in problem["detail"]
    assert (await call(gw, "GET", "/v1/admin/licences"))[1]["licences"] == []


async def test_unknown_tier_and_datasets_are_all_named(make_gateway: Any) -> None:
    gw = await make_gateway()
    body = new_licence(tier="gold", datasets=["visits", "secret", "other"])
    status, problem = await call(gw, "POST", "/v1/admin/licences", body)
    assert status == 400
    for name in ("gold", "secret", "other"):
        assert f"'{name}'" in problem["detail"]


async def test_one_active_licence_per_subject_and_dataset(make_gateway: Any) -> None:
    gw = await make_gateway()
    root = gw.config.policies.data_dir
    shutil.copy(root / "visits.parquet", root / "clinic.parquet")
    status, spec = await call(gw, "GET", "/v1/admin/datasets/visits")
    body = {k: v for k, v in spec.items() if k not in ("version", "versions", "created_at")}
    body.update(name="clinic", source="../../data/clinic.parquet")
    assert (await call(gw, "PUT", "/v1/admin/datasets/clinic", body))[0] == 201

    _, first = await call(gw, "POST", "/v1/admin/licences", new_licence())
    status, problem = await call(gw, "POST", "/v1/admin/licences", new_licence())
    assert status == 409 and problem["type"] == PROBLEM + "conflict"
    # another subject, or another dataset, is fine
    assert (await call(gw, "POST", "/v1/admin/licences", new_licence(subject="carol")))[0] == 201
    _, clinic = await call(gw, "POST", "/v1/admin/licences", new_licence(datasets=["clinic"]))
    assert clinic["status"] == "active"
    # adding a dataset that another active licence of bob covers
    path = f"/v1/admin/licences/{clinic['id']}"
    status, _ = await call(gw, "PATCH", path, {"datasets": ["clinic", "visits"], "reason": "x"})
    assert status == 409
    # suspend the first, then a second active one is allowed; re-activating the first is not
    first_path = f"/v1/admin/licences/{first['id']}"
    assert (await call(gw, "PATCH", first_path, {"status": "suspended", "reason": "audit"}))[
        0
    ] == 200
    assert (await call(gw, "POST", "/v1/admin/licences", new_licence()))[0] == 201
    status, _ = await call(gw, "PATCH", first_path, {"status": "active", "reason": "back"})
    assert status == 409
    assert (await call(gw, "GET", first_path))[1]["status"] == "suspended"


BUDGET_PATCHES = [
    {"tier": "accredited"},
    {"datasets": ["visits"]},
    {"valid_until": iso(700)},
    {"valid_from": iso(-30)},
    {"status": "suspended"},
    {"organization": "Another University"},  # keys the organisation budget layer
]


@pytest.mark.parametrize("change", BUDGET_PATCHES)
async def test_budget_changes_need_a_reason_which_is_audited(
    make_gateway: Any, change: dict[str, Any]
) -> None:
    gw = await make_gateway()
    _, lic = await call(gw, "POST", "/v1/admin/licences", new_licence())
    path = f"/v1/admin/licences/{lic['id']}"
    status, problem = await call(gw, "PATCH", path, change)
    assert status == 400 and "reason: required" in problem["detail"]
    assert (await call(gw, "GET", path))[1] == lic
    for empty in ("", None):  # a null reason is no reason
        status, problem = await call(gw, "PATCH", path, {**change, "reason": empty})
        assert status == 400 and problem["problems"] == ["reason: required, a non-empty string"], (
            problem
        )
    status, updated = await call(gw, "PATCH", path, {**change, "reason": "ticket 42"})
    assert status == 200, updated
    [record] = [r for r in await records(gw, "licence.update") if r.outcome == "ok"]
    assert record.reason == "ticket 42" and record.actor == "root"
    assert record.detail["before_sha256"] == sha(lic)
    assert record.detail["after_sha256"] == sha(updated)
    assert record.detail["changes"] == change


async def test_other_changes_need_no_reason(make_gateway: Any) -> None:
    gw = await make_gateway()
    _, lic = await call(gw, "POST", "/v1/admin/licences", new_licence())
    path = f"/v1/admin/licences/{lic['id']}"
    status, updated = await call(gw, "PATCH", path, {"purpose": "Length of stay"})
    assert status == 200 and updated["purpose"] == "Length of stay"
    for bad in ({}, {"subject": "mallory"}, {"id": "lic_x"}, {"colour": "red"}, [1]):
        assert (await call(gw, "PATCH", path, bad))[0] == 400, bad
    status, _ = await call(gw, "PATCH", path, {"valid_until": "soon", "reason": "r"})
    assert status == 400
    assert (await call(gw, "PATCH", "/v1/admin/licences/lic_none", {"purpose": "x"}))[0] == 404


async def test_suspension_applies_at_once_and_revocation_is_final(make_gateway: Any) -> None:
    gw = await make_gateway()
    _, lic = await call(gw, "POST", "/v1/admin/licences", new_licence(subject="alice"))
    path = f"/v1/admin/licences/{lic['id']}"
    assert (await gw.query("SELECT COUNT(*) FROM visits")).status == 200
    await call(gw, "PATCH", path, {"status": "suspended", "reason": "review"})
    assert (await gw.query("SELECT COUNT(*) FROM visits")).status == 403
    status, revoked = await call(gw, "PATCH", path, {"status": "revoked", "reason": "breach"})
    assert status == 200 and revoked["status"] == "revoked"
    for change in (
        {"status": "active", "reason": "oops"},
        {"status": "suspended", "reason": "oops"},
        {"purpose": "anything"},
    ):
        status, problem = await call(gw, "PATCH", path, change)
        assert status == 409 and problem["type"] == PROBLEM + "conflict", change
    assert (await call(gw, "GET", path))[1]["status"] == "revoked"
    # a fresh licence for the same subject and dataset is allowed after revocation
    assert (await call(gw, "POST", "/v1/admin/licences", new_licence(subject="alice")))[0] == 201


async def test_expiring_within_days(make_gateway: Any) -> None:
    gw = await make_gateway()
    now = utcnow()
    soon = now + dt.timedelta(days=5)
    await gw.licence("a_soon", valid_until=soon, id="lic_soon")
    await gw.licence("b_later", valid_until=now + dt.timedelta(days=20), id="lic_later")
    await gw.licence("c_susp", valid_until=soon, status="suspended", id="lic_susp")
    await gw.licence("d_rev", valid_until=soon, status="revoked", id="lic_rev")
    await gw.licence(
        "e_gone", valid_from=now - dt.timedelta(days=9), valid_until=now - dt.timedelta(days=1),
        id="lic_gone",
    )  # fmt: skip

    async def ids(query: str) -> list[str]:
        status, body = await call(gw, "GET", f"/v1/admin/licences?{query}")
        assert status == 200, body
        return sorted(x["id"] for x in body["licences"])

    assert await ids("expiring_within_days=7") == ["lic_soon", "lic_susp"]
    assert await ids("expiring_within_days=30") == ["lic_later", "lic_soon", "lic_susp"]
    assert await ids("expiring_within_days=0") == []
    assert await ids("expiring_within_days=7&subject=c_susp") == ["lic_susp"]
    for bad in ("-1", "x", "1.5", "", "99999999"):
        status, _ = await call(gw, "GET", f"/v1/admin/licences?expiring_within_days={bad}")
        assert status == 400, bad

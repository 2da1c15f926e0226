"""Admin tiers and datasets over HTTP: validation (every problem listed, nothing changed),
versioning, audit with digests, the reason rule for budget changes, source confinement, the
release cache following the dataset version, and the role table for every admin endpoint."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.audit.log import AuditFilter

ADMIN = ("root", ["admin"])
PROBLEM = "https://enclave-gateway.org/problems/"
SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"


def sha(body: dict[str, Any]) -> str:
    """An independent digest: SHA-256 of sorted-key, no-whitespace JSON, without version."""
    plain = {k: v for k, v in body.items() if k != "version"}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


async def get(gw: Any, path: str) -> tuple[int, Any]:
    resp = await gw.client.get(path, headers=gw.auth(*ADMIN))
    return resp.status, await resp.json(content_type=None)


async def put(gw: Any, path: str, body: Any, raw: str | None = None) -> tuple[int, Any]:
    headers = {**gw.auth(*ADMIN), "Content-Type": "application/json"}
    data = raw if raw is not None else json.dumps(body)
    resp = await gw.client.put(path, data=data, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def current(gw: Any, kind: str, name: str) -> dict[str, Any]:
    status, body = await get(gw, f"/v1/admin/{kind}s/{name}")
    assert status == 200, body
    return {k: v for k, v in body.items() if k not in ("created_at", "changed_by", "versions")}


async def audit(gw: Any, action: str) -> list[Any]:
    records: list[Any] = await gw.services.store.audit_events(AuditFilter(action=action))
    return records


# --- reads and versions ---------------------------------------------------------------------


async def test_lists_and_reads_the_seeded_policies(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, body = await get(gw, "/v1/admin/tiers")
    assert status == 200
    assert [t["name"] for t in body["tiers"]] == ["accredited", "open", "standard"]
    assert all(t["version"] == 1 for t in body["tiers"])
    status, body = await get(gw, "/v1/admin/datasets")
    assert [d["name"] for d in body["datasets"]] == ["visits"]
    status, one = await get(gw, "/v1/admin/tiers/standard")
    assert status == 200 and one["budget"] == {"epsilon": 5.0, "delta": 1e-06}
    assert one["versions"] == [1] and one["changed_by"] == "policy-files"
    assert (await get(gw, "/v1/admin/tiers/nope"))[0] == 404
    assert (await get(gw, "/v1/admin/datasets/visits?version=7"))[0] == 404
    assert (await get(gw, "/v1/admin/datasets/visits?version=x"))[0] == 400


async def test_a_change_is_versioned_audited_and_the_old_version_kept(make_gateway: Any) -> None:
    gw = await make_gateway()
    v1 = await current(gw, "tier", "open")
    status, v2 = await put(gw, "/v1/admin/tiers/open", {**v1, "description": "Counts only."})
    assert status == 200, v2
    assert v2["version"] == 2 and v2["description"] == "Counts only."
    status, again = await get(gw, "/v1/admin/tiers/open")
    assert again["version"] == 2 and again["versions"] == [1, 2] and again["changed_by"] == "root"
    status, old = await get(gw, "/v1/admin/tiers/open?version=1")
    assert status == 200 and old["version"] == 1 and old["description"] == v1["description"]
    [record] = await audit(gw, "tier.update")
    assert record.actor == "root" and record.outcome == "ok" and record.roles == ["admin"]
    assert record.detail["before_version"] == 1
    assert record.detail["before_sha256"] == sha(v1)
    assert record.detail["after_sha256"] == sha(v2)
    assert record.detail["before_sha256"] != record.detail["after_sha256"]
    assert "budget_change" not in record.detail  # a description needs no reason
    # a third version, and the listing shows only the latest of each
    v2["description"] = "Third."
    assert (await put(gw, "/v1/admin/tiers/open", v2))[1]["version"] == 3
    status, listing = await get(gw, "/v1/admin/tiers")
    assert [t["version"] for t in listing["tiers"] if t["name"] == "open"] == [3]
    assert verify([r async for r in gw.services.store.audit_iter()]).valid


async def test_put_of_a_new_name_creates_version_1(make_gateway: Any) -> None:
    gw = await make_gateway()
    body = await current(gw, "tier", "open")
    body.pop("version")
    status, created = await put(gw, "/v1/admin/tiers/open_plus", {**body, "name": "open_plus"})
    assert status == 201 and created["version"] == 1
    status, read = await get(gw, "/v1/admin/tiers/open_plus")
    assert read["versions"] == [1]
    [record] = await audit(gw, "tier.update")
    assert record.detail["before_version"] is None and record.detail["before_sha256"] is None
    # the name may come from the URL alone
    body.pop("name")
    assert (await put(gw, "/v1/admin/tiers/open_two", body))[0] == 201


async def test_a_stale_version_is_a_conflict(make_gateway: Any) -> None:
    gw = await make_gateway()
    read = await current(gw, "tier", "open")
    assert (await put(gw, "/v1/admin/tiers/open", {**read, "description": "a"}))[0] == 200
    status, body = await put(gw, "/v1/admin/tiers/open", {**read, "description": "b"})
    assert status == 409 and body["type"] == PROBLEM + "conflict"
    assert (await current(gw, "tier", "open"))["description"] == "a"


# --- validation: 400, every problem listed, nothing changed ---------------------------------


def tier_with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


BAD_TIER_VALUES = [
    ("budget.epsilon", "NaN", "budget.epsilon"),
    ("budget.epsilon", "Infinity", "budget.epsilon"),
    ("budget.epsilon", "1e999", "budget.epsilon"),
    ("budget.epsilon", -1.0, "budget.epsilon"),
    ("budget.epsilon", 0, "budget.epsilon"),
    ("budget.delta", "-Infinity", "budget.delta"),
    ("budget.delta", 1.5, "budget.delta"),
    ("max_epsilon_per_query", "nan", "max_epsilon_per_query"),
    ("max_epsilon_per_query", True, "max_epsilon_per_query"),
    ("max_epsilon_per_query", 50.0, "max_epsilon_per_query"),  # above the budget
    ("min_noisy_count", -5, "min_noisy_count"),
    ("rate_limit_per_minute", 0, "rate_limit_per_minute"),
    ("group_by.max_groups", 2.5, "group_by.max_groups"),
    ("budget.period_days", -30, "budget.period_days"),
    ("aggregates", ["count", "median_of_everything"], "aggregates"),
    ("allowed_jurisdictions", ["gb"], "allowed_jurisdictions[0]"),
    ("surprise", 1, "surprise: unknown field"),
    ("budget.bonus", 1, "budget.bonus: unknown field"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_TIER_VALUES)
async def test_bad_tier_values_are_refused_and_nothing_changes(
    make_gateway: Any, path: str, value: Any, field: str
) -> None:
    gw = await make_gateway()
    before = await current(gw, "tier", "standard")
    body = tier_with(before, path, value)
    status, problem = await put(gw, "/v1/admin/tiers/standard", {**body, "reason": "test"})
    assert status == 400, problem
    assert problem["type"] == PROBLEM + "policy-invalid"
    assert any(field in p for p in problem["problems"]), problem["problems"]
    assert await current(gw, "tier", "standard") == before
    assert [r.outcome for r in await audit(gw, "tier.update")] == ["denied"]


async def test_non_finite_numbers_in_the_json_itself(make_gateway: Any) -> None:
    gw = await make_gateway()
    before = await current(gw, "tier", "standard")
    text = json.dumps({**before, "reason": "r"})
    # 1e999 is valid JSON that overflows to infinity: the validator refuses it
    raw = text.replace('"epsilon": 5.0', '"epsilon": 1e999')
    assert raw != text
    status, problem = await put(gw, "/v1/admin/tiers/standard", None, raw=raw)
    assert status == 400 and any("budget.epsilon" in p for p in problem["problems"])
    # NaN and Infinity literals are not JSON: the body reader refuses them
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = text.replace('"epsilon": 5.0', f'"epsilon": {literal}')
        status, problem = await put(gw, "/v1/admin/tiers/standard", None, raw=raw)
        assert status == 400 and problem["type"] == PROBLEM + "bad-request"
    assert await current(gw, "tier", "standard") == before


async def test_every_problem_is_listed_at_once(make_gateway: Any) -> None:
    gw = await make_gateway()
    before = await current(gw, "tier", "standard")
    body = {**before, "min_noisy_count": -1, "filters": "yes", "colour": "red"}
    body["budget"] = {"epsilon": "NaN", "delta": -0.1}
    body["name"] = "premium"
    status, problem = await put(gw, "/v1/admin/tiers/standard", body)
    assert status == 400
    text = "\n".join(problem["problems"])
    for field in ("min_noisy_count", "filters", "colour", "budget.epsilon", "budget.delta", "name"):
        assert field in text, (field, text)
    assert len(problem["problems"]) >= 6
    assert problem["detail"] == "; ".join(problem["problems"])


async def test_a_body_that_is_not_an_object(make_gateway: Any) -> None:
    gw = await make_gateway()
    for body in ([1, 2], "tier", 3):
        status, problem = await put(gw, "/v1/admin/tiers/standard", body)
        assert status == 400 and problem["type"] == PROBLEM + "policy-invalid"


# --- the reason rule ------------------------------------------------------------------------


BUDGET_CHANGES = [
    ("budget.epsilon", 50.0),
    ("budget.delta", 1e-5),
    ("budget.period_days", 30),
    ("max_epsilon_per_query", 0.5),
]


@pytest.mark.parametrize(("path", "value"), BUDGET_CHANGES)
async def test_a_budget_change_needs_a_reason_which_is_audited(
    make_gateway: Any, path: str, value: Any
) -> None:
    gw = await make_gateway()
    before = await current(gw, "tier", "standard")
    body = tier_with(before, path, value)
    status, problem = await put(gw, "/v1/admin/tiers/standard", body)
    assert status == 400 and any("reason" in p for p in problem["problems"]), problem
    assert await current(gw, "tier", "standard") == before
    for bad in ("", "   ", 7, None):
        status, _ = await put(gw, "/v1/admin/tiers/standard", {**body, "reason": bad})
        assert status == 400
    status, after = await put(
        gw, "/v1/admin/tiers/standard", {**body, "reason": "DSA-114 amendment"}
    )
    assert status == 200 and after["version"] == 2 and "reason" not in after
    record = [r for r in await audit(gw, "tier.update") if r.outcome == "ok"][0]
    assert record.reason == "DSA-114 amendment"
    change = record.detail["budget_change"]
    assert change["before"]["budget"] == before["budget"]
    assert change["after"]["budget"] == after["budget"]
    assert change["after"]["max_epsilon_per_query"] == after["max_epsilon_per_query"]


async def test_a_tier_change_applies_to_the_next_query(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    assert (await gw.query("SELECT COUNT(*) FROM visits", epsilon=0.5)).status == 200
    body = {**await current(gw, "tier", "standard"), "max_epsilon_per_query": 0.25}
    assert (await put(gw, "/v1/admin/tiers/standard", {**body, "reason": "tighten"}))[0] == 200
    resp = await gw.query("SELECT COUNT(*) FROM visits WHERE age > 3", epsilon=0.5)
    assert resp.status == 403, await resp.text()


# --- datasets -------------------------------------------------------------------------------


def bad_dataset_changes() -> list[tuple[str, Any, str]]:
    return [
        ("columns.age", {"type": "int", "bounds": [110, 0]}, "columns.age.bounds"),
        ("columns.cost", {"type": "float", "bounds": [0, "NaN"]}, "columns.cost.bounds[1]"),
        ("columns.cost", {"type": "float", "bounds": ["-Infinity", 5]}, "columns.cost.bounds[0]"),
        ("columns.cost", {"type": "float", "bounds": [0, "1e999"]}, "columns.cost.bounds[1]"),
        ("columns.cost", {"type": "float", "bounds": [0, 1e300]}, "columns.cost.bounds[1]"),
        ("columns.age", {"type": "int", "bounds": [0, 2**60]}, "columns.age.bounds[1]"),
        ("columns.age", {"type": "int", "bounds": [0, 2**52]}, "columns.age.bounds: max_rows"),
        ("columns.cost", {"type": "float", "bounds": [0, 5e-7]}, "off the stored grid"),
        ("columns.age", {"type": "int", "bounds": [0, 110], "unit": "y"}, "columns.age.unit"),
        ("columns.person_id", {"type": "int", "bounds": [0, 10**6]}, "columns.person_id"),
        ("columns.sex", {"type": "category", "values": ["F", "F"]}, "columns.sex.values"),
        ("max_rows_per_unit", -1, "max_rows_per_unit"),
        ("max_rows_per_unit", 0, "max_rows_per_unit"),
        ("min_tier", "gold", "min_tier: unknown tier 'gold'"),
        ("privacy_unit", "age", "privacy_unit"),
        ("licence_terms", "x", "licence_terms: unknown field"),
    ]


@pytest.mark.parametrize(("path", "value", "field"), bad_dataset_changes())
async def test_bad_dataset_values_are_refused(
    make_gateway: Any, path: str, value: Any, field: str
) -> None:
    gw = await make_gateway()
    before = await current(gw, "dataset", "visits")
    status, problem = await put(gw, "/v1/admin/datasets/visits", tier_with(before, path, value))
    assert status == 400, problem
    assert any(field in p for p in problem["problems"]), problem["problems"]
    assert await current(gw, "dataset", "visits") == before


async def test_an_identifier_cannot_be_retyped_or_dropped(make_gateway: Any) -> None:
    gw = await make_gateway()
    before = await current(gw, "dataset", "visits")
    retyped = copy.deepcopy(before)
    retyped["columns"]["person_id"] = {"type": "category", "values": ["a", "b"]}
    retyped["columns"]["pid"] = {"type": "identifier"}
    retyped["privacy_unit"] = "pid"
    status, problem = await put(gw, "/v1/admin/datasets/visits", retyped)
    assert status == 400
    text = "\n".join(problem["problems"])
    assert "privacy_unit: cannot change" in text
    assert "columns.person_id: an identifier column cannot be retyped" in text
    assert await current(gw, "dataset", "visits") == before


SOURCES_OUTSIDE = [
    "../../../outside.parquet",
    "/etc/passwd.csv",
    "https://example.org/visits.parquet",
    "s3://bucket/visits.parquet",
    "file:///etc/visits.parquet",
    "../../data/*.parquet",
    "duckdb://../../data/x.duckdb#../t",
    "../../data/visits.txt",
]


@pytest.mark.parametrize("source", SOURCES_OUTSIDE)
async def test_sources_are_confined_to_the_data_folder(make_gateway: Any, source: str) -> None:
    gw = await make_gateway()
    before = await current(gw, "dataset", "visits")
    status, problem = await put(gw, "/v1/admin/datasets/visits", {**before, "source": source})
    assert status == 400, problem
    assert any(p.startswith("dataset visits: source:") for p in problem["problems"])
    assert await current(gw, "dataset", "visits") == before


async def test_a_symlink_out_of_the_data_folder_is_refused(make_gateway: Any) -> None:
    gw = await make_gateway()
    root = gw.config.policies.data_dir
    outside = root.parent / "secret.parquet"
    shutil.copy(root / "visits.parquet", outside)
    os.symlink(outside, root / "link.parquet")
    before = await current(gw, "dataset", "visits")
    body = {**before, "source": "../../data/link.parquet"}
    status, problem = await put(gw, "/v1/admin/datasets/visits", body)
    assert status == 400 and "symlinks" in problem["detail"]
    # the same file really inside the folder is accepted
    shutil.copy(outside, root / "visits_copy.parquet")
    body["source"] = "../../data/visits_copy.parquet"
    assert (await put(gw, "/v1/admin/datasets/visits", body))[0] == 200


async def test_a_missing_source_file_is_refused(make_gateway: Any) -> None:
    gw = await make_gateway()
    before = await current(gw, "dataset", "visits")
    body = {**before, "source": "../../data/absent.parquet"}
    status, problem = await put(gw, "/v1/admin/datasets/visits", body)
    assert status == 400 and "file not found" in problem["detail"]


async def test_the_state_store_is_never_a_source(make_gateway: Any) -> None:
    """State folder and SQLite store inside data_dir (a poor layout, but legal): a dataset
    still cannot name them."""
    gw = await make_gateway(
        store_url="sqlite:///data/enclave.db", engine={"state_dir": "data/state"}
    )
    await gw.licence()
    assert (await gw.query("SELECT COUNT(*) FROM visits")).status == 200
    state = gw.config.engine.state_dir
    bounded = sorted(state.rglob("*.parquet"))
    assert bounded, "the engine wrote its bounded table under data/state"
    before = await current(gw, "dataset", "visits")
    rel = os.path.relpath(bounded[0], gw.config.policies.dir / "datasets")
    status, problem = await put(gw, "/v1/admin/datasets/visits", {**before, "source": rel})
    assert status == 400 and "own state" in problem["detail"], problem
    # a symlink inside the data folder that leads to the store file is refused too
    store_file = gw.config.policies.data_dir / "enclave.db"
    assert store_file.is_file()
    os.symlink(store_file, gw.config.policies.data_dir / "store.csv")
    body = {**before, "source": "../../data/store.csv"}
    status, problem = await put(gw, "/v1/admin/datasets/visits", body)
    assert status == 400 and "own state" in problem["detail"], problem


async def test_a_new_dataset_is_created_and_queryable(make_gateway: Any) -> None:
    gw = await make_gateway()
    root = gw.config.policies.data_dir
    shutil.copy(root / "visits.parquet", root / "clinic.parquet")
    body = await current(gw, "dataset", "visits")
    body.update(name="clinic", source="../../data/clinic.parquet", min_tier="standard")
    body.pop("version")
    status, created = await put(gw, "/v1/admin/datasets/clinic", body)
    assert status == 201 and created["version"] == 1, created
    await gw.licence(datasets=("clinic",))
    resp = await gw.query("SELECT COUNT(*) FROM clinic", dataset="clinic")
    assert resp.status == 200, await resp.text()
    [record] = await audit(gw, "dataset.update")
    assert record.dataset == "clinic" and record.actor == "root"


async def test_a_new_dataset_version_invalidates_the_release_cache(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    first = await (await gw.query(SQL, epsilon=0.5)).json()
    repeat = await (await gw.query(SQL, epsilon=0.5)).json()
    assert repeat["cached"] is True and repeat["epsilon_spent"] == 0.0
    body = await current(gw, "dataset", "visits")
    status, v2 = await put(gw, "/v1/admin/datasets/visits", {**body, "description": "v2"})
    assert status == 200 and v2["version"] == 2
    after = await (await gw.query(SQL, epsilon=0.5)).json()
    assert after["cached"] is False and after["epsilon_spent"] == 0.5
    assert after["budget"]["epsilon_remaining"] == first["budget"]["epsilon_remaining"] - 0.5
    # and that new release is itself cached for version 2
    assert (await (await gw.query(SQL, epsilon=0.5)).json())["cached"] is True


# --- roles: every admin endpoint, every other role refused ----------------------------------


ENDPOINTS = [
    ("GET", "/v1/admin/tiers", None),
    ("GET", "/v1/admin/tiers/standard", None),
    ("PUT", "/v1/admin/tiers/open", "tier"),
    ("GET", "/v1/admin/datasets", None),
    ("GET", "/v1/admin/datasets/visits", None),
    ("PUT", "/v1/admin/datasets/visits", "dataset"),
    ("GET", "/v1/admin/licences", None),
    ("POST", "/v1/admin/licences", "licence"),
    ("GET", "/v1/admin/licences/lic_seed", None),
    ("PATCH", "/v1/admin/licences/lic_seed", "patch"),
    ("POST", "/v1/admin/revocations", "revocation"),
]


async def bodies(gw: Any) -> dict[str, Any]:
    return {
        "tier": await current(gw, "tier", "open"),
        "dataset": await current(gw, "dataset", "visits"),
        "licence": {
            "subject": "bob",
            "organization": "Uni",
            "tier": "standard",
            "datasets": ["visits"],
            "purpose": "p",
            "jurisdiction": "GB",
            "valid_until": "2099-01-01",
        },  # fmt: skip
        "patch": {"purpose": "renamed"},
        "revocation": {"jti": "some-token-id", "reason": "lost laptop"},
    }


@pytest.mark.parametrize(("method", "path", "kind"), ENDPOINTS)
async def test_admin_endpoints_need_the_admin_role(
    make_gateway: Any, method: str, path: str, kind: str | None
) -> None:
    gw = await make_gateway()
    await gw.licence(id="lic_seed")
    body = (await bodies(gw))[kind] if kind else None
    head = await gw.services.store.audit_head()
    for roles in (["researcher"], ["auditor"], ["researcher", "auditor"], [], "admin"):
        resp = await gw.client.request(method, path, json=body, headers=gw.auth("eve", roles))
        problem = await resp.json(content_type=None)
        assert resp.status == 403 and problem["type"] == PROBLEM + "role-required", roles
    resp = await gw.client.request(method, path, json=body)
    assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
    # nothing changed: only the refusals were audited
    records = [r async for r in gw.services.store.audit_iter()][head[0] :]
    assert {r.outcome for r in records} == {"denied"} and len(records) == 5
    resp = await gw.client.request(method, path, json=body, headers=gw.auth(*ADMIN))
    assert resp.status in (200, 201), await resp.text()

"""Role, licence, tier and jurisdiction refusals over HTTP: 403/404, problem+json, audited,
and never a data value in the answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from enclave.audit.log import AuditFilter
from enclave.models import utcnow

COUNT = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"


async def _problem(resp: Any, status: int, type_: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/" + type_), body
    return body


async def test_unseen_dataset_is_404_like_an_unknown_one(make_gateway: Any) -> None:
    gw = await make_gateway()
    unknown = await _problem(await gw.query(COUNT, dataset="nosuch"), 404, "not-found")
    # no licence at all for visits: same answer as for a dataset that does not exist
    unseen = await _problem(await gw.query(COUNT, dataset="visits"), 404, "not-found")
    assert unknown["detail"].replace("nosuch", "X") == unseen["detail"].replace("visits", "X")


@pytest.mark.parametrize(
    ("over", "detail", "type_"),
    [
        ({"status": "suspended"}, "suspended", "licence-suspended"),
        ({"status": "revoked"}, "revoked", "licence-revoked"),
        (
            {
                "valid_until": utcnow() - dt.timedelta(days=1),
                "valid_from": utcnow() - dt.timedelta(days=30),
            },
            "expired",
            "licence-expired",
        ),
        ({"valid_from": utcnow() + dt.timedelta(days=1)}, "not yet valid", "licence-not-yet-valid"),
    ],
)
async def test_licence_refusals(
    make_gateway: Any, over: dict[str, Any], detail: str, type_: str
) -> None:
    """A licence that covers the dataset but cannot be used now says which rule failed, with
    its own problem type (a ``LicenceRefused``), on queries, estimates and dummy data."""
    gw = await make_gateway()
    await gw.licence(**over)
    for path in ("/v1/queries", "/v1/queries/estimate"):
        body = await _problem(await gw.query(COUNT, path=path), 403, type_)
        assert detail in body["detail"]
    dummy = await gw.client.get("/v1/datasets/visits/dummy", headers=gw.auth())
    assert (await _problem(dummy, 403, type_))["detail"] == body["detail"]
    recs = await gw.services.store.audit_events(AuditFilter(actor="alice"), 0, 10)
    assert recs[-1].outcome == "denied" and recs[-1].action == "dataset.dummy"
    assert recs[-2].outcome == "denied" and recs[-2].action == "query.estimate"
    assert all(r.epsilon == 0 for r in recs)


async def test_jurisdiction_refused(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence(tier="accredited", jurisdiction="US")  # accredited: GB, IE only
    await _problem(await gw.query(COUNT), 403, "jurisdiction-refused")


@pytest.mark.parametrize(
    ("tier", "sql", "epsilon"),
    [
        ("open", "SELECT SUM(cost) FROM visits", 0.5),  # aggregate not in the tier
        ("open", "SELECT COUNT(*) FROM visits WHERE age > 30", 0.5),  # no filters
        ("standard", COUNT, 1.5),  # above max_epsilon_per_query
        ("standard", "SELECT age, COUNT(*) FROM visits GROUP BY age", 0.5),  # undeclared keys
    ],
)
async def test_tier_refusals(make_gateway: Any, tier: str, sql: str, epsilon: float) -> None:
    gw = await make_gateway()
    await gw.licence(tier=tier)
    await _problem(await gw.query(sql, epsilon=epsilon), 403, "tier-refused")


async def test_wrong_roles_cannot_query(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    for roles in (["admin"], ["auditor"], []):
        resp = await gw.client.post(
            "/v1/queries", json={"dataset": "visits", "sql": COUNT}, headers=gw.auth("alice", roles)
        )
        await _problem(resp, 403, "role-required")


async def test_token_only_from_authorization_header(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    token = gw.tokens("alice", ["researcher"])
    resp = await gw.client.get(f"/v1/datasets?access_token={token}")
    body = await _problem(resp, 401, "missing-token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert token not in body["detail"]


async def test_rate_limit_answers_429_with_retry_after(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    tier = await (
        await gw.client.get("/v1/admin/tiers/standard", headers=gw.auth("steward", ["admin"]))
    ).json()
    tier["rate_limit_per_minute"] = 2
    put = await gw.client.put(
        "/v1/admin/tiers/standard", json=tier, headers=gw.auth("steward", ["admin"])
    )
    assert put.status == 200, await put.text()
    assert (await gw.query(COUNT)).status == 200
    assert (await gw.query(COUNT)).status == 200
    resp = await gw.query(COUNT)
    await _problem(resp, 429, "rate-limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT region FROM visits WHERE region = 'Zebra-Secret-77'",
        "SELECT COUNT(*) FROM visits WHERE age = 'Zebra-Secret-77'",
        "SELECT COUNT(*) FROM read_csv('Zebra-Secret-77')",
        "SELECT person_id, COUNT(*) FROM visits GROUP BY person_id",
    ],
)
async def test_refusals_never_echo_values(make_gateway: Any, sql: str) -> None:
    gw = await make_gateway()
    await gw.licence()
    resp = await gw.query(sql)
    assert resp.status == 400
    text = await resp.text()
    assert "Zebra-Secret-77" not in text
    assert "Traceback" not in text and "duckdb" not in text.lower()


async def test_unseen_dataset_is_404_everywhere_it_could_be_named(make_gateway: Any) -> None:
    """With a licence for another dataset only, ``visits`` is invisible: not listed, and the
    query and the estimate answer exactly as for a name that does not exist."""
    gw = await make_gateway()
    await gw.licence(datasets=("other",))
    listed = await (await gw.client.get("/v1/datasets", headers=gw.auth())).json()
    assert listed == {"datasets": []}
    for path in ("/v1/queries", "/v1/queries/estimate"):
        unseen = await _problem(await gw.query(COUNT, path=path), 404, "not-found")
        unknown = await _problem(
            await gw.query(COUNT, dataset="nosuch", path=path), 404, "not-found"
        )
        assert unseen["detail"].replace("visits", "X") == unknown["detail"].replace("nosuch", "X")
        assert "licen" not in unseen["detail"].lower()

"""``/readyz`` names no dataset to anonymous or researcher callers, and tells the truth about
datasets that failed (docs/operations.md, "Health and readiness")."""

from __future__ import annotations

import os
from typing import Any


async def readyz(gw: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    resp = await gw.client.get("/readyz", headers=headers or {})
    return resp.status, await resp.json()


async def test_names_only_for_admins_and_auditors(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    assert (await gw.query("SELECT COUNT(*) AS n FROM visits")).status == 200
    forged = {"Authorization": "Bearer " + gw.tokens("root", ["admin"])[:-4] + "AAAA"}
    for headers in ({}, gw.auth(), forged, {"Authorization": "Basic cm9vdDpyb290"}):
        status, body = await readyz(gw, headers)
        assert status == 200 and body["status"] == "ready", body
        assert body["datasets"] == {
            "ok": 1,
            "preparing": 0,
            "not prepared": 0,
            "failed": 0,
            "unavailable": 0,
        }
        assert "dataset_states" not in body and "visits" not in str(body)
    for roles in (["admin"], ["auditor"]):
        status, body = await readyz(gw, gw.auth("staff", roles))
        assert status == 200 and body["dataset_states"] == {"visits": "ok"}


async def test_a_failed_dataset_is_reported_not_ok(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    source = gw.config.policies.data_dir / "visits.parquet"
    os.replace(source, source.with_suffix(".moved"))
    refused = await gw.query("SELECT COUNT(*) AS n FROM visits")
    assert refused.status == 503
    problem = await refused.json()
    assert problem["type"].endswith("/dataset-unavailable")
    assert refused.headers["Retry-After"] == "30" and problem["retry_after"] == 30
    status, body = await readyz(gw)
    assert status == 200 and body["status"] == "degraded"
    assert body["datasets"]["unavailable"] == 1 and body["datasets"]["ok"] == 0
    _, detail = await readyz(gw, gw.auth("root", ["admin"]))
    assert detail["dataset_states"] == {"visits": "unavailable"}
    source.write_bytes(b"not parquet")  # back, but broken: preparation fails
    assert (await gw.query("SELECT COUNT(*) AS n FROM visits")).status == 503
    _, detail = await readyz(gw, gw.auth("root", ["admin"]))
    assert detail["dataset_states"] == {"visits": "failed"}

"""Audit injection: text a caller controls (token subject, dataset name, SQL, revocation
reason, request id) lands in its own field of its own record, byte for byte, and can never
add, end or reshape a record: the JSONL export keeps one record per line, the chain verifies,
and a request cannot set audit fields itself."""

from __future__ import annotations

import json
from typing import Any

from enclave.audit.log import AuditFilter

FORGED = '"}\n{"seq": 1, "actor": "root", "outcome": "ok", "hash": "' + "0" * 64 + '"}\u2028\r'


async def test_hostile_text_stays_inside_its_own_field(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence(FORGED)
    auditor = gw.auth("olga", ["auditor"])
    await gw.query(f"SELECT COUNT(*) AS n FROM visits -- {FORGED}", sub=FORGED)  # noqa: S608
    await gw.query("SELECT COUNT(*) AS n FROM visits", dataset="x" + FORGED, sub=FORGED)
    resp = await gw.client.post(
        "/v1/admin/revocations",
        json={"jti": "j" + FORGED[:40], "reason": FORGED},
        headers={**gw.auth("root", ["admin"]), "X-Request-Id": 'r"}{seq'},
    )
    assert resp.status == 201
    resp = await gw.client.get("/v1/audit/export", headers=auditor)
    raw = await resp.read()
    assert raw.isascii()
    lines = raw.decode().split("\n")[:-1]
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert json.loads(lines[-1])["verify"]["valid"] is True
    mine = [r for r in records if r["actor"] == FORGED]
    assert [r["action"] for r in mine] == ["query", "query"]
    assert mine[0]["sql"].endswith(FORGED) and mine[1]["dataset"] == "x" + FORGED
    revocation = next(r for r in records if r["action"] == "revocation.create")
    assert revocation["reason"] == FORGED
    assert revocation["request_id"] != 'r"}{seq'  # a hostile request id is replaced
    assert all(r["actor"] != "root" or r["action"] == "revocation.create" for r in records)


async def test_a_request_cannot_set_its_own_audit_fields(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    body = {
        "dataset": "visits",
        "sql": "SELECT COUNT(*) AS n FROM visits",
        "epsilon": 0.1,
        "actor": "root",
        "outcome": "ok",
        "seq": 1,
    }
    resp = await gw.client.post("/v1/queries", json=body, headers=gw.auth())
    assert resp.status == 400
    [record] = await gw.services.store.audit_events(AuditFilter(action="query"))
    assert (record.actor, record.outcome, record.seq) == ("alice", "denied", 2)

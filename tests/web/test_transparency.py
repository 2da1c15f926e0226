"""``GET /v1/transparency`` over the real query path: totals checked against the charges the
gateway answered, the three formats, no names, the public/auditor switch, hostile parameters,
and the report checked against a real export."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from enclave.audit.signing import SignedHead, load_public_key, verify_head
from enclave.audit.transparency_check import check_report
from enclave.audit.transparency_render import HTML_CSP
from enclave.models import utcnow
from tests.web.test_openapi import check, fetch_doc

AUDITOR = ("overseer", ["auditor"])
SUBJECT = "zed.confidential@example.org"
SECRETS = (SUBJECT, "Hidden Institute", "Secret purpose text", "lic_", "steward-x", "SELECT")
SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
SQL2 = "SELECT COUNT(*) AS n FROM visits"


async def _seed(gw: Any) -> list[dict[str, Any]]:
    """A licence through the admin API, then queries through the real pipeline; returns the
    release bodies."""
    body = {
        "subject": SUBJECT,
        "organization": "Hidden Institute",
        "tier": "standard",
        "datasets": ["visits"],
        "purpose": "Secret purpose text",
        "jurisdiction": "GB",
        "valid_until": (utcnow() + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    resp = await gw.client.post(
        "/v1/admin/licences", json=body, headers=gw.auth("steward-x", ["admin"])
    )
    assert resp.status == 201, await resp.text()
    released = []
    for sql, eps in ((SQL, 0.1), (SQL2, 0.2), (SQL, 0.1)):  # the third is a cached repeat
        resp = await gw.query(sql, epsilon=eps, sub=SUBJECT)
        assert resp.status == 200, await resp.text()
        released.append(await resp.json())
    refused = await gw.query("SELECT * FROM visits", epsilon=0.1, sub=SUBJECT)
    assert refused.status == 400
    return released


async def _get(gw: Any, query: str = "", auth: Any = AUDITOR) -> Any:
    headers = gw.auth(*auth) if auth else {}
    return await gw.client.get("/v1/transparency" + query, headers=headers)


async def test_report_totals_match_the_charges_answered(make_gateway: Any) -> None:
    gw = await make_gateway()
    released = await _seed(gw)
    assert [r["cached"] for r in released] == [False, False, True]
    resp = await _get(gw, "?period=month")
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert resp.headers["Enclave-Audit-Seq"] == str(report["upto"])
    doc = await fetch_doc(gw)
    check(doc, "get", "/v1/transparency", 200, report)
    (period,) = report["periods"]
    assert period["label"] == utcnow().strftime("%Y-%m")
    (visits,) = period["datasets"]
    assert visits["dataset"] == "visits"
    assert visits["epsilon"] == "0.3"  # 0.1 + 0.2 exactly; the cached repeat is free
    assert visits["queries"] == {"released": 2, "cached": 1, "refused": 1, "failed": 0}
    assert visits["active_licences"] == [{"tier": "standard", "jurisdiction": "GB", "count": 1}]
    key_resp = await gw.client.get("/v1/audit/key", headers=gw.auth(*AUDITOR))
    key = load_public_key(await key_resp.read())
    head = SignedHead.from_json(report["signed_head"])
    assert head.seq == report["upto"] and verify_head(head, key) is None

    export = await gw.client.get("/v1/audit/export", headers=gw.auth(*AUDITOR))
    lines = (await export.read()).splitlines(keepends=True)
    assert check_report(report, lines) == []
    report["periods"][0]["datasets"][0]["epsilon"] = "0.2"
    assert check_report(report, lines) == [
        f'periods[{period["label"]}].datasets[visits].epsilon: the report says "0.2", '
        'the export gives "0.3"'
    ]


async def test_csv_and_html_forms_and_no_names(make_gateway: Any) -> None:
    gw = await make_gateway()
    await _seed(gw)
    bodies = {}
    for fmt, media in (("json", "application/json"), ("csv", "text/csv"), ("html", "text/html")):
        resp = await _get(gw, f"?format={fmt}&period=year")
        assert resp.status == 200 and resp.content_type == media, fmt
        bodies[fmt] = await resp.text()
        assert json.loads(resp.headers["Enclave-Signed-Head"])["seq"] == int(
            resp.headers["Enclave-Audit-Seq"]
        )
        if fmt == "html":
            assert resp.headers["Content-Security-Policy"] == HTML_CSP
        for secret in SECRETS:
            assert secret not in bodies[fmt], (fmt, secret)
    assert "<script" not in bodies["html"] and "default-src 'none'" in HTML_CSP
    header, usage = bodies["csv"].splitlines()[:2]
    assert header.startswith("row,period,from,to,dataset,epsilon,delta,queries_released")
    assert usage.split(",")[4:8] == ["visits", "0.3", "0", "2"]


async def test_auditor_only_unless_public(make_gateway: Any) -> None:
    gw = await make_gateway()
    empty = await _get(gw)  # an empty log: nothing counted, the genesis head signed
    assert empty.status == 200
    body = await empty.json()
    assert (body["upto"], body["signed_head"]["seq"], body["period"]) == (0, 0, "all")
    assert [p["datasets"] for p in body["periods"]] == [[]]  # today, nothing counted
    export = await gw.client.get("/v1/audit/export", headers=gw.auth(*AUDITOR))
    assert check_report(body, (await export.read()).splitlines()) == []
    assert (await _get(gw, auth=None)).status == 401
    for role in ("researcher", "admin"):
        resp = await _get(gw, auth=("someone", [role]))
        assert resp.status == 403
        assert (await resp.json(content_type=None))["type"].endswith("/role-required")

    open_gw = await make_gateway(transparency={"public": True})
    resp = await _get(open_gw, "?format=html", auth=None)
    assert resp.status == 200 and "<h1>Transparency report</h1>" in await resp.text()


async def test_the_public_report_counts_against_the_address_limit(make_gateway: Any) -> None:
    gw = await make_gateway(transparency={"public": True}, limits={"per_address_per_minute": 2})
    assert [(await _get(gw, auth=None)).status for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?from=2026-13-01&to=soon&period=week&format=pdf&bogus=1",
         ["bogus: unknown query parameter", "format: must be one of json, csv, html",
          "from: must be a date", "to: must be a date", "period: must be one of"]),
        ("?from=2026-03-01&to=2026-01-01", ["from: must be earlier than to"]),
        ("?from=1970-01-01&to=9000-01-01&period=month", ["to: the range holds more than"]),
        ("?period=month&period=year", ["period: given more than once"]),
        ("?to=9000-01-01&period=month", ["to: the range holds more than 1200 periods"]),
        ("?from=" + "9" * 5000, ["from: at most 10 characters"]),
        ("?from=%EF%BC%92026-01-01", ["from: must be a date"]),
        ("?to=2026-01-0%00", ["to: must not contain NUL characters"]),
        ("?from=0000-01-01", ["from: must be a date"]),
    ],
)  # fmt: skip
async def test_hostile_parameters_get_one_400_listing_every_problem(
    make_gateway: Any, query: str, expected: list[str]
) -> None:
    gw = await make_gateway()
    resp = await _get(gw, query)
    assert resp.status == 400, await resp.text()
    body = await resp.json(content_type=None)
    assert resp.content_type == "application/problem+json"
    check(await fetch_doc(gw), "get", "/v1/transparency", 400, body)
    problems = body.get("problems") or [body["detail"]]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected)

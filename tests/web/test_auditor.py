"""Auditor endpoints against a live gateway: roles, filters and paging, verify with a signed
head, streamed exports (audited, hostile SQL, CSV injection) and the spend summary."""

from __future__ import annotations

import csv
import io
import json
import stat
from typing import Any

import pytest

from enclave.audit.chain import verify
from enclave.audit.export import summarize_records, verify_export
from enclave.audit.signing import KEY_FILE, SignedHead, load_public_key, verify_head

SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
AUDIT_PATHS = [
    "/v1/audit/events",
    "/v1/audit/verify",
    "/v1/audit/export",
    "/v1/audit/export?format=csv",
    "/v1/audit/summary",
    "/v1/audit/key",
]
HOSTILE_SQL = 'SELECT COUNT(*) AS n FROM visits -- "q" \\ \n\r\u2028\u2029 \U0001f600 é\x7f'


async def _activity(gw: Any) -> None:
    """A fresh release, a cache hit, a refused query and a refused role."""
    await gw.licence()
    assert (await gw.query(SQL, epsilon=0.5)).status == 200
    assert (await (await gw.query(SQL, epsilon=0.5)).json())["cached"] is True
    assert (await gw.query("SELECT age FROM visits")).status == 400
    assert (await gw.client.get("/v1/audit/events", headers=gw.auth("alice"))).status == 403


async def _get(gw: Any, path: str, **params: Any) -> Any:
    resp = await gw.client.get(path, params=params, headers=gw.auth("olga", ["auditor"]))
    assert resp.status == 200, await resp.text()
    return resp


@pytest.mark.parametrize("path", AUDIT_PATHS)
async def test_only_auditors_reach_the_audit_endpoints(make_gateway: Any, path: str) -> None:
    gw = await make_gateway()
    for roles in (["researcher"], ["admin"], [], ["admin", "researcher"]):
        resp = await gw.client.get(path, headers=gw.auth("mallory", roles))
        assert resp.status == 403, (roles, path)
        assert (await resp.json(content_type=None))["type"].endswith("/role-required")
    assert (await gw.client.get(path)).status == 401
    await _get(gw, path)
    # every refusal above was itself audited, as the contract says
    events = await (await _get(gw, "/v1/audit/events", actor="mallory")).json()
    assert [e["outcome"] for e in events["events"]] == ["denied"] * 4


async def test_no_method_edits_or_deletes_audit_records(make_gateway: Any) -> None:
    gw = await make_gateway()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/v1/audit/events", "/v1/audit/events/1"):
            resp = await gw.client.request(method, path, headers=gw.auth("root", ["admin"]))
            assert resp.status in (404, 405), (method, path)


async def test_events_filters_and_paging(make_gateway: Any) -> None:
    gw = await make_gateway()
    await _activity(gw)
    everything = (await (await _get(gw, "/v1/audit/events", limit="1000")).json())["events"]
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert verify(everything).valid  # events carry the full record, hash included

    ok = (await (await _get(gw, "/v1/audit/events", action="query", outcome="ok")).json())["events"]
    assert [e["cached"] for e in ok] == [False, True]
    assert all(e["actor"] == "alice" and e["dataset"] == "visits" for e in ok)
    denied = await _get(gw, "/v1/audit/events", actor="alice", outcome="denied")
    assert {e["action"] for e in (await denied.json())["events"]} == {"query", "request"}
    lic = await _get(gw, "/v1/audit/events", licence_id=ok[0]["licence_id"], dataset="visits")
    assert len((await lic.json())["events"]) >= 3

    seen: list[int] = []
    cursor = ""
    while True:
        page = await (await _get(gw, "/v1/audit/events", limit="2", cursor=cursor)).json()
        seen += [e["seq"] for e in page["events"]]
        assert len(page["events"]) <= 2
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == [e["seq"] for e in everything]

    first_ts, last_ts = everything[0]["ts"], everything[-1]["ts"]
    window = await _get(gw, "/v1/audit/events", since=first_ts, until="2999-01-01")
    assert len((await window.json())["events"]) == len(everything)
    empty = await _get(gw, "/v1/audit/events", since="2999-01-01")
    assert (await empty.json()) == {"events": [], "next_cursor": None}
    before = await _get(gw, "/v1/audit/events", until=first_ts)
    assert (await before.json())["events"] == [] and first_ts <= last_ts


@pytest.mark.parametrize(
    ("params", "type_suffix"),
    [
        ({"limit": "0"}, "/bad-request"),
        ({"limit": "1001"}, "/bad-request"),
        ({"limit": "ten"}, "/bad-request"),
        ({"limit": "\u0663"}, "/bad-request"),
        ({"cursor": "-1"}, "/invalid-cursor"),
        ({"cursor": "abc"}, "/invalid-cursor"),
        ({"cursor": "9" * 40}, "/invalid-cursor"),
        ({"action": "query; DROP"}, "/bad-request"),
        ({"outcome": "maybe"}, "/bad-request"),
        ({"since": "yesterday"}, "/bad-request"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "/bad-request"),
        ({"actor": "x" * 300}, "/bad-request"),
        ({"acter": "alice"}, "/bad-request"),
    ],
)
async def test_events_parameters_are_validated(
    make_gateway: Any, params: dict[str, str], type_suffix: str
) -> None:
    gw = await make_gateway()
    resp = await gw.client.get(
        "/v1/audit/events", params=params, headers=gw.auth("olga", ["auditor"])
    )
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert resp.content_type == "application/problem+json"
    assert body["type"].endswith(type_suffix)
    assert "DROP" not in body["detail"] and "x" * 20 not in body["detail"]


async def test_summary_window_is_validated(make_gateway: Any) -> None:
    gw = await make_gateway()
    for params in ({"since": "not-a-time"}, {"since": "2026-02-01", "until": "2026-01-01"}):
        resp = await gw.client.get(
            "/v1/audit/summary", params=params, headers=gw.auth("olga", ["auditor"])
        )
        assert resp.status == 400
    resp = await gw.client.get(
        "/v1/audit/export", params={"format": "xlsx"}, headers=gw.auth("olga", ["auditor"])
    )
    assert resp.status == 400


async def test_verify_returns_a_head_signed_by_the_published_key(make_gateway: Any) -> None:
    gw = await make_gateway()
    await _activity(gw)
    key_body = await (await _get(gw, "/v1/audit/key")).json()
    key = load_public_key(key_body["public_key_pem"].encode())
    assert load_public_key(json.dumps(key_body["jwk"]).encode()) == key
    body = await (await _get(gw, "/v1/audit/verify")).json()
    assert body["valid"] is True
    head = SignedHead.from_json(body["signed_head"])
    assert (head.seq, head.hash) == (body["count"], body["head"])
    assert head.key_id == key_body["key_id"] == key_body["jwk"]["kid"]
    assert verify_head(head, key) is None
    assert (body["count"], body["head"]) == await gw.services.store.audit_head()
    key_file = gw.config.engine.state_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # the same key on every call (created once)
    assert (await (await _get(gw, "/v1/audit/key")).json())["key_id"] == head.key_id


async def test_jsonl_export_is_audited_streamed_and_verifies(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    await gw.query(HOSTILE_SQL, epsilon=0.5)
    await gw.query("SELECT 1 -- \u2028\n\"'", epsilon=0.5)
    resp = await _get(gw, "/v1/audit/export", format="jsonl")
    assert resp.content_type == "application/x-ndjson"
    assert "attachment" in resp.headers["Content-Disposition"]
    raw = await resp.read()
    assert raw.isascii()  # U+2028 and friends are escaped: one record per line, always
    lines = raw.decode().split("\n")
    assert lines[-1] == ""
    records = [json.loads(line) for line in lines[:-2]]
    trailer = json.loads(lines[-2])
    assert len(records) == int(resp.headers["Enclave-Audit-Seq"])
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    sqls = [r["sql"] for r in records if r["action"] == "query"]
    assert sqls == [HOSTILE_SQL, "SELECT 1 -- \u2028\n\"'"]
    last = records[-1]
    assert (last["action"], last["actor"], last["outcome"]) == ("audit.export", "olga", "ok")
    assert last["detail"]["format"] == "jsonl"
    assert trailer["verify"]["valid"] is True
    key_body = await (await _get(gw, "/v1/audit/key")).json()
    key = load_public_key(key_body["public_key_pem"].encode())
    verdict = verify_export(lines, key=key)
    assert verdict.valid and verdict.result.count == len(records), verdict.problems
    assert SignedHead.from_json(trailer).seq == len(records)
    # the export's own record stays in the log, and the chain still verifies
    events = await (await _get(gw, "/v1/audit/events", action="audit.export")).json()
    assert [e["seq"] for e in events["events"]] == [last["seq"]]
    assert (await (await _get(gw, "/v1/audit/verify")).json())["valid"] is True


async def test_csv_export_neutralises_formulas(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    for text in hostile:
        await gw.query(text, epsilon=0.5)
    evil_actor = "=cmd|' /C calc'!A0"
    await gw.client.get("/v1/audit/summary", headers=gw.auth(evil_actor, ["researcher"]))
    await gw.query(HOSTILE_SQL, epsilon=0.5)
    resp = await _get(gw, "/v1/audit/export", format="csv")
    assert resp.content_type == "text/csv"
    head = SignedHead.from_json(json.loads(resp.headers["Enclave-Signed-Head"]))
    assert resp.headers["Enclave-Audit-Valid"] == "true"
    rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8"), newline="")))
    header, body = rows[0], rows[1:]
    assert header[0] == "seq" and header[-1] == "hash" and len(body) == head.seq
    col = {name: header.index(name) for name in ("sql", "actor", "roles", "action")}
    sqls = [r[col["sql"]] for r in body if r[col["action"]] == "query"]
    assert sqls == ["'" + t for t in hostile] + [HOSTILE_SQL]
    assert "'" + evil_actor in [r[col["actor"]] for r in body]
    for row in body:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert json.loads(body[0][col["roles"]]) == ["admin"]


async def test_summary_per_actor_and_dataset(make_gateway: Any) -> None:
    gw = await make_gateway()
    await _activity(gw)
    await gw.licence("bob", id="lic_bob")
    assert (await gw.query(SQL, epsilon=0.25, sub="bob")).status == 200
    body = await (await _get(gw, "/v1/audit/summary")).json()
    rows = {(r["actor"], r["dataset"]): r for r in body["rows"]}
    alice, bob = rows[("alice", "visits")], rows[("bob", "visits")]
    assert (alice["epsilon_spent"], alice["releases"], alice["cache_hits"]) == ("0.5", 1, 1)
    assert alice["refusals"] == 1 and rows[("alice", None)]["refusals"] == 1
    assert (bob["epsilon_spent"], bob["releases"], bob["refusals"]) == ("0.25", 1, 0)
    assert body["totals"]["epsilon_spent"] == "0.75" and body["totals"]["releases"] == 2
    # the scan over records alone agrees with the adapter's aggregate query
    store = gw.services.store
    assert await summarize_records(store, None, None) == await store.audit_summary(None, None)
    future = await (await _get(gw, "/v1/audit/summary", since="2999-01-01")).json()
    assert future["rows"] == [] and future["since"] == "2999-01-01T00:00:00.000Z"

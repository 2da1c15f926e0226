"""Tampering with the audit log through the SQLite file itself (triggers dropped, as an
attacker with file access would), and what catches it: the chain for edits, deletions,
insertions and reordering; a signed head saved earlier for truncation and wholesale
replacement; the key for forged heads; and an independent verifier written in JavaScript."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit.chain import chain_hash
from enclave.audit.export import head_problems, verify_export, verify_store
from enclave.audit.record import GENESIS_HASH
from enclave.audit.signing import HeadSigner, SignedHead, load_public_key, verify_head
from enclave.config import sqlite_path

SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
COLUMNS = (
    "seq, ts, request_id, actor, roles, licence_id, tier, action, dataset, sql, epsilon, delta,"
    " cached, outcome, reason, client, result_sha256, detail, prev_hash, hash"
)


def _tamper(url: str, *statements: str) -> None:
    con = sqlite3.connect(sqlite_path(url))
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_no_update")
        con.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in statements:
            con.execute(statement)
        con.commit()
    finally:
        con.close()


async def _busy_gateway(make_gateway: Any) -> Any:
    gw = await make_gateway()
    await gw.licence()
    for eps in (0.1, 0.2, 0.3):
        assert (await gw.query(SQL, epsilon=eps)).status == 200
    await gw.query("SELECT age FROM visits")
    return gw  # records: 1 licence.create, 3 queries, 1 refusal


async def _auditor_get(gw: Any, path: str) -> Any:
    resp = await gw.client.get(path, headers=gw.auth("olga", ["auditor"]))
    assert resp.status == 200
    return resp


async def _verify(gw: Any) -> dict[str, Any]:
    result: dict[str, Any] = await (await _auditor_get(gw, "/v1/audit/verify")).json()
    return result


async def _saved_head_and_key(gw: Any) -> tuple[SignedHead, Any]:
    body = await _verify(gw)
    key = await (await _auditor_get(gw, "/v1/audit/key")).json()
    return SignedHead.from_json(body), load_public_key(key["public_key_pem"].encode())


@pytest.mark.parametrize(
    ("statements", "first_bad", "reason"),
    [
        (["UPDATE audit SET actor = 'mallory' WHERE seq = 3"], 3, "hash"),
        (["UPDATE audit SET epsilon = 0.001 WHERE seq = 3"], 3, "hash"),
        (["UPDATE audit SET detail = NULL WHERE seq = 3"], 3, "hash"),
        (["DELETE FROM audit WHERE seq = 3"], 3, "gap"),
        (
            [  # swap records 3 and 4
                "UPDATE audit SET seq = 100 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = 100",
            ],
            3,
            "prev_hash",
        ),
    ],
)
async def test_verify_names_the_first_bad_record(
    make_gateway: Any, statements: list[str], first_bad: int, reason: str
) -> None:
    gw = await _busy_gateway(make_gateway)
    assert (await _verify(gw))["valid"] is True
    _tamper(gw.config.store.url, *statements)
    body = await _verify(gw)
    assert body["valid"] is False and body["first_bad_seq"] == first_bad
    assert reason in body["reason"] and "mallory" not in body["reason"]
    assert "signed_head" not in body


async def test_an_inserted_record_with_a_correct_hash_is_caught(make_gateway: Any) -> None:
    gw = await _busy_gateway(make_gateway)
    store = gw.services.store
    records = [r async for r in store.audit_iter()]
    forged = {**records[2].to_json(), "actor": "mallory"}
    forged["hash"] = chain_hash(forged["prev_hash"], forged)  # fits after record 2
    url = gw.config.store.url
    n = len(records)
    values = ", ".join("?" * 20)
    con = sqlite3.connect(sqlite_path(url))
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_no_update")
        for seq in range(n, 2, -1):  # make room at seq 3
            con.execute("UPDATE audit SET seq = seq + 1 WHERE seq = ?", (seq,))
        row = [forged[c.strip()] for c in COLUMNS.split(",")]
        row[4] = json.dumps(row[4])
        row[17] = json.dumps(row[17]) if row[17] is not None else None
        con.execute(f"INSERT INTO audit ({COLUMNS}) VALUES ({values})", row)  # noqa: S608
        con.commit()
    finally:
        con.close()
    body = await _verify(gw)
    assert (body["valid"], body["first_bad_seq"]) == (False, 4)
    assert "prev_hash" in body["reason"]


async def test_truncation_is_caught_only_with_a_saved_head(make_gateway: Any) -> None:
    gw = await _busy_gateway(make_gateway)
    saved, key = await _saved_head_and_key(gw)
    _tamper(gw.config.store.url, f"DELETE FROM audit WHERE seq > {int(saved.seq) - 2}")  # noqa: S608
    # The chain that is left is internally consistent: verify alone cannot tell ...
    assert (await _verify(gw))["valid"] is True
    # ... but it does not reach the head the auditor saved.
    result, watched = await verify_store(gw.services.store, watch=saved.seq)
    problems = head_problems(result, watched, saved, key)
    assert len(problems) == 1 and "truncated" in problems[0]
    export = await (await _auditor_get(gw, "/v1/audit/export")).read()
    verdict = verify_export(export.decode().splitlines(), saved, key)
    assert not verdict.valid and any("truncated" in p for p in verdict.problems)


async def _replace_everything(gw: Any) -> None:
    """Rewrite every record (actor renamed) and re-hash the whole chain consistently."""
    con = sqlite3.connect(sqlite_path(gw.config.store.url))
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_no_update")
        records = [r async for r in gw.services.store.audit_iter()]
        prev = GENESIS_HASH
        for record in records:
            body = {**record.to_json(), "actor": "someone-else", "prev_hash": prev}
            prev = chain_hash(prev, body)
            con.execute(
                "UPDATE audit SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                ("someone-else", body["prev_hash"], prev, record.seq),
            )
        con.commit()
    finally:
        con.close()


async def test_wholesale_replacement_is_caught_by_the_saved_head(make_gateway: Any) -> None:
    gw = await _busy_gateway(make_gateway)
    saved, key = await _saved_head_and_key(gw)
    await _replace_everything(gw)
    assert (await _verify(gw))["valid"] is True  # a consistent forgery
    export = (await (await _auditor_get(gw, "/v1/audit/export")).read()).decode()
    assert verify_export(export.splitlines(), key=key).valid  # fine on its own ...
    verdict = verify_export(export.splitlines(), saved, key)  # ... not against the saved head
    assert not verdict.valid
    assert any(f"record {saved.seq} differs" in p for p in verdict.problems)


async def test_a_forged_head_fails_the_key_check(make_gateway: Any) -> None:
    gw = await _busy_gateway(make_gateway)
    saved, key = await _saved_head_and_key(gw)
    await _replace_everything(gw)
    records = [r async for r in gw.services.store.audit_iter()]
    forger = HeadSigner(Ed25519PrivateKey.generate())
    forged = forger.sign(saved.seq, records[saved.seq - 1].hash)
    assert verify_head(forged, key) is not None
    # even claiming the gateway's key_id does not help: the signature fails
    relabelled = SignedHead(forged.seq, forged.hash, forged.ts, saved.key_id, forged.signature)
    assert "signature" in (verify_head(relabelled, key) or "")
    # and a genuine head with an altered hash fails too
    altered = SignedHead(saved.seq, "0" * 64, saved.ts, saved.key_id, saved.signature)
    assert "signature" in (verify_head(altered, key) or "")
    result, watched = await verify_store(gw.services.store, watch=saved.seq)
    assert head_problems(result, watched, relabelled, key)


# --- the independent verifier ---------------------------------------------------------------

VERIFY_JS = r"""
// An oversight body's verifier: reads a JSONL export, recomputes every hash with its own
// RFC 8785 canonicalization (JSON.stringify already formats numbers and strings as JCS
// requires; only key order has to be imposed), prints a JSON verdict.
const crypto = require("crypto");
const fs = require("fs");
function canon(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
  const members = Object.keys(v).sort().map(k => JSON.stringify(k) + ":" + canon(v[k]));
  return "{" + members.join(",") + "}";
}
let prev = "0".repeat(64), seq = 0, verdict = null;
for (const line of fs.readFileSync(process.argv[2], "utf8").split("\n")) {
  if (!line) continue;
  const rec = JSON.parse(line);
  if ("signed_head" in rec) continue;
  seq += 1;
  const { hash, ...body } = rec;
  const mine = crypto.createHash("sha256").update(prev + canon(body), "utf8").digest("hex");
  if (rec.seq !== seq || rec.prev_hash !== prev || mine !== hash) {
    verdict = { valid: false, first_bad_seq: seq }; break;
  }
  prev = hash;
}
console.log(JSON.stringify(verdict || { valid: true, count: seq, head: prev }));
"""


def _node_verify(tmp_path: Path, export: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the independent JavaScript verifier cannot run")
    script, data = tmp_path / "verify.js", tmp_path / "export.jsonl"
    script.write_text(VERIFY_JS)
    data.write_text(export)
    out = subprocess.run(
        [node, str(script), str(data)], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def test_an_independent_javascript_verifier_agrees(make_gateway: Any, tmp_path: Path) -> None:
    gw = await _busy_gateway(make_gateway)
    await gw.query('SELECT COUNT(*) AS n FROM visits -- "é"\n\u2028 \U0001f600 \\', epsilon=0.4)
    await gw.client.post(
        "/v1/admin/revocations",
        json={"jti": "j-\u00e9\U0001f600", "reason": 'lost laptop\n"quoted"'},
        headers=gw.auth("steward", ["admin"]),
    )
    export = (await (await _auditor_get(gw, "/v1/audit/export")).read()).decode()
    ours = await _verify(gw)
    theirs = _node_verify(tmp_path, export)
    # the export ends at its own audit record; the gateway's verify ran after it
    assert theirs == {"valid": True, "count": ours["count"], "head": ours["head"]}
    lines = export.splitlines()
    edited = json.loads(lines[2])
    edited["epsilon"] = edited["epsilon"] + 1e-9
    lines[2] = json.dumps(edited)
    assert _node_verify(tmp_path, "\n".join(lines)) == {"valid": False, "first_bad_seq": 3}

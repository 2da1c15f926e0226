"""Store verification from raw rows (``audit/rows.py``) and in parallel segments
(``store/sqlite_verify.py``) must give exactly ``ChainVerifier``'s verdict over ``audit_iter``:
on clean chains, on every tampering of ``test_audit.py``, and with odd stored JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit import parallel
from enclave.audit.chain import VerifyResult, canonical_json, verify
from enclave.audit.export import stream_jsonl, verify_export, verify_store
from enclave.audit.parallel import verify_in_workers
from enclave.audit.record import FIELDS, GENESIS_HASH
from enclave.audit.rows import Segment, SegmentJoiner, fast_canonical, record_from_row, record_line
from enclave.audit.signing import HeadSigner
from enclave.store import sqlite_verify
from tests.store.conftest import Backend, draft

ATTACKS: dict[str, list[str]] = {
    "edit-actor": ["UPDATE audit SET actor = 'mallory' WHERE seq = 4"],
    "edit-epsilon": ["UPDATE audit SET epsilon = 0.001 WHERE seq = 6"],
    "edit-roles-text": ["UPDATE audit SET roles = '[\"admin\"]' WHERE seq = 3"],
    "edit-first": ["UPDATE audit SET sql = 'x' WHERE seq = 1"],
    "edit-last": ["UPDATE audit SET reason = 'x' WHERE seq = 11"],
    "delete": ["DELETE FROM audit WHERE seq = 5"],
    "delete-at-segment-edge": ["DELETE FROM audit WHERE seq = 6"],
    "delete-two": ["DELETE FROM audit WHERE seq IN (7, 8)"],
    "delete-first": ["DELETE FROM audit WHERE seq = 1"],
    "truncate-tail": ["DELETE FROM audit WHERE seq > 9"],
    "swap": [
        "UPDATE audit SET seq = -3 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = -3",
    ],
    "forge-tail": [
        "INSERT INTO audit SELECT 12, ts, request_id, 'mallory', roles, licence_id, tier,"
        " action, dataset, sql, epsilon, delta, cached, outcome, reason, client,"
        " result_sha256, detail, hash, prev_hash FROM audit WHERE seq = 11"
    ],
    "bad-detail-json": ["UPDATE audit SET detail = '{not json' WHERE seq = 2"],
    "text-in-real-column": ["UPDATE audit SET delta = 'abc' WHERE seq = 9"],
    "relink": ["UPDATE audit SET prev_hash = hash WHERE seq = 7"],
}


async def _fill(store: Any, n: int = 11) -> None:
    for i in range(n):
        await store.append(
            draft(
                sql=f"SELECT COUNT(*) FROM visits -- ünïcode \u2028 {i}",  # noqa: S608
                epsilon=0.1 * i,
                delta=1e-7 if i % 2 else 0.0,
                roles=("researcher", "auditor") if i % 3 else (),
                detail={"k": [i, None, "é"], "a": {"z": 1.5}} if i % 4 == 0 else None,
                cached=i % 5 == 0,
            )
        )


async def _reference(store: Any) -> VerifyResult:
    return verify([r async for r in store.audit_iter(batch=4)])


async def _parallel(path: str, n: int, watch: int = -1) -> tuple[VerifyResult, str | None]:
    return await verify_in_workers(sqlite_verify.__name__, path, n, watch, segment=3)


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
async def test_every_path_gives_the_reference_verdict(
    store: Any, backend: Backend, attack: str
) -> None:
    await _fill(store)
    clean, _ = await verify_store(store)
    assert clean.valid and clean.count == 11
    await backend.guards_off()
    for sql in ATTACKS[attack]:
        if backend.name == "postgres":
            sql = sql.replace("delta = 'abc'", "delta = 'NaN'")
        await backend.raw(sql)
    try:
        expected = await _reference(store)
    except (ValueError, TypeError):  # record_from_row cannot decode the row at all
        expected = None
    got, _ = await verify_store(store)
    assert got.valid == (attack == "truncate-tail")  # documented: only a signed head sees it
    if expected is not None:
        assert got == expected
    else:  # the old path raised; now it is a verdict on that record
        assert (got.first_bad_seq, got.reason) in {
            (2, "record cannot be encoded canonically"),
            (9, "record cannot be encoded canonically"),
        }
    if backend.name == "sqlite":
        n = (await store.audit_head())[0]
        assert (await _parallel(store.path, n))[0] == got


async def test_clean_chain_watch_progress_and_upto(store: Any, backend: Backend) -> None:
    await _fill(store, 23)
    expected = await _reference(store)
    marks: list[int] = []
    got, watched = await store.audit_verify(None, marks.append, 9, 5)
    assert got == expected and got.valid and got.count == 23
    assert marks == [5, 10, 15, 20]
    records = [r async for r in store.audit_iter()]
    assert watched == records[8].hash
    part, _ = await store.audit_verify(upto=7)
    assert part == VerifyResult(valid=True, count=7, head=records[6].hash)
    assert (await store.audit_verify(upto=0))[0] == VerifyResult(True, 0, GENESIS_HASH)
    assert (await store.audit_verify(watch=0))[1] == GENESIS_HASH
    if backend.name == "sqlite":
        marks.clear()
        par, par_watched = await verify_in_workers(
            sqlite_verify.__name__, store.path, 23, 9, marks.append, 5, segment=4
        )
        assert (par, par_watched, marks) == (got, watched, [5, 10, 15, 20])


async def test_fast_row_encoding_equals_the_record_encoding(store: Any, backend: Backend) -> None:
    await _fill(store, 12)
    columns = ", ".join(FIELDS)
    rows = await backend.raw(f"SELECT {columns} FROM audit")  # noqa: S608
    for row in rows:
        assert fast_canonical(row) == canonical_json(record_from_row(row))


def test_joiner_needs_consecutive_segments() -> None:
    joiner = SegmentJoiner()
    assert joiner.add(Segment(1, 2, 2, GENESIS_HASH, "a" * 64, None))
    with pytest.raises(ValueError, match="consecutive"):
        joiner.add(Segment(4, 5, 2, "a" * 64, "b" * 64, None))


async def test_a_long_chain_in_a_file_is_verified_in_parallel(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above PARALLEL_MIN the SQLite store hands the chain to worker processes."""
    from enclave.store.sqlite import SqliteStore

    monkeypatch.setattr(sqlite_verify, "PARALLEL_MIN", 10)
    monkeypatch.setattr(parallel, "SEGMENT", 6)  # four ranges, on up to four workers
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await _fill(store, 20)
        assert await store.audit_verify() == (await _reference(store), None)
    finally:
        await store.close()


async def _export(store: Any, upto: int | None = None) -> list[bytes]:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    chunks = [c async for c in stream_jsonl(store, upto, signer.sign)]
    return b"".join(chunks).splitlines()


async def _export_from_records(store: Any, upto: int | None) -> tuple[list[bytes], Any]:
    """The export's lines and verdict as the record path gives them: ``record_line`` and
    ``ChainVerifier`` over ``audit_iter``."""
    records = [r async for r in store.audit_iter() if upto is None or r.seq <= upto]
    lines = [record_line(r).rstrip("\n").encode("ascii") for r in records]
    return lines, verify(records).to_json()


@pytest.mark.parametrize("attack", ["none", "edit-actor", "delete", "swap", "relink"])
async def test_export_from_rows_equals_export_from_records(
    store: Any, backend: Backend, attack: str
) -> None:
    await _fill(store, 13)
    await store.append(draft(sql="x\u2028y \U0001f600 \x01", roles=("a", "b"), reason="r"))
    if attack != "none":
        await backend.guards_off()
        for sql in ATTACKS[attack]:
            await backend.raw(sql)
    for upto in (None, 6):
        fast = await _export(store, upto)
        slow, verdict = await _export_from_records(store, upto)
        assert fast[:-1] == slow and len(fast) > 2
        trailer = json.loads(fast[-1])
        assert trailer["verify"] == verdict
        valid = trailer["verify"]["valid"]
        assert (trailer["signed_head"] is None) == (not valid)
        assert valid == (attack == "none" or (attack == "relink" and upto == 6))
        assert verify_export(fast).valid == valid


async def test_a_failing_worker_is_store_unavailable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enclave.errors import StoreUnavailable
    from enclave.store.sqlite import SqliteStore

    monkeypatch.setattr(sqlite_verify, "PARALLEL_MIN", 2)
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await _fill(store, 3)
        with pytest.raises(OSError, match="worker failed"):
            await verify_in_workers(sqlite_verify.__name__, str(tmp_path / "missing.db"), 3)
        monkeypatch.setattr(store.driver, "path", str(tmp_path / "missing.db"))
        with pytest.raises(StoreUnavailable):
            await store.audit_verify()
    finally:
        monkeypatch.setattr(store.driver, "path", str(tmp_path / "s.db"))
        await store.close()

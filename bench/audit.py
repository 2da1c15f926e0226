"""Audit: verify and export a hash chain of 1M records held in a real SQLite store file.

    .venv/bin/python -m bench.audit           # 1,000,000 records (built once, then reused)
    .venv/bin/python -m bench.audit --smoke   # 2,000 records

How the chain is built: the store file is created by ``SqliteStore.open()`` (real schema and
migrations); the records are then made by the store's own ``audit.chain.build_record`` (which hashes
with ``enclave.audit.chain.chain_hash``) and written with the same INSERT as the store's
append, 50,000 per transaction. This is the "fast" way of the brief: going through
``SqliteStore.append`` would cost an fsync per record (``synchronous=FULL``), hours for 1M.
The records look like query records (SQL text, licence, epsilon, result digest).

Timed, through the functions the auditor endpoints and CLI use (``enclave.audit.export``):
1. build: records/s through ``build_record`` + INSERT (reported, not a target);
2. verify from the store: ``verify_store`` (``SqliteStore.audit_iter`` pages + ``ChainVerifier``);
3. export: ``stream_jsonl`` (verifies while streaming, signs the head with a fresh Ed25519
   ``HeadSigner``) written to a file;
4. verify the export offline: ``verify_export`` over the file's lines (chain and trailer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import log, markdown_table, parser, results_path, write_section
from enclave.audit.chain import VerifyResult, build_record
from enclave.audit.export import stream_jsonl, verify_export, verify_store
from enclave.audit.record import GENESIS_HASH, AuditDraft
from enclave.audit.rows import record_values
from enclave.audit.signing import HeadSigner
from enclave.models import iso
from enclave.store.chain import AUDIT_COLUMNS
from enclave.store.driver import marks
from enclave.store.sqlite import SqliteStore

BATCH = 50_000
SQL = (
    "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits WHERE age >= {a} "
    "GROUP BY region"
)


def build(path: Path, n: int) -> float:
    """Create the store file and write ``n`` chained records; return seconds."""
    path.unlink(missing_ok=True)
    for extra in ("-wal", "-shm"):
        Path(str(path) + extra).unlink(missing_ok=True)

    async def create() -> None:
        store = SqliteStore(str(path))
        await store.open()
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    start_ts = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    started = time.perf_counter()
    prev = GENESIS_HASH
    insert = f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({marks(20)})"  # noqa: S608 - fixed column list
    seq = 0
    while seq < n:
        rows = []
        for _ in range(min(BATCH, n - seq)):
            seq += 1
            draft = AuditDraft(
                action="query",
                outcome="ok",
                actor=f"user{seq % 50}",
                roles=("researcher",),
                request_id=f"req_{seq:012d}",
                licence_id=f"lic_{seq % 50}",
                tier="standard",
                dataset="visits",
                sql=SQL.format(a=seq % 90),
                epsilon=0.5 + (seq % 7) / 10,
                delta=0.0,
                cached=seq % 5 == 0,
                client="bench/1.0",
                result_sha256=f"{seq:064x}",
            )
            ts = iso(start_ts + dt.timedelta(milliseconds=seq))
            record = build_record(draft, seq, ts, prev)
            prev = record.hash
            rows.append(record_values(record))
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


async def verify_in_store(path: Path) -> VerifyResult:
    store = SqliteStore(str(path))
    await store.open()
    try:
        result, _ = await verify_store(store)
    finally:
        await store.close()
    return result


async def export(path: Path, out: Path) -> None:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    store = SqliteStore(str(path))
    await store.open()
    try:
        with out.open("wb") as f:
            async for chunk in stream_jsonl(store, None, lambda n, h: signer.sign(n, h)):
                f.write(chunk)
    finally:
        await store.close()


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--records", type=int, default=None)
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the file exists")
    args = p.parse_args()
    n = args.records or (2_000 if args.smoke else 1_000_000)
    work = Path(args.out) / "audit"
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"audit-{n}.db"
    rows: list[list[Any]] = []
    existing = 0
    if db.exists() and not args.rebuild:
        with sqlite3.connect(db) as conn:
            existing = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]
    if existing != n:
        log(f"building a chain of {n:,} records in {db} ...")
        seconds = build(db, n)
        rows.append(["build (build_record + INSERT)", n, seconds, n / seconds])
    log("verifying from the store ...")
    started = time.perf_counter()
    result = asyncio.run(verify_in_store(db))
    seconds = time.perf_counter() - started
    if not result.valid or result.count != n:
        raise SystemExit(f"chain did not verify: {result}")
    rows.append(["verify from the store (verify_store)", n, seconds, n / seconds])
    log("exporting ...")
    jsonl = work / f"export-{n}.jsonl"
    started = time.perf_counter()
    asyncio.run(export(db, jsonl))
    seconds = time.perf_counter() - started
    rows.append(["export JSONL, signed trailer (stream_jsonl)", n, seconds, n / seconds])
    log("verifying the export ...")
    started = time.perf_counter()
    with jsonl.open(encoding="utf-8") as f:
        verdict = verify_export(f)
    seconds = time.perf_counter() - started
    if verdict.problems or verdict.result.count != n:
        raise SystemExit(f"export did not verify: {verdict}")
    rows.append(["verify the export offline (verify_export)", n, seconds, n / seconds])
    table = markdown_table(["step", "records", "seconds", "records/s"], rows)
    print(table, flush=True)
    size_mb = db.stat().st_size / 2**20
    body = (
        f"`.venv/bin/python -m bench.audit` — a chain of {n:,} query-like records in a real "
        f"SQLite store file ({size_mb:.0f} MiB), written with the store's own `build_record` "
        "(chain hash) and INSERT, 50,000 per transaction (not through `append`, which fsyncs "
        "per record). Verify and export use `enclave.audit.export` (`verify_store`, "
        "`stream_jsonl`, `verify_export`), as the auditor endpoints and CLI do.\n\n"
        f"{table}\n"
    )
    write_section(results_path(args), "audit", "Audit chain: verify and export", body)


if __name__ == "__main__":
    main()

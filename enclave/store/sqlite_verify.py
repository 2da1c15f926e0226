"""Verifying a SQLite store's audit chain on every core.

Reading 20 columns into Python objects costs about as much as hashing them, and both hold the
GIL, so one process tops out near 110,000 records/s. A chain of more than ``PARALLEL_MIN``
records in a database *file* is therefore cut into seq ranges of ``SEGMENT`` records, each
verified by a worker process over its own read-only connection (WAL lets any number of readers
work beside the gateway's writer), and the segments are joined in order
(``audit.rows.SegmentJoiner``).

Why this is safe: the ``audit`` table is append-only (triggers refuse UPDATE and DELETE), and
only seq ``1..n`` is read, ``n`` being the head when the verification started; so the ranges
read at slightly different moments still describe one prefix of the chain. Records appended
meanwhile are left for the next verification, as an export leaves them.

Why plain ``python -m enclave.store.sqlite_verify`` child processes rather than
``multiprocessing``: the gateway process runs threads (the store's worker, DuckDB's), and
forking a threaded process can copy a held lock into the child; ``spawn`` re-imports the
caller's ``__main__``, which breaks any script without a ``__name__`` guard. A child imports
only this module (~0.1 s), verifies its share of the ranges (round robin) in order, and prints
one JSON line per segment; the parent reads the lines in seq order and stops the children as
soon as the chain is known to break.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from enclave.audit.chain import VerifyResult
from enclave.audit.log import Progress
from enclave.audit.record import FIELDS
from enclave.audit.rows import Segment, SegmentJoiner, verify_segment

SEGMENT = 50_000
PARALLEL_MIN = 150_000
FETCH = 5_000  # rows per fetchmany
_SELECT = f"SELECT {', '.join(FIELDS)} FROM audit WHERE seq >= ? AND seq <= ? ORDER BY seq"  # noqa: S608


def iter_rows(conn: sqlite3.Connection, start: int, end: int) -> Iterator[tuple[Any, ...]]:
    """Raw rows (tuples in ``FIELDS`` order) with seq in ``[start, end]``, in order."""
    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute(_SELECT, (start, end))
    while rows := cursor.fetchmany(FETCH):
        yield from rows


def connect_readonly(path: str) -> sqlite3.Connection:
    return sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)


def ranges(n: int, size: int = SEGMENT) -> list[tuple[int, int]]:
    return [(a, min(a + size - 1, n)) for a in range(1, n + 1, size)]


def worker_count() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


async def verify_parallel(
    path: str,
    n: int,
    watch: int = -1,
    progress: Progress | None = None,
    every: int = 100_000,
    segment: int = SEGMENT,
) -> tuple[VerifyResult, str | None]:
    """Verify seq ``1..n`` of the SQLite file ``path`` with worker processes.

    Raises ``OSError`` if a worker fails (the caller reports the store as unavailable)."""
    todo = ranges(n, segment)
    count = min(worker_count(), len(todo))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    procs = []
    try:
        for i in range(count):
            share = [f"{a}:{b}" for a, b in todo[i::count]]
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", __name__, path, str(watch), *share,
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=env,
                )
            )  # fmt: skip
        joiner = SegmentJoiner(watch, progress, every)
        for k in range(len(todo)):
            stdout = procs[k % count].stdout
            line = await stdout.readline() if stdout is not None else b""
            if not line:
                raise OSError(
                    f"audit verification worker failed: {await _last_error(procs[k % count])}"
                )
            data = json.loads(line)
            data["bad"] = tuple(data["bad"]) if data["bad"] is not None else None
            if not joiner.add(Segment(**data)):
                break
        return joiner.result()
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()


async def _last_error(proc: asyncio.subprocess.Process) -> str:
    """The last line the worker wrote to stderr (for the chained exception and logs)."""
    if proc.stderr is None:
        return "no output"
    with contextlib.suppress(TimeoutError):
        err = await asyncio.wait_for(proc.stderr.read(65536), timeout=5)
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:300] if lines else "no output"
    return "no output"


def main(argv: list[str]) -> int:
    """Worker entry point: ``PATH WATCH START:END...``; one JSON ``Segment`` line each."""
    path, watch = argv[0], int(argv[1])
    conn = connect_readonly(path)
    try:
        for spec in argv[2:]:
            start, _, end = spec.partition(":")
            seg = verify_segment(iter_rows(conn, int(start), int(end)), int(start), int(end), watch)
            sys.stdout.write(json.dumps(dataclasses.asdict(seg)) + "\n")
            sys.stdout.flush()
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

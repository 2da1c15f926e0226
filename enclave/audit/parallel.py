"""Verifying a chain on every core: seq ranges verified by worker processes, joined in order.

Reading 20 columns into Python objects costs about as much as hashing them, and both hold the
GIL, so one process tops out near 110,000 records/s. A long chain is therefore cut into seq
ranges of ``SEGMENT`` records, each verified by a worker process over its own read-only
connection, and the segments are joined in order (``rows.SegmentJoiner``). A store whose
database several readers can open offers a worker module (``store/sqlite_verify.py``): its
``main`` is ``worker_main`` with a function that reads a range of raw rows.

Why plain ``python -m <worker module>`` child processes rather than ``multiprocessing``: the
gateway process runs threads (the store's worker, DuckDB's), and forking a threaded process
can copy a held lock into the child; ``spawn`` re-imports the caller's ``__main__``, which
breaks any script without a ``__name__`` guard. A child imports only its module (~0.1 s),
verifies its share of the ranges (round robin) in order, and prints one JSON line per segment;
the parent reads the lines in seq order and stops the children as soon as the chain is known
to break.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from enclave.audit.chain import VerifyResult
from enclave.audit.log import Progress
from enclave.audit.rows import Segment, SegmentJoiner, verify_segment

SEGMENT = 50_000
#: Reads the raw rows (``FIELDS`` order) with seq in ``[start, end]``, in order.
ReadRows = Callable[[int, int], Iterable[Sequence[Any]]]


def ranges(n: int, size: int = SEGMENT) -> list[tuple[int, int]]:
    return [(a, min(a + size - 1, n)) for a in range(1, n + 1, size)]


def worker_count() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


async def verify_in_workers(
    module: str,
    source: str,
    n: int,
    watch: int = -1,
    progress: Progress | None = None,
    every: int = 100_000,
    segment: int | None = None,
) -> tuple[VerifyResult, str | None]:
    """Verify seq ``1..n`` of ``source`` (what ``module``'s worker opens, e.g. a file path)
    with worker processes running ``python -m module``, ``segment`` (default ``SEGMENT``)
    records a range.

    Raises ``OSError`` if a worker fails (the caller reports the store as unavailable)."""
    todo = ranges(n, segment or SEGMENT)
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
                    sys.executable, "-m", module, source, str(watch), *share,
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


def worker_main(
    argv: list[str], open_source: Callable[[str], tuple[ReadRows, Callable[[], Any]]]
) -> int:
    """A worker: ``SOURCE WATCH START:END...``; one JSON ``Segment`` line per range.
    ``open_source(source)`` opens it and returns its row reader and a close function."""
    source, watch = argv[0], int(argv[1])
    read, close = open_source(source)
    try:
        for spec in argv[2:]:
            start, _, end = spec.partition(":")
            a, b = int(start), int(end)
            seg = verify_segment(read(a, b), a, b, watch)
            sys.stdout.write(json.dumps(dataclasses.asdict(seg)) + "\n")
            sys.stdout.flush()
    finally:
        close()
    return 0

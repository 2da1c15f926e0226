"""``copy_store``: move a deployment's state from one store to another (``enclave store copy``).

The usual move is an embedded SQLite deployment to PostgreSQL, before running replicas; the
reverse (a PostgreSQL backup into a SQLite file) works the same way. Everything is copied:
licences, revocations, every policy version, the ledger, the release cache, grants,
proposals, holds, the job queue and the audit chain, row for row and verbatim
(``store/bulk.py``): records keep their ``seq``, ``ts``, ``prev_hash`` and ``hash`` and are
never re-hashed, so an auditor's saved head still matches.

Rules, and why:
- the target must be empty (every table), checked inside the import transaction: merging two
  chains is impossible without re-hashing, and a half-filled target is a mistake to report;
- the source is read in one consistent snapshot, the target written in one transaction, so a
  failure leaves the target empty. Stop the gateways first anyway: writes made to the source
  after the snapshot would not be copied;
- afterwards the target's chain is verified from genesis (``Store.audit_verify``, on every
  core for a large SQLite file) and its head compared with the source's; the report carries
  the verdict (``ok`` is False on any difference).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.audit.chain import VerifyResult
from enclave.errors import ConfigError
from enclave.store import SQLITE_PREFIX, open_store
from enclave.store.base import Store
from enclave.store.bulk import TABLES

PROGRESS_EVERY = 10_000


@dataclass(frozen=True)
class CopyReport:
    counts: dict[str, int]  # rows copied, per table
    source_head: tuple[int, str]
    target_head: tuple[int, str]
    target_chain: VerifyResult
    source_chain: VerifyResult | None = None  # checked only when the target's fails

    @property
    def ok(self) -> bool:
        return (
            self.target_chain.valid
            and self.target_head == self.source_head
            and self.target_chain.count == self.counts.get("audit", 0)
        )

    def verdict(self) -> str:
        """One line for the operator."""
        seq, head = self.target_head
        if self.ok:
            return f"audit chain verified on the target: {seq} record(s), head {head}"
        if not self.target_chain.valid:
            where = f"first bad seq {self.target_chain.first_bad_seq}"
            line = f"audit chain INVALID on the target ({where}: {self.target_chain.reason})"
            if self.source_chain is not None and not self.source_chain.valid:
                line += f"; the source chain is invalid too (seq {self.source_chain.first_bad_seq})"
            return line
        return (
            f"audit chain on the target does not match the source: target head {seq}/{head},"
            f" source head {self.source_head[0]}/{self.source_head[1]}"
        )


def _open(url: str, role: str) -> Store:
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if role == "source" and not Path(path).is_file():
            raise ConfigError([f"--from: no SQLite database at {path}"])
    return open_store(url)


async def copy_store(
    source_url: str,
    target_url: str,
    *,
    progress: Callable[[str], Any] = lambda _line: None,
    every: int = PROGRESS_EVERY,
    batch: int = 5000,
) -> CopyReport:
    """Copy every table from ``source_url`` into the empty store at ``target_url``; verify.

    ``ConfigError`` for a bad URL or a missing source file; ``Conflict`` if the target holds
    anything; ``StoreUnavailable`` if either side fails (the target is then left empty).
    ``progress`` receives a line every ``every`` rows."""
    if source_url == target_url:
        raise ConfigError(["--from and --to name the same store"])
    source, target = _open(source_url, "source"), _open(target_url, "target")
    counts = {spec.name: 0 for spec in TABLES}
    async with AsyncExitStack() as stack:
        await source.open()
        stack.push_async_callback(source.close)
        await target.open()
        stack.push_async_callback(target.close)
        total, next_mark = 0, every
        async with source.export_snapshot() as reader, target.bulk_import() as writer:
            for spec in TABLES:
                async for rows in reader.rows(spec, batch):
                    await writer.write(spec, rows)
                    counts[spec.name] += len(rows)
                    total += len(rows)
                    while total >= next_mark:
                        progress(f"copied {total} records so far ({spec.name})")
                        next_mark += every
        progress(f"copied {total} records: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        source_head, target_head = await source.audit_head(), await target.audit_head()
        target_chain = (await target.audit_verify())[0]
        source_chain = None if target_chain.valid else (await source.audit_verify())[0]
    return CopyReport(counts, source_head, target_head, target_chain, source_chain)

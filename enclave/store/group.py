"""Group commit: the records that requests of one process append at the same time are written
by one transaction, with one fsync (SQLite) or one commit round (PostgreSQL).

The audit chain is one sequence, so its appends are serialized: by SQLite's write lock, or by
PostgreSQL's ``chain_head`` row lock, across every process and replica. With one transaction
per record, a second request waits for the first one's commit (an fsync, a network round
trip) before it can even read the head, and the chain's rate is one commit per record. Here,
requests that arrive while a batch is being committed queue up, and the next batch takes all
of them (up to ``max_batch``) into one transaction: ``chain.debit_batch`` checks their budgets in
arrival order, each against the spend of the ones before it, appends their records in that
order, and writes their charges and cached releases with one statement per table.

What each request sees is unchanged:

- its call returns only after the transaction holding its record has committed (durable:
  ``synchronous=FULL`` on SQLite, a synchronous commit on PostgreSQL);
- a refused charge (``BudgetExhausted``) is refused alone: the batch's other entries commit;
- if the transaction fails (the database is down, the disk is full), every entry in it gets
  the same error and nothing of the batch is committed, exactly as if each had failed alone.

The same queue serves the other writes every query makes: budget reservations
(``reserve.reserve_batch``) and rate-limit counts (``ops.count_hits``), each batch one
transaction of its own kind.

One request alone waits for nothing: an idle queue commits at once (no timer, no added
latency). A request cancelled while its entry waits in a batch does not take the entry
back: it may still commit, charging a release nobody receives (the safe direction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

E = TypeVar("E")
R = TypeVar("R")
#: the most entries one transaction takes (a bound on one statement's parameters)
MAX_BATCH = 128


class GroupCommit(Generic[E, R]):
    """Queue entries; one task commits them in batches through ``commit`` (one transaction
    returning one result per entry, in order)."""

    def __init__(
        self, commit: Callable[[Sequence[E]], Awaitable[Sequence[R]]], max_batch: int = MAX_BATCH
    ) -> None:
        self._commit = commit
        self._max = max_batch
        self._queue: list[tuple[E, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        #: how many batches, and entries in them, this process committed (for metrics/bench)
        self.batches = 0
        self.entries = 0
        #: called with each committed batch's size (``Store.observe_commits``)
        self.observe: Callable[[int], None] | None = None

    async def submit(self, entry: E) -> R:
        """Commit ``entry`` in the next batch; its result, or its batch's exception."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    async def drain(self) -> None:
        """Wait until every queued entry has been committed (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                await self._commit_one(batch)
        finally:
            self._task = None

    async def _commit_one(self, batch: list[tuple[E, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.entries += len(batch)
        try:
            results = await self._commit([entry for entry, _ in batch])
        except Exception as exc:  # every waiter gets the batch's failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is stopping): so are the waiters
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self.observe is not None:
            self.observe(len(batch))

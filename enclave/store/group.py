"""Group commit: what requests of one process write at the same time is committed by one
transaction, with one fsync (SQLite) or one commit round (PostgreSQL). ``docs/store-design.md``
("Group commit") says why and what it measured.

What each request sees is unchanged: its call returns only after the transaction holding its
entry has committed; a refusal computed for one entry (returned as its result) is its alone;
if the transaction fails, every entry of the batch gets that error and none is committed. An
idle queue commits at once (no timer). A request cancelled while its entry waits does not take
it back: it may still commit, charging a release nobody receives (the safe direction).
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

"""Group commit: writes that arrive together share one trip to the ORM thread.

Under daphne every ORM call runs on one worker thread, and each small write costs a
transaction (BEGIN, COMMIT, for SQLite a WAL append) plus the ORM's own per-statement
work. When fifty visitors send a message in the same few milliseconds, ``GroupCommit``
hands the thread all waiting writes at once: the batch function stores them in one
transaction, with one statement where the rows allow it. A lone write is not held back:
it goes at once, and only writes that arrive while a batch is being stored wait, for the
next one (as the embedding batcher does for queries). Reads that many replies need at
once (their conversation's history) batch the same way.

The batch function gets the items and returns one result per item, in order: a value, or
an exception that only that item's caller receives. An exception raised by the batch
function itself reaches every caller of that batch.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Queue(Generic[Item, Result]):
    waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    drainer: asyncio.Task[None] | None = None  # also keeps the task referenced while it runs


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        batch: Callable[[list[Item]], list[Result | BaseException]],
        *,
        max_batch: int = 100,
        retry_alone: tuple[type[Exception], ...] = (),
    ) -> None:
        """``retry_alone``: errors that may come from one bad item (e.g. an IntegrityError
        for a row whose conversation was deleted meanwhile): when a batch raises one, each
        of its items is stored again on its own, so only the bad one fails."""
        self.batch = batch
        self.max_batch = max_batch
        self.retry_alone = retry_alone
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue[Item, Result]] = (
            weakref.WeakKeyDictionary()
        )
        # Figures for benchmarks and tests: trips to the ORM thread and items stored.
        self.batches = 0
        self.items = 0

    async def __call__(self, item: Item) -> Result:
        """Store ``item`` with whatever else is waiting. A caller that is cancelled while
        waiting does not cancel the write: it may already be stored with the others."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        future: asyncio.Future[Result] = loop.create_future()
        queue.waiting.append((item, future))
        if queue.drainer is None:
            queue.drainer = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _Queue[Item, Result]) -> None:
        taken: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while queue.waiting:
                taken = queue.waiting[: self.max_batch]
                del queue.waiting[: self.max_batch]
                _deliver(taken, await self._store([item for item, _ in taken]))
                taken = []
        finally:
            queue.drainer = None
            for _, future in taken + queue.waiting:  # only when the loop itself is closing
                future.cancel()
            queue.waiting.clear()

    async def _store(self, items: list[Item]) -> list[Result | BaseException]:
        self.batches += 1
        self.items += len(items)
        return await sync_to_async(self._checked)(items)

    def _checked(self, items: list[Item]) -> list[Result | BaseException]:
        try:
            results = self.batch(items)
        except self.retry_alone as err:
            if len(items) > 1:
                return [self._checked([item])[0] for item in items]
            return [err]
        except Exception as err:
            return [err] * len(items)
        if len(results) != len(items):
            error = RuntimeError(f"{self.batch!r} returned {len(results)} results for {len(items)} items")
            return [error] * len(items)
        return results


def _deliver(taken: list[tuple[Item, asyncio.Future[Result]]], results: list[Result | BaseException]) -> None:
    for (_, future), result in zip(taken, results, strict=True):
        if future.done():  # its caller was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

"""Single-flight database reads for concurrent async callers: callers that arrive while a
read for the same bot is under way share it (the database thread is one thread), and the
read is a task of its own, so a caller that is cancelled (its visitor left) does not fail
the others waiting for it. Used for the entries' index (``knowledge.matching``) and the
passages' index (``knowledge.docs.retrieval``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from channels.db import database_sync_to_async

T = TypeVar("T")
Reads = dict[tuple[int, int], asyncio.Task[T]]  # (id of the event loop, bot id) -> the read


async def shared_read(
    reads: dict[tuple[int, int], asyncio.Task[T]], bot_id: int, read: Callable[[int], T]
) -> T:
    """``read(bot_id)`` on the database thread, shared through ``reads`` (a runtime part's)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), bot_id)
    task = reads.get(key)
    if task is not None and task.get_loop() is not loop:
        task = None  # left by a loop that closed mid-read, whose id this one reuses
    if task is None:
        task = reads[key] = asyncio.ensure_future(database_sync_to_async(read)(bot_id))
        task.add_done_callback(lambda done: _finished(reads, key, done))
    return await asyncio.shield(task)


def _finished(
    reads: dict[tuple[int, int], asyncio.Task[T]], key: tuple[int, int], task: asyncio.Task[T]
) -> None:
    if reads.get(key) is task:
        del reads[key]
    if not task.cancelled():
        task.exception()  # mark retrieved: no "never retrieved" warning if nobody waited

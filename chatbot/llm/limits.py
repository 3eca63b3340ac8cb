"""Per-provider concurrency limit and optional requests-per-minute limit.

Both are the runtime's (``Limits``). Semaphores belong to an event loop, so they are kept
per loop: one loop under daphne, but a script's ``asyncio.run`` or ``async_to_sync`` from
synchronous code makes its own. The minute budget is a token bucket shared by the loops.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from chatbot.llm.errors import APITimeoutError, RateLimitError
from chatbot.runtime import runtime


@dataclass
class MinuteBucket:
    rpm: int
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    tokens: float = -1.0
    updated: float = 0.0

    def wait_time(self) -> float:
        """Take one request from the bucket; return how long to wait for it first (0: go)."""
        now = self.clock()
        rate = self.rpm / 60.0
        if self.tokens < 0:
            self.tokens, self.updated = float(self.rpm), now
        self.tokens = min(float(self.rpm), self.tokens + (now - self.updated) * rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / rate


class Limits:
    """The runtime's concurrency slots and minute budgets, per provider endpoint (a runtime part)."""

    def __init__(self) -> None:
        # Weak: a loop that ended takes its semaphores with it.
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()
        self._buckets: dict[str, MinuteBucket] = {}

    def semaphore(self, key: str, size: int) -> asyncio.Semaphore:
        per_loop = self._semaphores.setdefault(asyncio.get_running_loop(), {})
        semaphore = per_loop.get(key)
        if semaphore is None:
            semaphore = per_loop[key] = asyncio.Semaphore(size)
        return semaphore

    def bucket(self, key: str, rpm: int) -> MinuteBucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rpm != rpm:
            bucket = self._buckets[key] = MinuteBucket(rpm)
        return bucket


@asynccontextmanager
async def provider_slot(
    key: str, *, provider: str, max_concurrent: int, rpm: int, max_wait: float, within: float
) -> AsyncIterator[None]:
    """Hold one of the provider's concurrent slots; wait at most ``max_wait`` for the minute budget."""
    limits = runtime().part(Limits)
    if rpm > 0:
        bucket = limits.bucket(key, rpm)
        wait = bucket.wait_time()
        if wait > min(max_wait, within):
            bucket.tokens += 1  # not taken after all
            raise RateLimitError(
                f"LLM_RPM={rpm} reached; next slot in {wait:.1f} s", provider=provider, retry_after=wait
            )
        if wait:
            await asyncio.sleep(wait)
    semaphore = limits.semaphore(key, max_concurrent)
    try:
        async with asyncio.timeout(within):
            await semaphore.acquire()
    except TimeoutError:
        raise APITimeoutError(
            f"all {max_concurrent} concurrent slots stayed busy (LLM_MAX_CONCURRENT)", provider=provider
        ) from None
    try:
        yield
    finally:
        semaphore.release()

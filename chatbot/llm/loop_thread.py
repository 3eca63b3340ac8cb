"""A private event loop on a thread of its own, for synchronous callers of async code.

Why not ``asyncio.run`` per call: each call would make a loop, and with it a new HTTP
session (``chatbot.llm.http`` keeps one per loop), so every call would open a new TLS
connection to the provider (a round trip or three before the first byte). One long-lived
loop keeps the connections warm. Why not ``async_to_sync``: from a worker thread it
schedules the coroutine on the main event loop, which would put the knowledge base's
encoding back on the loop the chat depends on, and wait for that loop to be free.

Any number of threads may call ``run`` at once; their coroutines run concurrently on the
private loop. It never waits for the caller's own loop, so a worker thread calling it while
the main loop runs cannot deadlock; calling it from a thread that is running a loop (async
code) would block that loop, and from the private loop itself would deadlock: both raise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from chatbot.llm import http

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the private loop and wait for its result (or its exception)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(f"{self.name}: synchronous call from async code; await the coroutine instead")
        future = asyncio.run_coroutine_threadsafe(coro, self._started())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self.name}: no result within {timeout:g} s") from None

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    def close(self) -> None:
        """Close the loop's HTTP session, stop the loop and its thread (tests, shutdown)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(http.close_shared_client(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

"""Indexing off the request path: the runtime's ``DocumentJobs`` runs ``source_process`` (and
the admin's sync) on one background thread, so an upload or a crawl never stalls a request.

One thread: indexing is CPU-bound (extraction, the embedding model) on a small machine, and
the visitors' questions need the other core. A source already waiting is not queued twice.

Sources left ``queued`` or ``running`` by a process that stopped are queued again by
``resume()``, called once at the server's start-up. When the runtime closes, the jobs still
waiting are dropped (their sources stay ``queued`` for the next start) and the one under way
stops at its next page or embedding batch (``Interrupted``): it goes back to ``queued``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from django.db import close_old_connections, connection

from chatbot.models import Bot
from chatbot.runtime import runtime
from knowledge.docs.services import Interrupted, source_process, source_sync
from knowledge.models import Source

log = logging.getLogger(__name__)


class DocumentJobs:
    """The runtime part that indexes documents on one background thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docs-jobs")
        self._lock = threading.Lock()
        self._waiting: dict[int | str, Future[None]] = {}  # source id, or "sync:<bot id>"
        self._futures: set[Future[None]] = set()
        self._stopping = threading.Event()
        self.resumed = False
        self.resuming: asyncio.Task[int] | None = None  # the start-up resume (chatbot.lifecycle)
        self.failures = 0  # jobs that raised (a bug: the source shows "Unexpected error")

    def submit(self, source_id: int) -> Future[None]:
        return self._submit(source_id, lambda: self._process(source_id))

    def submit_sync(self, bot_id: int) -> Future[None]:
        return self._submit(f"sync:{bot_id}", lambda: self._sync(bot_id))

    def resume(self) -> int:
        """Queue again the sources a stopped process left queued or running; how many. Only
        the first call does (cheap to call at every connection, like the keeper's serve)."""
        with self._lock:
            if self.resumed:
                return 0
            self.resumed = True
        left = Source.objects.filter(status__in=[Source.Status.QUEUED, Source.Status.RUNNING])
        ids = list(left.order_by("id").values_list("id", flat=True))
        for source_id in ids:
            self.submit(source_id)
        if ids:
            log.info("documents: %d sources left by a stopped process queued again", len(ids))
        return len(ids)

    def wait(self, timeout: float | None = None) -> bool:
        """Until every job submitted so far has ended (tests, commands). False on timeout."""
        with self._lock:
            futures = set(self._futures)
        _, pending = futures_wait(futures, timeout=timeout)
        return not pending

    def close(self) -> None:
        """Drop the waiting jobs and stop the running one at its next step (blocking)."""
        with self._lock:
            self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        # The runtime closes on the event loop: wait for a running job on another thread.
        with self._lock:
            busy = bool(self._futures)
        if not busy:
            self.close()  # nothing to wait for
            return
        try:
            await asyncio.to_thread(self.close)
        except RuntimeError:  # at interpreter exit (atexit) no new thread can start
            self.close()

    def _submit(self, key: int | str, job: Callable[[], None]) -> Future[None]:
        with self._lock:
            found = self._waiting.get(key)
            if found is not None and not found.running() and not found.done():
                return found
            if self._stopping.is_set():  # shutting down: the source stays queued for the next start
                future: Future[None] = Future()
                future.cancel()
                return future
            future = self._executor.submit(self._run, key, job)
            self._waiting[key] = future
            self._futures.add(future)
        # Outside the lock: a future already done runs its callback here and now.
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _run(self, key: int | str, job: Callable[[], None]) -> None:
        with self._lock:
            if self._waiting.get(key) is not None and self._waiting[key].running():
                del self._waiting[key]  # a new request for the key queues a new run
        close_old_connections()
        try:
            job()
        except Interrupted:
            log.info("documents: job %s left for the next process (shutting down)", key)
        except Source.DoesNotExist:
            pass  # removed while it waited
        except Exception:
            self.failures += 1
            log.exception("documents: job %s failed", key)
        finally:
            connection.close()

    def _check(self, done: int, total: int) -> None:
        if self._stopping.is_set():
            raise Interrupted

    def _process(self, source_id: int) -> None:
        source_process(source_id, progress=self._check)

    def _sync(self, bot_id: int) -> None:
        bot = Bot.objects.filter(pk=bot_id).first()
        if bot is not None:
            source_sync(bot=bot, progress=self._check)


def jobs() -> DocumentJobs:
    """The process's document jobs."""
    return runtime().part(DocumentJobs)


def enqueue(source_id: int) -> None:
    """Index the source on the background thread, soon."""
    jobs().submit(source_id)


def enqueue_sync(bot_id: int) -> None:
    """Sync the bot's URL sources on the background thread, soon."""
    jobs().submit_sync(bot_id)


def resume() -> int:
    """At the server's start-up: queue again what a stopped process left (see ``DocumentJobs``)."""
    return jobs().resume()

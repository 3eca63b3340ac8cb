"""Replies in flight, and what a crash leaves of them.

A reply is reserved as a ``pending`` row, owned by this server process
(``Keeper.owner``), together with the visitor's message. While it streams, the keeper
writes its text so far every REPLY_FLUSH_SECONDS: the texts of all this process's replies
that grew since the last tick go in one UPDATE (one per ``FLUSH_CHUNK`` replies), never
one write per delta. When the reply ends, the pipeline stores it as complete, partial or
failed as before; a tick that comes later changes nothing, as it only writes pending rows.

A process that dies (``kill -9``, out of memory, power) leaves its replies pending. Each
process renews its heartbeat row (``ProcessHeartbeat``) every PROCESS_HEARTBEAT_SECONDS
while it serves or has replies in flight, and writes one before it reserves a reply. The
reaper turns pending rows whose owner's heartbeat is older than PROCESS_DEAD_SECONDS (or
missing) into ``partial``, keeping the text written so far, and deletes those without
text. A serving process reaps when it starts and with every heartbeat; reaping is a
conditional DELETE and UPDATE in one transaction, so processes reaping at once do no harm
and a live process's replies are never touched. (Heartbeats use each host's clock: the
hosts of one installation must agree within a few seconds, as NTP keeps them.)

One ``Keeper`` per process: a part of the runtime (``keeper()``). Its ticker is a task on
the event loop: for as long as the loop runs once ``serve()`` was called there
(``chatbot.lifecycle``), or else only while replies are in flight (``manage.py chat``,
tests). ``stop()`` settles this process's replies at shutdown; closing the runtime then
only ends the ticker.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Case, TextField, Value, When
from django.utils import timezone

from chatbot.models import Message, ProcessHeartbeat
from chatbot.runtime import runtime

log = logging.getLogger(__name__)

# Replies per UPDATE: three query parameters each keeps a statement within SQLite's 999.
FLUSH_CHUNK = 300


def reply_texts_store(texts: Mapping[int, str]) -> int:
    """Write the text so far of replies that are still pending (reply id -> text); rows
    already stored as ended, or reaped, are left alone. Returns how many rows changed."""
    items = list(texts.items())
    updated = 0
    with transaction.atomic():
        for start in range(0, len(items), FLUSH_CHUNK):
            chunk = dict(items[start : start + FLUSH_CHUNK])
            text = Case(*(When(pk=pk, then=Value(t)) for pk, t in chunk.items()), output_field=TextField())
            rows = Message.objects.filter(pk__in=chunk, status=Message.Status.PENDING)
            updated += rows.update(text=text)
    return updated


def heartbeat_store(owner: str, *, now: datetime | None = None) -> None:
    now = now or timezone.now()
    if not ProcessHeartbeat.objects.filter(owner=owner).update(beat_at=now):
        host = socket.gethostname()[:255]
        ProcessHeartbeat.objects.create(owner=owner, beat_at=now, started_at=now, host=host, pid=os.getpid())


def orphans_reap(*, now: datetime | None = None) -> tuple[int, int]:
    """Replies left pending by dead processes: those with text become ``partial``, empty
    ones are deleted, and the dead processes' heartbeats go. Returns (partial, deleted)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.PROCESS_DEAD_SECONDS)
    alive = ProcessHeartbeat.objects.filter(beat_at__gte=cutoff).values("owner")
    with transaction.atomic():
        orphans = Message.objects.filter(status=Message.Status.PENDING).exclude(owner__in=alive)
        _, deleted = orphans.filter(text="").delete()
        partial = orphans.update(status=Message.Status.PARTIAL)
        ProcessHeartbeat.objects.filter(beat_at__lt=cutoff).delete()
    emptied = deleted.get(Message._meta.label, 0)
    if partial or emptied:
        log.warning(
            "replies left by a stopped server process: %d kept as partial, %d empty removed", partial, emptied
        )
    return partial, emptied


@dataclass
class _Tracked:
    parts: list[str]  # the reply's deltas so far: the pipeline appends, the keeper reads
    written: int = 0  # how many of them the database has


class Keeper:
    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or uuid.uuid4().hex
        self._tracked: dict[int, _Tracked] = {}
        self._flights = 0  # replies of this process that may have a pending row
        self._task: asyncio.Task[None] | None = None
        self._serve_loop: asyncio.AbstractEventLoop | None = None
        self._reap_due = False
        self._beat_at = float("-inf")  # time.monotonic() when the last heartbeat was written
        # Figures for tests and benchmarks: UPDATE batches of reply texts, heartbeats written.
        self.flushes = 0
        self.beats = 0

    @asynccontextmanager
    async def flight(self) -> AsyncIterator[None]:
        """Around one reply, from reserving its row to storing its end: the heartbeat is
        fresh before the row exists and renewed until the reply is over."""
        self._flights += 1
        try:
            if time.monotonic() - self._beat_at >= settings.PROCESS_HEARTBEAT_SECONDS:
                await sync_to_async(self._beat)()
            self._ticker_start()
            yield
        finally:
            self._flights -= 1

    def track(self, reply_id: int, parts: list[str]) -> None:
        """Write ``"".join(parts)`` into the pending row ``reply_id`` at each tick while it grows."""
        self._tracked[reply_id] = _Tracked(parts)

    def untrack(self, reply_id: int) -> None:
        self._tracked.pop(reply_id, None)

    def serve(self) -> None:
        """Beat, and reap now and with every heartbeat, for as long as the running loop
        runs. Cheap to call again (every connection does)."""
        loop = asyncio.get_running_loop()
        if self._serve_loop is loop and self._running_on(loop):
            return
        self._serve_loop = loop
        self._reap_due = True
        self._ticker_start()

    async def stop(self) -> None:
        """Shutting down: the ticker stops, the latest texts are written, and this process's
        replies still pending are settled at once (its heartbeat is removed first)."""
        self._serve_loop = None
        if self._task is not None and self._running_on(asyncio.get_running_loop()):
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        texts = self._grown()
        await sync_to_async(self._settle)({reply_id: text for reply_id, (text, _) in texts.items()})

    async def aclose(self) -> None:
        """The runtime closes: the ticker ends (``stop`` has settled the replies, at shutdown)."""
        task, self._task, self._serve_loop = self._task, None, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        if loop is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif loop.is_running():
            loop.call_soon_threadsafe(task.cancel)
        # else its loop has stopped or closed, and the task with it

    def _settle(self, texts: dict[int, str]) -> None:
        if texts:
            reply_texts_store(texts)
        ProcessHeartbeat.objects.filter(owner=self.owner).delete()
        self._beat_at = float("-inf")
        orphans_reap()

    def _running_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._task is not None and not self._task.done() and self._task.get_loop() is loop

    def _ticker_start(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._running_on(loop):
            # A context of its own: not the request or consumer that happened to start it.
            self._task = loop.create_task(self._run(), name="inflight-keeper", context=contextvars.Context())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            serving = self._serve_loop is loop
            beat_due = time.monotonic() - self._beat_at >= settings.PROCESS_HEARTBEAT_SECONDS
            beat = beat_due and (serving or self._flights > 0)
            reap = serving and (beat_due or self._reap_due)
            texts = self._grown()
            if texts or beat or reap:
                try:
                    await sync_to_async(self._tick)({k: text for k, (text, _) in texts.items()}, beat, reap)
                except Exception:
                    log.exception("replies in flight: a tick failed (retried at the next one)")
                else:
                    for reply_id, (_, count) in texts.items():
                        if (tracked := self._tracked.get(reply_id)) is not None:
                            tracked.written = max(tracked.written, count)
            if not (self._flights or self._serve_loop is loop):
                return
            await asyncio.sleep(settings.REPLY_FLUSH_SECONDS)

    def _grown(self) -> dict[int, tuple[str, int]]:
        """Replies whose text grew since it was last written: (text so far, parts count)."""
        grown = {}
        for reply_id, tracked in self._tracked.items():
            count = len(tracked.parts)
            if count > tracked.written:
                grown[reply_id] = ("".join(tracked.parts[:count]), count)
        return grown

    def _tick(self, texts: dict[int, str], beat: bool, reap: bool) -> None:
        if texts:
            reply_texts_store(texts)
            self.flushes += 1
        if beat:
            self._beat()
        if reap:
            orphans_reap()
            self._reap_due = False

    def _beat(self) -> None:
        started = time.monotonic()
        heartbeat_store(self.owner)
        self._beat_at = started
        self.beats += 1


def keeper() -> Keeper:
    """This process's keeper (a part of its runtime)."""
    return runtime().part(Keeper)

"""Graceful shutdown: the process's open sockets, drained when it is told to stop.

The worker (``deploy/worker.py``) stops listening on SIGTERM, so the proxy sends new
connections to the other processes, then runs ``Drain.run``: from that moment ``/readyz``
answers 503 (``draining``) and a chat socket that still arrives is closed with
SERVICE_RESTART (1012). Every socket that was enlisted is asked to ``drain``: one with no
reply in progress closes with 1012 at once, one with a reply in progress closes just after
the reply's end. Past ``grace`` seconds the sockets still open are asked to stop now: their
replies are cut off (kept as partial, as when the visitor leaves mid-reply) and they close
with 1012. The widget reconnects at once, through the proxy to another process, and resyncs.

A socket enlists when it is admitted and is released when it has closed (or went away).
One ``Drain`` per process, a part of its runtime (``drain()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from chatbot import closecodes
from chatbot.runtime import runtime

log = logging.getLogger(__name__)

# Past the grace, how long the sockets asked to stop have to store their partial replies and close.
STOP_SECONDS = 5.0


class Drainable(Protocol):
    async def drain(self, *, now: bool) -> None:
        """Close with SERVICE_RESTART: once no reply is in progress (``now`` False: at once
        when idle, else right after the reply's end), or at once, cutting a reply off
        (``now`` True: past the grace). Then ``Drain.release`` this socket. Returns without
        waiting for a reply to end."""


@dataclass(frozen=True)
class Drained:
    """What a drain did: sockets open when it began, those still open past the grace (their
    replies cut off), those still open when it gave up waiting, and how long it took."""

    sockets: int
    stopped: int
    left: int
    seconds: float


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._members: dict[Drainable, None] = {}  # insertion-ordered set
        self._emptied: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None

    def enlist(self, member: Drainable) -> bool:
        """Admit a socket; False while draining (the caller closes it with SERVICE_RESTART)."""
        if self.draining:
            return False
        self._members[member] = None
        return True

    def release(self, member: Drainable) -> None:
        """The socket has closed, or went away. Cheap to call again."""
        self._members.pop(member, None)
        if not self._members and self._emptied is not None:
            self._emptied.set()

    def open_sockets(self) -> int:
        return len(self._members)

    def hurry(self) -> None:
        """Cut the grace short: the replies still running are stopped now (a second SIGTERM)."""
        if self._hurry is not None:
            self._hurry.set()

    async def run(self, *, grace: float) -> Drained:
        """Drain every socket (see the module's docstring); returns once all have closed, or
        ``STOP_SECONDS`` past the grace."""
        started = time.monotonic()
        self.draining = True
        self._emptied = asyncio.Event()
        self._hurry = asyncio.Event()
        members = list(self._members)
        if not members:
            self._emptied.set()
        await self._ask(members, now=False)
        stopped = 0
        if not await self._settled(grace):
            late = list(self._members)
            stopped = len(late)
            log.warning("shutdown: %d replies still running after %gs, stopped (partial)", stopped, grace)
            await self._ask(late, now=True)
            await self._until(self._emptied, STOP_SECONDS)
        return Drained(len(members), stopped, len(self._members), time.monotonic() - started)

    async def _ask(self, members: list[Drainable], *, now: bool) -> None:
        results = await asyncio.gather(*(m.drain(now=now) for m in members), return_exceptions=True)
        for member, result in zip(members, results, strict=True):
            if isinstance(result, BaseException):
                log.error("shutdown: a socket failed to close", exc_info=result)
                self.release(member)  # nothing more to wait for from it

    async def _settled(self, grace: float) -> bool:
        """True once every socket closed within ``grace``; False past it, or when hurried."""
        assert self._emptied is not None and self._hurry is not None
        emptied = asyncio.ensure_future(self._emptied.wait())
        hurried = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({emptied, hurried}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            emptied.cancel()
            hurried.cancel()
        return self._emptied.is_set()

    @staticmethod
    async def _until(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


def drain() -> Drain:
    """This process's drain (a part of its runtime)."""
    return runtime().part(Drain)


def enlist(member: Drainable) -> bool:
    """``Drain.enlist`` on this process's drain: False once the shutdown has begun."""
    return drain().enlist(member)


def release(member: Drainable) -> None:
    """``Drain.release``; nothing to do when the process has no drain (never enlisted)."""
    found = runtime().peek(Drain)
    if found is not None:
        found.release(member)


def draining() -> bool:
    """Whether this process is shutting down (no part made to answer)."""
    found = runtime().peek(Drain)
    return found is not None and found.draining


def refusal() -> int | None:
    """SERVICE_RESTART while this process is shutting down, else None."""
    return closecodes.SERVICE_RESTART if draining() else None

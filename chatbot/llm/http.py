"""The shared HTTP clients, per event loop (under daphne: per process), so connections are
pooled and kept alive between replies. Timeouts are set per request.

Normally that is one client. Under load it becomes a few: httpcore's pool does work
proportional to (waiting requests x connections) on every request and response, so one
pool holding 200 streaming connections spent more CPU than the streams themselves. Each
client therefore carries at most ``STREAMS_PER_CLIENT`` streams at a time; the next one
goes to the next client (bench/bench_llm_client.py measures the difference).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import certifi
import httpx

STREAMS_PER_CLIENT = 8
MAX_CLIENTS = 32


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: once per process, not per client.
    return ssl.create_default_context(cafile=certifi.where())


def _new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        # Our per-provider semaphore bounds concurrency; the pool only keeps connections warm.
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=STREAMS_PER_CLIENT * 2),
        headers={"User-Agent": "website-chatbot/0.1"},
        verify=_ssl_context(),
        follow_redirects=False,
    )


class _Clients:
    def __init__(self) -> None:
        self.clients: list[httpx.AsyncClient] = []
        self.busy: list[int] = []

    def pick(self) -> int:
        for index, busy in enumerate(self.busy):
            if busy < STREAMS_PER_CLIENT:
                return index
        if len(self.clients) < MAX_CLIENTS:
            self.clients.append(_new_client())
            self.busy.append(0)
            return len(self.clients) - 1
        return min(range(len(self.busy)), key=self.busy.__getitem__)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = weakref.WeakKeyDictionary()


@contextmanager
def leased_client() -> Iterator[httpx.AsyncClient]:
    """A shared client for one request and its streamed response."""
    loop = asyncio.get_running_loop()
    clients = _loops.get(loop)
    if clients is None:
        clients = _loops[loop] = _Clients()
    index = clients.pick()
    if clients.clients[index].is_closed:
        clients.clients[index] = _new_client()
    clients.busy[index] += 1
    try:
        yield clients.clients[index]
    finally:
        clients.busy[index] -= 1


def timeouts(*, connect: float, read: float) -> httpx.Timeout:
    # read: the longest gap between two chunks of a stream (and before the headers).
    return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)


async def close_shared_client() -> None:
    clients = _loops.pop(asyncio.get_running_loop(), None)
    if clients is not None:
        await asyncio.gather(*(client.aclose() for client in clients.clients))

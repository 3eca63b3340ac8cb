"""The shared HTTP session, so connections to the providers are pooled and kept alive
between replies. Timeouts are set per request. The only module that imports ``aiohttp``.

A session belongs to the event loop that made it, so the runtime's ``Sessions`` part keeps
one per loop: under daphne that is one loop, but the embedding client's private loop
(``chatbot.llm.loop_thread``) and a script's ``asyncio.run`` have their own.

aiohttp rather than httpx: its response parser is compiled. 200 concurrent streams of 40
deltas took 215 ms of client CPU through bare aiohttp against 624 ms through bare httpx
(25 clients; bench/bench_llm_client.py), and under a burst of replies the event loop is
the bottleneck: every delta passes through it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import certifi

from chatbot.runtime import runtime

USER_AGENT = "website-chatbot/0.1"
CLOSE_TIMEOUT = 5.0  # seconds to close a session on another thread's loop at shutdown

# Re-exported for chatbot.llm.stream, which maps them onto the LLM error tree.
ClientError = aiohttp.ClientError  # every transport failure: connection, broken body, timeouts
ClientResponse = aiohttp.ClientResponse
ClientSession = aiohttp.ClientSession
ConnectionTimeoutError = aiohttp.ConnectionTimeoutError  # no connection within sock_connect
SocketTimeoutError = aiohttp.SocketTimeoutError  # no data within sock_read


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: once per process, not per session
    # (nor per runtime: a context is configuration, never changed once made).
    return ssl.create_default_context(cafile=certifi.where())


class Sessions:
    """The runtime's HTTP sessions, one per event loop (a runtime part)."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def __len__(self) -> int:
        return len(self._by_loop)

    def get(self) -> aiohttp.ClientSession:
        """The running loop's session (made on first use)."""
        loop = asyncio.get_running_loop()
        session = self._by_loop.get(loop)
        if session is None or session.closed:
            for ended in [other for other in list(self._by_loop) if other.is_closed()]:
                _abandon(self._by_loop.pop(ended))  # tests, asyncio.run in scripts
            session = self._by_loop[loop] = aiohttp.ClientSession(
                # Our per-provider semaphore bounds concurrency; the pool only keeps connections warm.
                connector=aiohttp.TCPConnector(limit=0, ssl=_ssl_context()),
                headers={"User-Agent": USER_AGENT},
                trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment
            )
        return session

    async def close_running(self) -> None:
        """Close the running loop's session and its connections."""
        session = self._by_loop.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def aclose(self) -> None:
        """Close every loop's session, each on its own loop, or else quietly (a closed loop)."""
        running = asyncio.get_running_loop()
        while self._by_loop:
            loop, session = self._by_loop.popitem()
            try:
                if loop is running:
                    await session.close()
                elif loop.is_running():  # on another thread: the embedding client's loop
                    closing = asyncio.run_coroutine_threadsafe(session.close(), loop)
                    await asyncio.wait_for(asyncio.wrap_future(closing), CLOSE_TIMEOUT)
                elif not loop.is_closed():  # stopped (daphne stops its loop on SIGTERM)
                    _in_thread(loop.run_until_complete, session.close())
                else:
                    _abandon(session)
            except Exception:  # shutting down: at least not a logged "Unclosed" error
                _abandon(session)


def shared_session() -> aiohttp.ClientSession:
    """This event loop's session, from the process's runtime (made on first use)."""
    return runtime().part(Sessions).get()


def _abandon(session: aiohttp.ClientSession) -> None:
    """Mark a session whose event loop has closed as closed, so that neither it nor its
    connector is reported as unclosed when collected (nothing can be awaited any more)."""
    connector = session.connector
    session.detach()
    if connector is not None and not connector.closed:
        # With its own loop closed, closing only marks the connector closed: any loop will do.
        _in_thread(asyncio.run, connector.close())


def _in_thread(run: Callable[[Coroutine[Any, Any, None]], object], coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to its end on a thread of its own, since this thread may be running a loop.
    A plain thread: at exit (``chatbot.runtime`` closes the runtime then) no executor takes work."""
    closer = threading.Thread(target=run, args=(coro,), name="http-close")
    closer.start()
    closer.join()


def timeouts(*, connect: float, read: float) -> aiohttp.ClientTimeout:
    # read: the longest gap between two chunks of a stream (and before the headers).
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


async def close_shared_client() -> None:
    """Close this event loop's session and its connections (commands; a loop that ends)."""
    sessions = runtime().peek(Sessions)
    if sessions is not None:
        await sessions.close_running()

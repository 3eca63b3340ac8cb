"""The shared HTTP session, per event loop (under daphne: per process), so connections to
the providers are pooled and kept alive between replies. Timeouts are set per request.
The only module that imports ``aiohttp``.

aiohttp rather than httpx: its response parser is compiled. 200 concurrent streams of 40
deltas took 215 ms of client CPU through bare aiohttp against 624 ms through bare httpx
(25 clients; bench/bench_llm_client.py), and under a burst of replies the event loop is
the bottleneck: every delta passes through it.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import ssl
import threading

import aiohttp
import certifi

USER_AGENT = "website-chatbot/0.1"

# Re-exported for chatbot.llm.stream, which maps them onto the LLM error tree.
ClientError = aiohttp.ClientError  # every transport failure: connection, broken body, timeouts
ClientResponse = aiohttp.ClientResponse
ClientSession = aiohttp.ClientSession
ConnectionTimeoutError = aiohttp.ConnectionTimeoutError  # no connection within sock_connect
SocketTimeoutError = aiohttp.SocketTimeoutError  # no data within sock_read

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: once per process, not per session.
    return ssl.create_default_context(cafile=certifi.where())


def shared_session() -> aiohttp.ClientSession:
    """This event loop's session (made on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        _forget_closed_loops()
        session = _sessions[loop] = aiohttp.ClientSession(
            # Our per-provider semaphore bounds concurrency; the pool only keeps connections warm.
            connector=aiohttp.TCPConnector(limit=0, ssl=_ssl_context()),
            headers={"User-Agent": USER_AGENT},
            trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment
        )
    return session


def _forget_closed_loops() -> None:
    """Sessions of event loops that have ended (tests, ``asyncio.run`` in scripts)."""
    for loop in [loop for loop in _sessions if loop.is_closed()]:
        _abandon(_sessions.pop(loop))


def _abandon(session: aiohttp.ClientSession) -> None:
    """Mark a session whose event loop has closed as closed, so that neither it nor its
    connector is reported as unclosed when collected (nothing can be awaited any more)."""
    connector = session.connector
    session.detach()
    if connector is not None:
        # With its own loop closed, closing only marks the connector closed: any loop will
        # do, in a thread of its own since this thread may be running one.
        closer = threading.Thread(target=asyncio.run, args=(connector.close(),), name="http-close")
        closer.start()
        closer.join()


def timeouts(*, connect: float, read: float) -> aiohttp.ClientTimeout:
    # read: the longest gap between two chunks of a stream (and before the headers).
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


@atexit.register
def _close_at_exit() -> None:
    """A server process ends by stopping its event loop (daphne: on SIGTERM); close the
    sessions then, or asyncio logs each one as "Unclosed client session"."""
    for loop, session in list(_sessions.items()):
        del _sessions[loop]
        if not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(session.close())
                continue
            except Exception:  # exiting anyway: at least not a logged error
                pass
        _abandon(session)


async def close_shared_client() -> None:
    """Close this event loop's session and its connections (commands, tests)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()

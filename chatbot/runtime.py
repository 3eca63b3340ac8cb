"""The process's runtime: the one object that owns process-wide state.

Everything a server process keeps between requests (HTTP sessions to the providers, circuit
breakers, concurrency limits, provider tokens, reply locks, knowledge-base snapshots,
encoders and their batchers, group-commit queues, the replies in flight) is a *part* of the
runtime, reached as ``runtime().part(Kind)``: the runtime makes one ``Kind()`` on first use
and closes it when the runtime closes (``aclose()`` awaited, else ``close()`` called, in the
reverse order of creation). A module that needs state defines its part class next to the
code that uses it and keeps nothing at module level.

The ASGI application starts the runtime (``chatbot.lifecycle``: at lifespan start-up, or the
first connection under daphne, which sends no lifespan events) and closes it at shutdown.
Management commands and threads use the same accessor. Tests get a fresh runtime each
(``install`` a new one, ``aclose`` it after): no test reaches into a module's private state.

While a runtime closes it stays the process's runtime and its parts not yet closed stay
reachable (a part may need another to close: the embedding client's loop closes its HTTP
session), but no part is made any more: ``RuntimeClosed``. A part may ask for another in
its constructor; that one is made first and so closed after it.

This module imports nothing from the project, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import threading
from typing import Any, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")


class RuntimeClosed(RuntimeError):
    """A part was asked of a runtime that has been closed."""


class Runtime:
    def __init__(self) -> None:
        self._parts: dict[type, Any] = {}
        self._lock = threading.RLock()  # re-entrant: a part's constructor may ask for another
        self._closing = False
        self.closed = False

    def part(self, kind: type[T]) -> T:
        """The runtime's one instance of ``kind``, made with ``kind()`` on first use."""
        found = self._parts.get(kind)
        if found is not None:
            return cast(T, found)
        with self._lock:
            if self._closing:
                raise RuntimeClosed(f"the runtime is closed: no {kind.__name__}")
            found = self._parts.get(kind)
            if found is None:
                found = self._parts[kind] = kind()
        return cast(T, found)

    def adopt(self, part: T) -> T:
        """Make ``part``, made elsewhere, this runtime's part of its type (tests carry
        read-only loaded models from one runtime to the next). Closed with the others."""
        with self._lock:
            if self._closing:
                raise RuntimeClosed(f"the runtime is closed: no {type(part).__name__}")
            if type(part) in self._parts:
                raise ValueError(f"the runtime has a {type(part).__name__} already")
            self._parts[type(part)] = part
        return part

    def peek(self, kind: type[T]) -> T | None:
        """The part if it was made already, else None (without making it)."""
        return cast("T | None", self._parts.get(kind))

    def kinds(self) -> list[type]:
        return list(self._parts)

    async def aclose(self) -> None:
        """Close every part, the last made first; a part's failure is logged, not raised."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            parts = list(self._parts.items())[::-1]
        try:
            for kind, part in parts:
                try:
                    if callable(getattr(part, "aclose", None)):
                        await part.aclose()
                    elif callable(getattr(part, "close", None)):
                        result = part.close()
                        if inspect.isawaitable(result):
                            await result
                except Exception:
                    log.exception("closing %s failed", type(part).__name__)
                finally:
                    with self._lock:
                        del self._parts[kind]
        finally:
            with self._lock:
                self._parts.clear()
                self.closed = True

    def close(self) -> None:
        """``aclose`` from synchronous code (a management command, a test's teardown)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.aclose())
            return
        raise RuntimeError("close() called inside an event loop: await aclose() instead")


_current: Runtime | None = None
_current_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's runtime (made on first use: a command or a thread needs no start-up)."""
    global _current
    current = _current
    if current is None or current.closed:
        with _current_lock:
            if _current is None or _current.closed:
                _current = Runtime()
            current = _current
    return current


def install(new: Runtime | None) -> Runtime | None:
    """Make ``new`` the process's runtime (None: a new one on next use); returns the one it
    replaces (start-up; tests)."""
    global _current
    with _current_lock:
        previous, _current = _current, new
    return previous


@atexit.register
def _close_at_exit() -> None:
    """A server process may end without a lifespan shutdown (daphne stops its event loop on
    SIGTERM and sends none): close the runtime then, or asyncio logs each HTTP session still
    open as "Unclosed client session"."""
    current = _current
    if current is not None and not current.closed:
        try:
            current.close()
        except Exception:  # exiting anyway
            log.exception("closing the runtime at exit failed")

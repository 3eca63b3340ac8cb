"""The one place that reaches into autobahn (daphne's websocket implementation).

autobahn pretty-prints its whole protocol configuration for a debug log line on every new
websocket, whether or not debug logging is on: a fifth of the server's Python time while
100 visitors connected (py-spy, bench/bench_chat.py). ``install`` makes that text lazy: it
is built only if the line is actually written.

It also lets the server close a websocket with the codes the registry gives servers:
daphne hands every close code to autobahn's ``sendClose``, which takes only 1000 and
3000-4999 from an application and raises on anything else, so a close with 1012 (service
restart) or 1013 (try again later) left the socket open and the client saw 1006 later.
Those go out as autobahn's own close frame instead.
"""

from __future__ import annotations

import pprint
from typing import Any


class LazyPretty:
    """Formats like ``pprint.pformat(value)``, but only when turned into text."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return str(self)


def install() -> None:
    from autobahn.websocket import protocol
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(protocol, "pformat", None) is pprint.pformat:
        protocol.pformat = LazyPretty  # type: ignore[attr-defined]
    if WebSocketProtocol.serverClose is not _server_close:
        WebSocketProtocol.serverClose = _server_close  # type: ignore[method-assign]


def _server_close(self: Any, code: int | None = None) -> None:
    """daphne's ``serverClose``, for every code a server may send (1012 and 1013 included)."""
    code = 1000 if code is None else code
    if code == 1000 or 3000 <= code <= 4999:
        self.sendClose(code=code)
    else:
        self.sendCloseFrame(code=code)

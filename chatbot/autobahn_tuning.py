"""The one place that reaches into autobahn (daphne's websocket implementation).

autobahn pretty-prints its whole protocol configuration for a debug log line on every new
websocket, whether or not debug logging is on: a fifth of the server's Python time while
100 visitors connected (py-spy, bench/bench_chat.py). ``install`` makes that text lazy: it
is built only if the line is actually written.
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

    if getattr(protocol, "pformat", None) is pprint.pformat:
        protocol.pformat = LazyPretty  # type: ignore[attr-defined]

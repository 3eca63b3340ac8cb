"""Admission of new chat sockets: a burst of new visitors is shed with 1013, never dropped.

Setting up a chat socket (the bot looked up, then the hello: visitor, conversation, history,
the channel-layer group) runs on the process's one database thread, about 10 ms of work
each; a burst faster than that queues there. daphne gives a handshake a fixed window
(``websocket_connect_timeout``, autobahn's opening-handshake timeout: 5 s by default,
10 s under deploy/worker.py): a socket still queued then is aborted, which nginx answers
with 502 and a browser sees as 1006, with no close code and nothing in the server's log.
Measured through nginx with one worker (bench/bench_serve.py), with daphne's 5 s: 1,000
new sockets at 200 per second lost 118 of them that way.
(The other silent loss, a full listen backlog that nginx also answers with 502, is the
worker's: deploy/worker.py's listening socket.)

``ConnectAdmission`` counts the chat sockets this process is setting up, from the handshake
until the first frame the application sends (the welcome), its close, or the visitor's
disconnect. While ``limit`` are pending a new one is accepted and closed at once with
TRY_AGAIN_LATER (1013), without touching the database: the widget retries with backoff and
jitter, and nginx's other workers are not affected. Other sockets (the agent workspace) and
HTTP pass through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chatbot import closecodes

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

CHAT_PREFIX = "/ws/chat/"
# A socket that never says hello stops counting after this long, so that idle sockets
# cannot keep the process shedding everyone; twice daphne's handshake window.
SETUP_CEILING_SECONDS = 10.0
WARN_EVERY_SECONDS = 10.0  # sheds are logged at most this often, with their count


class SetUp:
    """One admitted chat socket's slot, given back once, by whichever comes first."""

    def __init__(self, admission: ConnectAdmission, ceiling: float) -> None:
        self.admission = admission
        self.finished = False
        admission.pending += 1
        self.timer = asyncio.get_running_loop().call_later(ceiling, self.done)

    def done(self) -> None:
        if not self.finished:
            self.finished = True
            self.admission.pending -= 1
            self.timer.cancel()

    def receive(self, receive: Receive) -> Receive:
        async def receiving() -> Message:
            message = await receive()
            if not self.finished and message["type"] == "websocket.disconnect":
                self.done()
            return message

        return receiving

    def send(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if not self.finished and message["type"] in ("websocket.send", "websocket.close"):
                self.done()
            await send(message)

        return sending


class ConnectAdmission:
    """ASGI middleware around the websocket router; ``limit`` 0 admits everything."""

    def __init__(
        self,
        app: App,
        *,
        limit: int,
        prefix: str = CHAT_PREFIX,
        ceiling: float = SETUP_CEILING_SECONDS,
    ) -> None:
        self.app = app
        self.limit = limit
        self.prefix = prefix
        self.ceiling = ceiling
        self.pending = 0  # chat sockets being set up now
        self.shed_total = 0
        self._unreported = 0
        self._reported_at = -WARN_EVERY_SECONDS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not scope["path"].startswith(self.prefix) or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        if self.pending >= self.limit:
            await self.shed(receive, send)
            return
        setup = SetUp(self, self.ceiling)
        try:
            await self.app(scope, setup.receive(receive), setup.send(send))
        finally:
            setup.done()

    async def shed(self, receive: Receive, send: Send) -> None:
        # Accept, then close: a browser sees the close code only on an accepted socket.
        message = await receive()
        if message["type"] != "websocket.connect":  # gone already
            return
        self.shed_total += 1
        self._report()
        await send({"type": "websocket.accept"})
        reason = closecodes.REASONS[closecodes.TRY_AGAIN_LATER]
        await send({"type": "websocket.close", "code": closecodes.TRY_AGAIN_LATER, "reason": reason})

    def _report(self) -> None:
        self._unreported += 1
        now = time.monotonic()
        if now - self._reported_at >= WARN_EVERY_SECONDS:
            log.warning(
                "chat connects: %d new socket(s) closed with 1013 (try again later): %d being set "
                "up, CHAT_CONNECTS_PENDING_MAX=%d",
                self._unreported,
                self.pending,
                self.limit,
            )
            self._unreported = 0
            self._reported_at = now

"""The server process's own work, tied to the ASGI application: the heartbeat, the text of
replies in flight and the reaper of replies a dead process left (``chatbot.inflight``).

Servers that speak the ASGI lifespan protocol (uvicorn, hypercorn) start it at start-up
and stop it at shutdown. daphne sends no lifespan events: there the first request or
websocket starts it, which after a crash is the widgets reconnecting.
"""

from __future__ import annotations

from typing import Any

from chatbot import inflight

Scope = dict[str, Any]


class ProcessLifecycle:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        inflight.keeper().serve()
        await self.app(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                inflight.keeper().serve()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await inflight.keeper().stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

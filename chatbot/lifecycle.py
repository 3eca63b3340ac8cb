"""The server process's own work, tied to the ASGI application: the process's runtime
(``chatbot.runtime``), and with it the heartbeat, the text of replies in flight and the
reaper of replies a dead process left (``chatbot.inflight``), and the documents a stopped
process left queued or half indexed (``knowledge.docs.jobs``), queued again in the background.

Servers that speak the ASGI lifespan protocol (uvicorn, hypercorn) start it at start-up
and, at shutdown, settle this process's replies and close the runtime. daphne sends no
lifespan events: there the first request or websocket starts it, which after a crash is
the widgets reconnecting. Run by ``deploy/worker.py`` (``make serve``, the systemd units),
daphne drains on SIGTERM (``chatbot.draining``) and then calls ``process_stop``; run by
plain ``daphne``, the runtime is closed when the process exits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async

from chatbot import inflight
from chatbot.runtime import Runtime, runtime
from knowledge.docs import jobs

log = logging.getLogger(__name__)

Scope = dict[str, Any]


class ProcessLifecycle:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        runtime().part(inflight.Keeper).serve()
        _documents_resume()
        await self.app(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        # The process's runtime: made now, or already by the model preload (chatbot.asgi).
        started = runtime()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                started.part(inflight.Keeper).serve()
                _documents_resume()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await process_stop(started)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def process_stop(started: Runtime) -> None:
    """At shutdown: this process's replies still pending are settled (``inflight.Keeper.stop``),
    then its runtime is closed."""
    try:
        await started.part(inflight.Keeper).stop()
    finally:
        await started.aclose()


def _documents_resume() -> None:
    """Once per process, without delaying the request: documents left by a stopped process."""
    documents = jobs.jobs()
    if documents.resumed or documents.resuming is not None:
        return
    task = asyncio.get_running_loop().create_task(sync_to_async(documents.resume)())
    documents.resuming = task

    def done(task: asyncio.Task[int]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("documents left by a stopped process: not queued again", exc_info=task.exception())
            documents.resuming = None  # the next connection tries again

    task.add_done_callback(done)

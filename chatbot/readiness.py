"""Is this process ready for traffic: the database answers, the channel layer carries a
message, the embedding model is loaded (``/readyz``). Each check fails with a reason rather
than raising; the cheap in-process part alone (``accepting_chats``) gates chat connections.

A process shutting down (``chatbot.draining``) is not ready from the moment it begins to
drain: ``/readyz`` answers 503 with the one check ``draining``, without asking the database.

Liveness (``/healthz``) checks nothing here: a liveness probe that failed while PostgreSQL
is down would get a healthy process restarted.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from chatbot import draining
from knowledge.embeddings import default_model_state, preload_under_way

# Per check. A probe's own timeout is usually 1 s or more; a database or Redis that takes
# longer than this to answer a trivial request is not one to send visitors to.
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def draining(self) -> bool:
        return "draining" in self.checks

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "draining" if self.draining else "not ready",
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def database_check() -> Check:
    try:
        await asyncio.wait_for(database_sync_to_async(_select_one)(), CHECK_TIMEOUT)
    except TimeoutError:
        return Check(False, f"no answer to SELECT 1 within {CHECK_TIMEOUT:g}s")
    except Exception as err:
        return Check(False, f"{type(err).__name__}: {err}")
    return Check(True, connection.vendor)


async def channel_layer_check() -> Check:
    """A message sent to a channel of this process's own comes back (in-memory or Redis)."""
    layer = get_channel_layer()
    if layer is None:
        return Check(False, "no channel layer configured")
    token = uuid.uuid4().hex
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            # The default prefix: channels-redis serves all of a process's channels of one prefix
            # with a single reader; with a prefix of its own this read waited behind a
            # websocket's reader (which holds the receive lock) and timed out while any
            # socket was open.
            name = await layer.new_channel()
            await layer.send(name, {"type": "readyz.ping", "token": token})
            message = await layer.receive(name)
    except TimeoutError:
        return Check(False, f"no round trip within {CHECK_TIMEOUT:g}s")
    except Exception as err:
        return Check(False, f"{type(err).__name__}: {err}")
    if message.get("token") != token:
        return Check(False, "the round trip returned another message")
    return Check(True, type(layer).__name__)


def embedding_check() -> Check:
    ok, detail = default_model_state()
    return Check(ok, detail)


async def readiness_report() -> Readiness:
    if draining.draining():
        return Readiness({"draining": Check(False, "shutting down: replies in progress are finishing")})
    database, layer = await asyncio.gather(database_check(), channel_layer_check())
    return Readiness({"database": database, "channel_layer": layer, "embedding_model": embedding_check()})


def accepting_chats() -> bool:
    """Whether a chat connection may be admitted now: not while the model is still loading
    at start-up (in process only: no round trip per connection). After a failed preload
    chats are admitted, as without a preload (the first query tries the load again), while
    ``/readyz`` reports the failure."""
    return not preload_under_way()

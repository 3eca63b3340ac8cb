"""Relay one reply from the pipeline (``chatbot.replying.reply_stream``) to the websocket.
While an agent has the conversation the bot stays silent: the visitor's message is
acknowledged and passed on to the agents instead (``to_agents``).

The connection that sent the message gets every frame directly, so the streaming path has
no channel-layer hop; the conversation's other connections (the visitor's other tabs) get
the same frames through the conversation's channel-layer group, with deltas merged so
that a streamed reply costs them a group message at most every ``OTHERS_DELTA_INTERVAL``
instead of one per token (each would be a Redis round trip). Replies of one
conversation run one at a time in this process (``conversation_lock``): a second tab's
message waits for the first reply to end instead of interleaving with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from channels.db import aclose_old_connections, database_sync_to_async
from django.utils import timezone

from chatbot.chat import frames
from chatbot.handoff import visitor_message_store
from chatbot.models import Conversation, Message
from chatbot.replying import (
    NO_LLM,
    ReplyDelta,
    ReplyDuplicate,
    ReplyEnd,
    ReplyEvent,
    ReplyStart,
    reply_stream,
)
from chatbot.services import DuplicateMessage

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

OTHERS_DELTA_INTERVAL = 0.1  # seconds between merged deltas sent to the visitor's other tabs

_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()


def conversation_lock(conversation_id: int) -> asyncio.Lock:
    # Weak values: a lock lives only while a reply holds it or waits for it.
    lock = _locks.get(conversation_id)
    if lock is None:
        lock = _locks[conversation_id] = asyncio.Lock()
    return lock


async def _nobody(item: dict[str, Any]) -> None:
    pass


@dataclass
class _Reply:
    client_id: str | None
    to_self: Send
    to_others: Send
    to_agents: Send = _nobody
    visitor_message_id: int | None = None
    reply_id: int | None = None
    source: str = ""
    parts: list[str] = field(default_factory=list)
    unsent: int = 0  # how many of ``parts`` the other tabs have not had yet
    others_sent_at: float = 0.0

    async def both(self, frame: dict[str, Any]) -> None:
        await self.to_self(frame)
        await self.to_others(frame)

    async def delta(self, text: str) -> None:
        self.parts.append(text)
        self.unsent += 1
        await self.to_self({"type": "reply.delta", "id": self.reply_id, "text": text})
        if time.monotonic() - self.others_sent_at >= OTHERS_DELTA_INTERVAL:
            await self.others_flush()

    async def others_flush(self) -> None:
        if self.unsent:
            text = "".join(self.parts[-self.unsent :])
            self.unsent = 0
            self.others_sent_at = time.monotonic()
            await self.to_others({"type": "reply.delta", "id": self.reply_id, "text": text})


async def reply_relay(
    *,
    conversation_id: int,
    text: str,
    client_id: str | None,
    to_self: Send,
    to_others: Send,
    to_agents: Send = _nobody,
) -> None:
    """Store and answer one visitor message, sending ``ack``, ``reply.start``,
    ``reply.delta``s and ``reply.end`` (and an ``error`` when the LLM failed). While an
    agent has the conversation: only the ``ack``, and the message (a history item) goes
    ``to_agents``. A message sent again (its ``client_id`` is stored): only the original's
    ``ack``."""
    reply = _Reply(client_id, to_self, to_others, to_agents)
    try:
        stream = reply_stream(conversation_id=conversation_id, text=text, client_id=client_id)
        async with conversation_lock(conversation_id), aclosing(stream) as events:
            async for event in events:
                await _relay(reply, event, text)
    except asyncio.CancelledError:
        # The sender left mid-reply: what was said is kept (as partial), and the other tabs
        # must not wait for an end that would never come.
        if reply.source:
            status = Message.Status.PARTIAL if reply.source == Message.Source.LLM else Message.Status.COMPLETE
            await reply.others_flush()
            await to_others(_end(reply, "".join(reply.parts), status))
        raise
    except Conversation.DoesNotExist:
        raise  # erased while the socket was open: the consumer closes it (closecodes.ERASED)
    except Exception:
        log.exception("reply failed in conversation %s", conversation_id)
        if reply.source:
            await reply.both(_end(reply, "".join(reply.parts), Message.Status.FAILED))
        await to_self(frames.error(frames.SERVER_ERROR, "Something went wrong on our side.", client_id))
    finally:
        await aclose_old_connections()  # the pipeline's database connection, released per reply


async def _relay(reply: _Reply, event: ReplyEvent, text: str) -> None:
    if isinstance(event, ReplyDuplicate):
        await reply.to_self(_ack_again(reply.client_id, event.visitor_message_id))
    elif isinstance(event, ReplyStart):
        reply.reply_id = event.reply_id
        reply.visitor_message_id = event.visitor_message_id
        await reply.to_self({"type": "ack", "client_id": reply.client_id, "id": event.visitor_message_id})
        await reply.to_others({"type": "message", **_visitor_item(event.visitor_message_id, text)})
    elif isinstance(event, ReplyEnd) and event.message_id is None and reply.visitor_message_id is not None:
        await reply.to_agents(_visitor_item(reply.visitor_message_id, text))
    elif isinstance(event, ReplyDelta):
        if not reply.source:
            await _start(reply, event.source or Message.Source.LLM)
        await reply.delta(event.text)
    elif isinstance(event, ReplyEnd) and event.message_id is not None:  # None: an agent has it
        if not reply.source:  # an end without deltas: still one reply.start and one delta
            await _start(reply, event.source)
            if event.text:
                await reply.both({"type": "reply.delta", "id": reply.reply_id, "text": event.text})
        if reply.reply_id is None:
            reply.reply_id = event.message_id
        await reply.others_flush()
        await reply.both(_end(reply, event.text, event.status, event))
        problem = _llm_problem(event)
        if problem:
            await reply.to_self(frames.error(frames.LLM_UNAVAILABLE, problem, reply.client_id))


async def _start(reply: _Reply, source: str) -> None:
    reply.source = source
    await reply.both({"type": "reply.start", "id": reply.reply_id, "source": source})


def _end(reply: _Reply, text: str, status: str, event: ReplyEnd | None = None) -> dict[str, Any]:
    return {
        "type": "reply.end",
        "id": reply.reply_id,
        "text": text,
        "source": event.source if event else reply.source,
        "status": status,
        "entry_id": event.entry_id if event else None,
        "score": event.score if event else None,
    }


def _llm_problem(end: ReplyEnd) -> str:
    """Why the visitor should know the model failed ("" when it didn't)."""
    if end.status == Message.Status.PARTIAL:
        return "The assistant's answer was cut off."
    if end.source == Message.Source.FALLBACK and end.error and end.error != NO_LLM:
        return "The assistant is unavailable right now."
    return ""


async def visitor_message_relay(
    *, conversation_id: int, text: str, client_id: str | None, to_self: Send, to_others: Send, to_agents: Send
) -> str | None:
    """Store a visitor message the bot is not to answer (it asks for a person), send its
    ``ack`` and pass it to the other tabs (and to the agents, when one has the
    conversation). Returns the conversation's status; None for a message sent again (its
    ``client_id`` is stored), which gets the original's ``ack`` and nothing else."""
    try:
        async with conversation_lock(conversation_id):
            message, status = await database_sync_to_async(visitor_message_store)(
                conversation_id=conversation_id, text=text, client_id=client_id
            )
    except DuplicateMessage as duplicate:
        await to_self(_ack_again(client_id, duplicate.original.pk))
        return None
    await to_self({"type": "ack", "client_id": client_id, "id": message.pk})
    item = frames.message_item(message)
    await to_others({"type": "message", **item})
    if status == Conversation.Status.WITH_AGENT:
        await to_agents(item)
    return status


def _ack_again(client_id: str | None, message_id: int) -> dict[str, Any]:
    """The ack of a message that was stored before: no reply follows it."""
    return {"type": "ack", "client_id": client_id, "id": message_id, "duplicate": True}


def _visitor_item(message_id: int, text: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "role": Message.Role.VISITOR,
        "text": text,
        "source": "",
        "status": Message.Status.COMPLETE,
        "created": timezone.now().isoformat(),
    }

"""Relay one visitor message and the bot's reply (the events of ``chatbot.reply_events``) to
every connection concerned (docs/chat-protocol.md).

``reply_frames`` turns one event into frames: for the connection that sent the message, for
the visitor's other tabs, and the visitor's message for the agents who have the
conversation. ``relay`` runs a pipeline's stream through it: it yields each event with the
frames of the connection that sent the message (the consumer sends those itself, so the
streaming path has no channel-layer hop) and fans the rest out. The other tabs get a reply's
deltas merged, at most one group message every ``OTHERS_DELTA_INTERVAL`` instead of one per
token (each would be a Redis round trip). Replies of one conversation run one at a time in
this process (``conversation_lock``): a second tab's message waits for the first reply to
end instead of interleaving with it.

A reply the relay can't finish still ends for the other tabs: abandoned (the sender left)
as it was kept, broken as ``failed`` (and the sender gets ``server_error``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import aclose_old_connections

from chatbot.channel_layer import ChannelLayerUnavailable
from chatbot.chat import events, frames
from chatbot.chat.tabs import Tabs
from chatbot.models import Conversation, Message
from chatbot.reply_events import (
    NO_LLM,
    NOT_KNOWN,
    Acked,
    AgentHasConversation,
    Delta,
    Ended,
    ReplyEvent,
    SourceLink,
    Started,
)
from chatbot.runtime import runtime

log = logging.getLogger(__name__)

Frame = dict[str, Any]

OTHERS_DELTA_INTERVAL = 0.1  # seconds between merged deltas sent to the visitor's other tabs


class ConversationLocks:
    """One lock per conversation with a reply running or waiting (a runtime part). Weak
    values: a lock lives only while a reply holds it or waits for it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, conversation_id: int) -> asyncio.Lock:
        found = self._locks.get(conversation_id)
        if found is None:
            found = self._locks[conversation_id] = asyncio.Lock()
        return found


def conversation_lock(conversation_id: int) -> asyncio.Lock:
    return runtime().part(ConversationLocks).lock(conversation_id)


@dataclass(frozen=True)
class Frames:
    own: list[Frame] = field(default_factory=list)  # to the connection that sent the message
    others: list[Frame] = field(default_factory=list)  # to the visitor's other tabs
    for_agents: list[Frame] = field(default_factory=list)  # visitor messages (history items)


def reply_frames(event: ReplyEvent, *, client_id: str | None) -> Frames:
    """The frames one event becomes; ``client_id`` is the one the visitor's message came with."""
    match event:
        case Acked():
            ack = {"type": "ack", "client_id": client_id, "id": event.message_id}
            if event.duplicate:  # stored before: the original's ack, and no reply follows
                return Frames(own=[{**ack, "duplicate": True}])
            item = visitor_item(event.message_id, event.text, event.created)
            return Frames(own=[ack], others=[{"type": "message", **item}])
        case AgentHasConversation():
            return Frames(for_agents=[visitor_item(event.message_id, event.text, event.created)])
        case Started():
            start = {"type": "reply.start", "id": event.reply_id, "source": event.source}
            return Frames(own=[start], others=[start])
        case Delta():
            delta = {"type": "reply.delta", "id": event.reply_id, "text": event.text}
            return Frames(own=[delta], others=[delta])
        case Ended():
            end = reply_end(
                event.reply_id,
                event.text,
                event.source,
                event.status,
                event.entry_id,
                event.score,
                sources=event.sources,
            )
            problem = llm_problem(event)
            own = [end, frames.error(frames.LLM_UNAVAILABLE, problem, client_id)] if problem else [end]
            return Frames(own=own, others=[end])
    raise TypeError(f"not a reply event: {event!r}")


def reply_end(
    reply_id: int,
    text: str,
    source: str,
    status: str,
    entry_id: int | None = None,
    score: float | None = None,
    *,
    sources: tuple[SourceLink, ...] = (),
) -> Frame:
    """``sources``: the passages of the company's documents the reply drew on; always sent."""
    return {
        "type": "reply.end",
        "id": reply_id,
        "text": text,
        "source": source,
        "status": status,
        "entry_id": entry_id,
        "score": score,
        "sources": [source.as_dict() for source in sources],
    }


def llm_problem(end: Ended) -> str:
    """Why the visitor should know the model failed ("" when it didn't)."""
    if end.status == Message.Status.PARTIAL:
        return "The assistant's answer was cut off."
    # Not for a fallback chosen on purpose (no LLM at all; nothing known about the question).
    if end.source == Message.Source.FALLBACK and end.error and end.error not in (NO_LLM, NOT_KNOWN):
        return "The assistant is unavailable right now."
    return ""


def visitor_item(message_id: int, text: str, created: datetime) -> Frame:
    return {
        "id": message_id,
        "role": Message.Role.VISITOR,
        "text": text,
        "source": "",
        "status": Message.Status.COMPLETE,
        "created": created.isoformat(),
    }


@dataclass(frozen=True)
class Relayed:
    """One step of a relayed message: the frames for the connection that sent it, and the
    event they came from (None: the reply broke on our side, and the frames say so)."""

    frames: list[Frame]
    event: ReplyEvent | None


async def relay(
    stream: AsyncIterator[ReplyEvent], *, conversation_id: int, client_id: str | None, tabs: Tabs
) -> AsyncIterator[Relayed]:
    """Run ``stream`` (``reply_stream`` or ``handoff_message_stream``) of a message sent on
    the connection whose conversation's tabs are ``tabs``; see the module's docstring."""
    others = _OtherTabs(tabs)
    started: Started | None = None  # a reply begun and not ended
    texts: list[str] = []  # what the sender was given of it
    try:
        async with conversation_lock(conversation_id), aclosing(stream) as replies:
            async for event in replies:
                match event:
                    case Started():
                        started = event
                    case Delta():
                        texts.append(event.text)
                    case Ended():
                        started = None
                out = reply_frames(event, client_id=client_id)
                yield Relayed(out.own, event)
                await others.send(out.others)
                for item in out.for_agents:
                    await _to_agents(tabs, conversation_id, item)
    except (asyncio.CancelledError, GeneratorExit):
        # The sender left mid-reply: it was kept as far as it went (partial), and the other
        # tabs must not wait for an end that would never come.
        if started is not None:
            kept = Message.Status.PARTIAL if started.source == Message.Source.LLM else Message.Status.COMPLETE
            await others.send([cut_off(started, texts, kept)])
        raise
    except Conversation.DoesNotExist:
        raise  # erased while the socket was open: the consumer closes it (closecodes.ERASED)
    except Exception:
        log.exception("reply failed in conversation %s", conversation_id)
        own = [frames.error(frames.SERVER_ERROR, "Something went wrong on our side.", client_id)]
        if started is not None:
            end = cut_off(started, texts, Message.Status.FAILED)
            await others.send([end])
            own.insert(0, end)
        yield Relayed(own, None)
    finally:
        await aclose_old_connections()  # the pipeline's database connection, released per reply


async def _to_agents(tabs: Tabs, conversation_id: int, item: Frame) -> None:
    """The visitor's message, live to the agents who have the conversation: stored already,
    so Redis staying away past its limit costs them only the live copy (logged), never the
    visitor's reply."""
    try:
        await events.visitor_message(tabs.layer, conversation_id, item)
    except ChannelLayerUnavailable as err:
        log.warning(
            "conversation %s: message %s not relayed to the agents (%s)", conversation_id, item["id"], err
        )


def cut_off(started: Started, texts: list[str], status: str) -> Frame:
    """The ``reply.end`` of a reply that could not end: as far as it went."""
    return reply_end(started.reply_id, "".join(texts), started.source, status)


class _OtherTabs:
    """Frames for the visitor's other tabs, with a reply's deltas merged."""

    def __init__(self, tabs: Tabs) -> None:
        self.tabs = tabs
        self.reply_id: int | None = None
        self.unsent: list[str] = []  # deltas the other tabs have not had yet
        self.sent_at = 0.0

    async def send(self, out: list[Frame]) -> None:
        for frame in out:
            if frame["type"] != "reply.delta":
                await self._flush()
                await self.tabs.broadcast(frame)
                continue
            self.reply_id = frame["id"]
            self.unsent.append(frame["text"])
            if time.monotonic() - self.sent_at >= OTHERS_DELTA_INTERVAL:
                await self._flush()

    async def _flush(self) -> None:
        if self.unsent:
            text, self.unsent = "".join(self.unsent), []
            self.sent_at = time.monotonic()
            await self.tabs.broadcast({"type": "reply.delta", "id": self.reply_id, "text": text})

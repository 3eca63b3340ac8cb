"""The agent socket, ``ws://HOST/ws/agent/`` (docs/agent-socket.md): the live console's
connection. Signed in by the workspace's session cookie (``AuthMiddlewareStack`` on this
route only); anyone who is not an agent is closed with AGENT_FORBIDDEN. Nothing a visitor
holds (a visitor token) is ever read here.

Each frame is parsed (``agents.frames``), handed to one function of ``agents.live``, and
answered; the visitor and the other agents hear of it over the channel layer
(``chatbot.chat.events``), so the two sides may be on different server processes. What a
visitor does arrives as plain events (``visitor.message``, ``visitor.typing``) that this
side turns into its frames.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from agents import frames as agent_frames
from agents import live
from agents.frames import Act, AgentHello, Open, Reply
from chatbot import closecodes, draining
from chatbot.chat import access, events, frames
from chatbot.chat.frames import FrameError
from chatbot.db_outage import database_unreachable
from chatbot.replying import Matcher, kb_match
from knowledge import matching

log = logging.getLogger(__name__)

SUGGESTIONS = 3  # knowledge-base entries suggested for the visitor's latest question


class AgentConsumer(AsyncWebsocketConsumer):
    agent: Any = None  # the signed-in agent (a user); None: refused or closing
    ready = False  # after hello

    def __init__(self, *, matcher: Matcher = matching) -> None:
        super().__init__()
        self.matcher = matcher  # the knowledge base, for the suggestions

    async def connect(self) -> None:
        self.joined: set[str] = set()
        self.typing_throttle = events.Throttle()
        await self.accept()  # then close: a browser sees the close code only on an accepted socket
        headers = self.scope["headers"]
        origin = access.header(headers, b"origin")
        if not access.origin_allowed(origin=origin, host=access.header(headers, b"host"), allowed=()):
            # A page elsewhere must not drive a signed-in agent's browser (the cookie goes along).
            await self.refuse(closecodes.ORIGIN_NOT_ALLOWED)
            return
        self.agent = await database_sync_to_async(live.agent_connect)(user=self.scope.get("user"))
        if self.agent is None:
            await self.refuse(closecodes.AGENT_FORBIDDEN)
        elif not draining.enlist(self):  # this process is shutting down: the console reconnects
            await self.refuse(closecodes.SERVICE_RESTART)

    async def drain(self, *, now: bool) -> None:
        """The process is shutting down (``chatbot.draining``): closed at once, with 1012."""
        await self.refuse(closecodes.SERVICE_RESTART)
        draining.release(self)

    async def refuse(self, code: int) -> None:
        self.agent = None
        await self.close(code=code, reason=closecodes.REASONS[code])

    async def disconnect(self, code: int) -> None:
        self.agent = None
        draining.release(self)
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.agent is None:
            return
        if frames.frame_bytes(text_data, bytes_data) > settings.CHAT_MAX_FRAME_BYTES:
            await self.refuse(closecodes.FRAME_TOO_LARGE)
            return
        frame: agent_frames.AgentFrame | None = None
        try:
            if text_data is None:
                raise FrameError(frames.BAD_JSON, "Frames must be JSON text, not binary.")
            frame = agent_frames.agent_frame_parse(text_data, max_chars=settings.CHAT_MAX_MESSAGE_CHARS)
            if not self.ready and not isinstance(frame, agent_frames.BEFORE_HELLO):
                raise FrameError(frames.NOT_READY, "Send hello first.")
            await self.handle(frame)
        except FrameError as err:
            await self.send_frame(err.frame())
        except live.LiveError as err:
            conversation = getattr(frame, "conversation", None)
            await self.send_frame(
                frames.error(err.code, str(err), getattr(frame, "client_id", None), conversation=conversation)
            )
        except Exception as err:
            await self.failed(err, frame)

    async def failed(self, err: Exception, frame: agent_frames.AgentFrame | None) -> None:
        """After an unexpected exception: logged once, answered with ``server_error``; the
        connection stays usable (never a 1011 close). Never raises."""
        log.exception("agent socket of %s", getattr(self.agent, "pk", None), exc_info=err)
        error = frames.error(
            frames.SERVER_ERROR,
            "Something went wrong on our side.",
            getattr(frame, "client_id", None),
            conversation=getattr(frame, "conversation", None),
        )
        with contextlib.suppress(Exception):  # e.g. the socket went away meanwhile
            await self.send_frame(error)

    async def handle(self, frame: agent_frames.AgentFrame) -> None:
        if isinstance(frame, AgentHello):
            await self.hello()
        elif isinstance(frame, Open):
            await self.open(frame.conversation, after=frame.after)
        elif isinstance(frame, Reply):
            await self.message(frame)
        elif isinstance(frame, Act) and frame.kind == "take":
            await self.take(frame.conversation)
        elif isinstance(frame, Act) and frame.kind == "typing":
            await self.typing(frame.conversation)
        elif isinstance(frame, Act):
            await self.leave(frame.conversation, reason="bot" if frame.kind == "release" else "closed")
        else:
            await database_sync_to_async(live.presence_touch)(agent=self.agent)
            await self.send_frame({"type": "pong"})

    async def hello(self) -> None:
        bot_ids = await database_sync_to_async(live.agent_bot_ids)(agent=self.agent)
        for bot_id in bot_ids:  # joined before the lists are read: no change falls in between
            await self.join(events.agents_bot_group(bot_id))
        queue, mine = await database_sync_to_async(live.agent_lists)(agent=self.agent)
        for conversation in mine:  # their visitors' messages, whichever is on screen
            await self.join(events.agents_conversation_group(conversation.pk))
        self.ready = True
        welcome = agent_frames.lists_frame("welcome", queue, mine)
        await self.send_frame(
            {**welcome, "agent": {"id": self.agent.pk, "name": frames.display_name(self.agent)}}
        )

    async def open(self, conversation_id: int, *, after: int | None = None) -> None:
        group = events.agents_conversation_group(conversation_id)
        new = group not in self.joined
        await self.join(group)  # before reading: no message falls in between
        try:
            conversation, messages, question = await database_sync_to_async(live.agent_conversation)(
                agent=self.agent, conversation_id=conversation_id, after=after
            )
        except live.NotFound:
            if new:
                await self.leave_group(group)
            raise
        suggestions: list[Any] = []
        if question:
            result = await kb_match(conversation.bot, question, matcher=self.matcher)
            suggestions = list(result.candidates[:SUGGESTIONS]) if result is not None else []
        await self.send_frame(agent_frames.conversation_frame(conversation, messages, suggestions))

    async def take(self, conversation_id: int) -> None:
        change = await database_sync_to_async(live.conversation_take)(
            agent=self.agent, conversation_id=conversation_id
        )
        if change.notice is not None:
            await events.to_visitor(
                self.channel_layer,
                conversation_id,
                frames.agent_joined(change.agent, change.language, change.notice.pk),
            )
            await events.queue_changed(self.channel_layer, change.bot_id)
        await self.open(conversation_id)

    async def leave(self, conversation_id: int, *, reason: str) -> None:
        """``release`` (``reason`` bot: the bot answers again) or ``close``."""
        action = live.conversation_release if reason == "bot" else live.conversation_close
        change = await database_sync_to_async(action)(agent=self.agent, conversation_id=conversation_id)
        notice_id = change.notice.pk if change.notice is not None else None
        await events.to_visitor(
            self.channel_layer,
            conversation_id,
            frames.agent_left(change.agent, reason, change.language, notice_id),
        )
        await events.queue_changed(self.channel_layer, change.bot_id)

    async def message(self, reply: Reply) -> None:
        conversation_id = reply.conversation
        message = await database_sync_to_async(live.agent_message_store)(
            agent=self.agent, conversation_id=conversation_id, text=reply.text
        )
        await self.send_frame({"type": "ack", "client_id": reply.client_id, "id": message.pk})
        frame = frames.agent_message(message, frames.display_name(self.agent))
        await events.to_visitor(self.channel_layer, conversation_id, frame)
        await events.to_agents(
            self.channel_layer,
            conversation_id,
            {**frame, "conversation": conversation_id},
            sender=self.channel_name,
        )

    async def typing(self, conversation_id: int) -> None:
        if not self.typing_throttle.allow(conversation_id):
            return
        await database_sync_to_async(live.agent_assigned_check)(
            agent=self.agent, conversation_id=conversation_id
        )
        frame = {"type": "agent.typing", "agent": frames.display_name(self.agent)}
        await events.to_visitor(self.channel_layer, conversation_id, frame)

    async def join(self, group: str) -> None:
        if group not in self.joined:
            self.joined.add(group)
            await self.channel_layer.group_add(group, self.channel_name)

    async def leave_group(self, group: str) -> None:
        self.joined.discard(group)
        await self.channel_layer.group_discard(group, self.channel_name)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=frames.encode(frame))

    # --- Channel-layer events -------------------------------------------------------------

    async def agents_queue(self, event: dict[str, Any]) -> None:
        """Something changed in a queue this agent sees: their lists, recomputed."""
        if not self.ready or self.agent is None:
            return
        try:
            queue, mine = await database_sync_to_async(live.agent_lists)(agent=self.agent)
        except Exception as err:  # raised in a channel-layer handler it would end the socket (1011)
            if database_unreachable(err):  # the next change in the queue brings the lists again
                log.warning("agent %s: queue not updated, database unreachable (%s)", self.agent.pk, err)
            else:
                await self.failed(err, None)
            return
        for conversation in mine:
            await self.join(events.agents_conversation_group(conversation.pk))
        await self.send_frame(agent_frames.lists_frame("queue.update", queue, mine))

    async def agent_frame(self, event: dict[str, Any]) -> None:
        if self.ready and self.agent is not None and event["sender"] != self.channel_name:
            await self.send_frame(event["frame"])

    async def visitor_message(self, event: dict[str, Any]) -> None:
        if self.ready and self.agent is not None:
            await self.send_frame(agent_frames.visitor_message(event["conversation"], event["message"]))

    async def visitor_typing(self, event: dict[str, Any]) -> None:
        if self.ready and self.agent is not None:
            await self.send_frame(agent_frames.visitor_typing(event["conversation"]))

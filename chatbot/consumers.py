"""The chat websocket, ``ws://HOST/ws/chat/<bot public key>/`` (README "The chat protocol").

Each frame is parsed (``chatbot.chat.frames``), handed to one service, and answered.
Replies run on one worker task per connection: a message that arrives during a reply waits
in the connection's queue instead of interleaving with it. The ORM is only reached through
``database_sync_to_async`` and the reply pipeline's own thread hops.

Live handoff: a request for a person (the ``handoff`` frame, or a message that asks for
one) goes to ``chatbot.handoff``; the agents hear of it over the channel layer
(``chatbot.chat.events``), and what agents do reaches every tab through the group
``conversation.<id>``. A connection that asked times the wait (HANDOFF_WAIT_SECONDS).

Other tabs: each connection knows the other connections of its conversation (a tab says
``joined`` to the group after its first hello, those present answer it directly, a closing
tab says ``left``), so a visitor with one tab, the usual case, costs no channel-layer
message per reply frame. A tab of a crashed process is never "left": the others keep
sending to it, which is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from chatbot import closecodes, ratelimit
from chatbot.chat import access, agent_frames, events, frames
from chatbot.chat.frames import FrameError
from chatbot.chat.handoff_phrases import accepts_offer, asks_for_person
from chatbot.chat.relay import reply_relay, visitor_message_relay
from chatbot.handoff import (
    handoff_expire,
    handoff_request,
    handoff_state_current,
    visitor_contact_save,
    wait_remaining,
)
from chatbot.models import Bot, Conversation
from chatbot.selectors import HandoffState, conversation_exists, conversation_history, conversation_status
from chatbot.services import conversation_current, feedback_save, visitor_resume_or_create

log = logging.getLogger(__name__)


@dataclass
class Session:
    """Who this connection speaks for, fixed by its first ``hello``."""

    visitor_uid: uuid.UUID
    token: str
    conversation_id: int
    lang: str

    @property
    def group(self) -> str:
        return events.conversation_group(self.conversation_id)


@dataclass
class Welcome:
    session: Session
    frame: dict[str, Any]
    handoff: HandoffState
    expired: bool  # the conversation had waited for a person longer than the limit


def session_welcome(*, bot: Bot, hello: frames.Hello, user_agent: str, session: Session | None) -> Welcome:
    """The session (resumed or new visitor, current conversation) and its ``welcome`` frame.
    A repeated hello keeps the connection's visitor and conversation."""
    if session is None:
        visitor, token = visitor_resume_or_create(
            bot=bot, token=hello.visitor, language=hello.lang, page_url=hello.page, user_agent=user_agent
        )
        conversation = conversation_current(visitor=visitor)
        session = Session(visitor.uid, token, conversation.pk, hello.lang)
    elif hello.lang:
        session.lang = hello.lang
    state, expired = handoff_state_current(conversation_id=session.conversation_id)
    history = conversation_history(
        conversation_id=session.conversation_id, limit=settings.CHAT_HISTORY_MESSAGES, after=hello.after
    )
    frame = {
        "type": "welcome",
        "visitor": session.token,
        "conversation": session.conversation_id,
        "messages": [frames.message_item(m, client_id=True) for m in history],
        "greeting": bot.greeting,
        "name": bot.name,
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "status": state.status,
        "agent": state.agent,
    }
    return Welcome(session, frame, state, expired)


class ChatConsumer(AsyncWebsocketConsumer):
    bot: Bot | None = None
    session: Session | None = None
    worker: asyncio.Task[None] | None = None
    pending = 0  # messages accepted and not yet answered, the one being answered included
    wait_timer: asyncio.Task[None] | None = None
    wait_since: datetime | None = None  # the start of the wait the timer is for
    # The last reply on this connection was the fallback, which offers a person: a plain
    # "yes" / "好的" next takes the offer.
    person_offered = False

    async def connect(self) -> None:
        self.queue: asyncio.Queue[frames.Say] = asyncio.Queue()
        self.others: set[str] = set()  # channel names of the conversation's other tabs
        self.typing_throttle = events.Throttle()
        key = self.scope["url_route"]["kwargs"]["key"]
        bot, refusal = await database_sync_to_async(access.bot_admit)(key=key, headers=self.scope["headers"])
        # Accept, then close: a browser sees the close code only on an accepted socket.
        await self.accept()
        if refusal is not None:
            await self.close(code=refusal, reason=closecodes.REASONS[refusal])
            return
        self.bot = bot

    async def disconnect(self, code: int) -> None:
        self.bot = None
        if self.wait_timer is not None:
            self.wait_timer.cancel()
        if self.worker is not None:
            self.worker.cancel()  # a reply in progress keeps its text so far, marked partial
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        if self.session is not None:
            await self.channel_layer.group_discard(self.session.group, self.channel_name)
            await self.tab_say("left")

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch releases database connections before every handler, one
        # thread hop per frame. Here every database call already goes through
        # database_sync_to_async (which does that around the call) or the reply pipeline
        # (which releases after each reply), so frames go straight to their handler.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.bot is None:  # refused or closing
            return
        if frames.frame_bytes(text_data, bytes_data) > settings.CHAT_MAX_FRAME_BYTES:
            self.bot = None
            await self.close(
                code=closecodes.FRAME_TOO_LARGE, reason=closecodes.REASONS[closecodes.FRAME_TOO_LARGE]
            )
            return
        try:
            if text_data is None:
                raise FrameError(frames.BAD_JSON, "Frames must be JSON text, not binary.")
            frame = frames.frame_parse(text_data, max_chars=settings.CHAT_MAX_MESSAGE_CHARS)
            if self.session is None and not isinstance(frame, frames.BEFORE_HELLO):
                raise FrameError(frames.NOT_READY, "Send hello first.", getattr(frame, "client_id", None))
            await self.handle_safely(frame)
        except FrameError as err:
            await self.send_frame(err.frame())

    async def handle_safely(self, frame: frames.ClientFrame) -> None:
        """``handle``, where no failure closes the connection with 1011 (``failed``)."""
        try:
            await self.handle(frame)
        except FrameError:
            raise
        except Exception as err:
            await self.failed(err, getattr(frame, "client_id", None))

    async def failed(self, err: Exception, client_id: str | None) -> None:
        """After an unexpected exception: a conversation erased meanwhile (say at the visitor's
        request) closes the connection with ERASED; anything else is logged once and answered
        with ``server_error``, and the connection stays usable. Never raises."""
        if self.bot is None:  # closing already: nobody to answer
            return
        if await self.erased():
            self.bot = None
            with contextlib.suppress(Exception):
                await self.close(code=closecodes.ERASED, reason=closecodes.REASONS[closecodes.ERASED])
            return
        conversation_id = self.session.conversation_id if self.session is not None else None
        log.exception("chat socket of conversation %s", conversation_id, exc_info=err)
        with contextlib.suppress(Exception):  # e.g. the socket went away meanwhile
            await self.send_frame(
                frames.error(frames.SERVER_ERROR, "Something went wrong on our side.", client_id)
            )

    async def erased(self) -> bool:
        if self.session is None:
            return False
        try:
            exists = await database_sync_to_async(conversation_exists)(
                conversation_id=self.session.conversation_id
            )
        except Exception:  # the database itself is failing: the caller logs the first error
            return False
        return not exists

    async def handle(self, frame: frames.ClientFrame) -> None:
        if isinstance(frame, frames.Hello):
            await self.hello(frame)
        elif isinstance(frame, frames.Say):
            await self.say(frame)
        elif isinstance(frame, frames.Rate):
            await self.rate(frame)
        elif isinstance(frame, frames.Handoff):
            await self.handoff()
        elif isinstance(frame, frames.Contact):
            await self.contact(frame)
        elif isinstance(frame, frames.Typing):
            await self.typing()
        else:
            await self.send_frame({"type": "pong"})

    async def hello(self, hello: frames.Hello) -> None:
        assert self.bot is not None
        first = self.session is None
        welcome = await database_sync_to_async(session_welcome)(
            bot=self.bot,
            hello=hello,
            user_agent=access.header(self.scope["headers"], b"user-agent") or "",
            session=self.session,
        )
        self.session = welcome.session
        if first:
            await self.channel_layer.group_add(self.session.group, self.channel_name)
            await self.tab_say("joined")
        await self.send_frame(welcome.frame)
        if welcome.expired:
            await self.wait_ended(welcome.handoff.bot_id)
        elif welcome.handoff.status == Conversation.Status.WAITING_FOR_AGENT:
            self.wait_start(welcome.handoff.waiting_since, welcome.handoff.bot_id)

    async def say(self, say: frames.Say) -> None:
        if self.pending > settings.CHAT_QUEUE_MAX:
            raise FrameError(frames.BUSY, "Please wait for the answer before sending more.", say.client_id)
        wait = await ratelimit.atake(self.buckets())
        if wait > 0:
            await self.send_frame(
                frames.error(
                    frames.RATE_LIMITED,
                    "You are sending messages too quickly.",
                    say.client_id,
                    retry_after=ratelimit.retry_after_seconds(wait),
                )
            )
            return
        self.pending += 1
        self.queue.put_nowait(say)
        if self.worker is None:
            self.worker = asyncio.create_task(self.work())

    async def work(self) -> None:
        assert self.session is not None
        while True:
            say = await self.queue.get()
            try:
                await self.answer(say)
            except Exception as err:
                await self.failed(err, say.client_id)
            finally:
                self.pending -= 1

    async def rate(self, rate: frames.Rate) -> None:
        assert self.session is not None
        saved = await database_sync_to_async(feedback_save)(
            conversation_id=self.session.conversation_id,
            message_id=rate.reply_id,
            rating=rate.rating,
            comment=rate.comment,
        )
        if saved is None:
            raise FrameError(frames.NOT_FOUND, "There is no such reply in this conversation.")
        await self.send_frame({"type": "feedback.saved", "id": rate.reply_id})

    async def answer(self, say: frames.Say) -> None:
        """The bot's reply; or, when the message asks for a person, the handoff's answer."""
        assert self.session is not None
        relay = {
            "conversation_id": self.session.conversation_id,
            "text": say.text,
            "client_id": say.client_id,
            "to_self": self.send_reply_frame,
            "to_others": self.broadcast,
            "to_agents": self.to_agents,
        }
        offered, self.person_offered = self.person_offered, False
        if not (asks_for_person(say.text) or (offered and accepts_offer(say.text))):
            await reply_relay(**relay)
            return
        status = await visitor_message_relay(**relay)
        if status is not None and status != Conversation.Status.WITH_AGENT:  # None: sent again
            await self.handoff()

    async def handoff(self) -> None:
        assert self.session is not None
        state = await database_sync_to_async(handoff_request)(conversation_id=self.session.conversation_id)
        lang = self.session.lang
        if state.status == Conversation.Status.WITH_AGENT:
            await self.send_frame(frames.agent_joined(state.agent or "", lang))
            return
        if state.status == Conversation.Status.WAITING_FOR_AGENT:
            assert state.position is not None
            frame = frames.handoff_waiting(state.position, lang)
            if state.queued:
                await events.queue_changed(self.channel_layer, state.bot_id)
            self.wait_start(state.waiting_since, state.bot_id)
        else:
            frame = frames.handoff_unavailable(lang)
        await self.send_frame(frame)
        await self.broadcast(frame)

    def wait_start(self, since: datetime | None, bot_id: int) -> None:
        """Time the wait for a person that began at ``since`` (once per wait)."""
        if self.wait_timer is not None and not self.wait_timer.done():
            if self.wait_since == since:
                return
            self.wait_timer.cancel()
        self.wait_since = since
        self.wait_timer = asyncio.create_task(self.wait_expire(since, bot_id))

    async def wait_expire(self, since: datetime | None, bot_id: int) -> None:
        assert self.session is not None
        conversation_id = self.session.conversation_id
        try:
            await asyncio.sleep(wait_remaining(since))
            expired = await database_sync_to_async(handoff_expire)(
                conversation_id=conversation_id, waiting_since=since
            )
            if expired:
                await self.wait_ended(bot_id)
        except Exception:
            log.exception("handoff wait of conversation %s", conversation_id)

    async def wait_ended(self, bot_id: int) -> None:
        """No agent took the conversation in time: every tab is told, the agents' queues shrink."""
        assert self.session is not None
        frame = frames.handoff_unavailable(self.session.lang, timed_out=True)
        await events.to_visitor(self.channel_layer, self.session.conversation_id, frame)
        await events.queue_changed(self.channel_layer, bot_id)

    async def contact(self, contact: frames.Contact) -> None:
        assert self.session is not None
        try:
            bot_id = await database_sync_to_async(visitor_contact_save)(
                conversation_id=self.session.conversation_id, email=contact.email
            )
        except ValidationError:
            raise FrameError(frames.BAD_EMAIL, "That is not an email address.") from None
        await self.send_frame({"type": "contact.saved"})
        await events.queue_changed(self.channel_layer, bot_id)  # the queue shows the address

    async def typing(self) -> None:
        """Relayed to the agents only while one has the conversation; else ignored."""
        assert self.session is not None
        if not self.typing_throttle.allow():
            return
        conversation_id = self.session.conversation_id
        status = await database_sync_to_async(conversation_status)(conversation_id=conversation_id)
        if status == Conversation.Status.WITH_AGENT:
            await events.to_agents(
                self.channel_layer, conversation_id, agent_frames.visitor_typing(conversation_id)
            )

    def buckets(self) -> list[ratelimit.Bucket]:
        assert self.session is not None
        buckets = []
        if settings.CHAT_RATE_VISITOR:
            buckets.append(
                ratelimit.Bucket(f"visitor:{self.session.visitor_uid}", settings.CHAT_RATE_VISITOR)
            )
        client = self.scope.get("client")
        if settings.CHAT_RATE_IP and client and client[0]:
            buckets.append(ratelimit.Bucket(f"ip:{client[0]}", settings.CHAT_RATE_IP))
        return buckets

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=frames.encode(frame))

    async def send_reply_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "reply.end":
            self.person_offered = frame.get("source") == "fallback"
        await self.send_frame(frame)

    async def broadcast(self, frame: dict[str, Any]) -> None:
        """To the conversation's other connections (the visitor's other tabs), if any."""
        assert self.session is not None
        if not self.others:
            return
        await self.channel_layer.group_send(
            self.session.group, {"type": "chat.frame", "frame": frame, "sender": self.channel_name}
        )

    async def to_agents(self, item: dict[str, Any]) -> None:
        """A visitor message (history item) to the agents who have the conversation."""
        assert self.session is not None
        conversation_id = self.session.conversation_id
        await events.to_agents(
            self.channel_layer, conversation_id, agent_frames.visitor_message(conversation_id, item)
        )

    async def tab_say(self, event: str) -> None:
        assert self.session is not None
        await self.channel_layer.group_send(
            self.session.group, {"type": "chat.tab", "event": event, "sender": self.channel_name}
        )

    async def chat_tab(self, event: dict[str, Any]) -> None:
        """Another tab of the conversation joined, is present, or left."""
        sender = event["sender"]
        if sender == self.channel_name:
            return
        if event["event"] == "left":
            self.others.discard(sender)
            return
        self.others.add(sender)
        if event["event"] == "joined":
            reply = {"type": "chat.tab", "event": "present", "sender": self.channel_name}
            await self.channel_layer.send(sender, reply)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        if event["sender"] != self.channel_name and self.bot is not None:
            if event["frame"].get("type") == "agent.joined" and self.wait_timer is not None:
                self.wait_timer.cancel()  # the wait is over
            await self.send_frame(event["frame"])

"""The chat websocket, ``ws://HOST/ws/chat/<bot public key>/`` (docs/chat-protocol.md).

Each frame is parsed (``chatbot.chat.frames``), handed to one service, and answered. A
visitor's message goes to the reply pipeline (``chatbot.replying``), or, when it asks for a
person, is stored for the team (``handoff_message_stream``); ``chatbot.chat.relay`` turns
what the pipeline says into frames, sends the visitor's other tabs theirs and gives this
connection its own to send. Replies run on one worker task per connection: a message that
arrives during a reply waits in the connection's queue instead of interleaving with it. The
ORM is only reached through ``database_sync_to_async`` and the pipeline's own thread hops.

The connection's other parts: who it speaks for and its welcome (``chat.session``), the
visitor's other tabs (``chat.tabs``), the wait for a person it times (``chat.handoff_wait``),
its rate limits (``chat.access``). What agents do reaches every tab through the group
``conversation.<id>`` (``chat_frame``); what the visitor does reaches the agents as plain
channel-layer events (``chatbot.chat.events``).

When the process shuts down (``chatbot.draining``), an idle connection is closed with
SERVICE_RESTART (1012) at once and a busy one right after its reply's end; messages it
had queued meanwhile are dropped unacknowledged (the widget sends them again after it
reconnects). Past the grace the reply in progress is cut off, kept as partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import aclosing
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from chatbot import closecodes, draining, ratelimit
from chatbot.chat import access, events, frames
from chatbot.chat.frames import FrameError
from chatbot.chat.handoff_phrases import accepts_offer, asks_for_person
from chatbot.chat.handoff_wait import HandoffWait
from chatbot.chat.relay import relay
from chatbot.chat.session import Session, session_welcome
from chatbot.chat.tabs import Tabs
from chatbot.db_outage import database_unreachable
from chatbot.handoff import handoff_request, visitor_contact_save
from chatbot.models import Bot, Conversation
from chatbot.reply_events import Acked, Ended, ReplyEvent
from chatbot.replying import Matcher, handoff_message_stream, reply_stream
from chatbot.selectors import conversation_exists, conversation_status
from chatbot.services import feedback_save
from knowledge import matching

log = logging.getLogger(__name__)


class ChatConsumer(AsyncWebsocketConsumer):
    bot: Bot | None = None
    session: Session | None = None
    tabs: Tabs | None = None
    wait: HandoffWait | None = None
    worker: asyncio.Task[None] | None = None
    pending = 0  # messages accepted and not yet answered, the one being answered included
    # The last reply on this connection was the fallback, which offers a person: a plain
    # "yes" / "好的" next takes the offer.
    person_offered = False
    closing_for_restart = False

    def __init__(self, *, matcher: Matcher = matching) -> None:
        super().__init__()
        self.matcher = matcher  # the knowledge base, as the reply pipeline asks it

    async def connect(self) -> None:
        self.queue: asyncio.Queue[frames.Say] = asyncio.Queue()
        self.typing_throttle = events.Throttle()
        key = self.scope["url_route"]["kwargs"]["key"]
        refusal = draining.refusal() or access.process_refusal()
        bot = None
        if refusal is None:
            try:
                bot, refusal = await database_sync_to_async(access.bot_admit)(
                    key=key, headers=self.scope["headers"]
                )
            except Exception as err:
                if not database_unreachable(err):
                    raise
                # The database is away (a restart): a retryable close, not a failed handshake.
                log.warning("chat socket refused with 1013: database unreachable (%s)", err)
                refusal = closecodes.TRY_AGAIN_LATER
        # Accept, then close: a browser sees the close code only on an accepted socket.
        await self.accept()
        if refusal is None and not draining.enlist(self):  # the shutdown began meanwhile
            refusal = closecodes.SERVICE_RESTART
        if refusal is not None:
            await self.close(code=refusal, reason=closecodes.REASONS[refusal])
            return
        self.bot = bot

    async def disconnect(self, code: int) -> None:
        self.bot = None
        if self.wait is not None:
            self.wait.cancel()
        if self.worker is not None:
            self.worker.cancel()  # a reply in progress keeps its text so far, marked partial
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        if self.tabs is not None:
            await self.tabs.leave()
        draining.release(self)

    async def drain(self, *, now: bool) -> None:
        """The process is shutting down (``chatbot.draining.Drainable``)."""
        self.closing_for_restart = True
        if now and self.worker is not None and not self.worker.done():
            self.worker.cancel()  # the reply so far is kept, marked partial
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        if now or self.pending == 0:
            await self.close_for_restart()
        # else the worker closes the connection after the reply's end

    async def close_for_restart(self) -> None:
        if self.bot is not None:
            self.bot = None  # nothing more is read from this connection
            with contextlib.suppress(Exception):  # e.g. the socket went away meanwhile
                code = closecodes.SERVICE_RESTART
                await self.close(code=code, reason=closecodes.REASONS[code])
        draining.release(self)

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
        if database_unreachable(err):  # one line per frame while it lasts, not a traceback
            log.warning("chat socket of conversation %s: database unreachable (%s)", conversation_id, err)
        else:
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
        welcome = await database_sync_to_async(session_welcome)(
            bot=self.bot,
            hello=hello,
            user_agent=access.header(self.scope["headers"], b"user-agent") or "",
            session=self.session,
        )
        if self.session is None:
            self.session = welcome.session
            self.wait = HandoffWait(self.channel_layer, self.session)
            self.tabs = Tabs(self.channel_layer, self.channel_name, self.session.conversation_id)
            await self.tabs.join()
        assert self.wait is not None
        await self.send_frame(welcome.frame)
        if welcome.expired:
            await self.wait.ended(welcome.handoff.bot_id)
        elif welcome.handoff.status == Conversation.Status.WAITING_FOR_AGENT:
            self.wait.start(welcome.handoff.waiting_since, welcome.handoff.bot_id)

    async def say(self, say: frames.Say) -> None:
        assert self.session is not None
        if self.pending > settings.CHAT_QUEUE_MAX:
            raise FrameError(frames.BUSY, "Please wait for the answer before sending more.", say.client_id)
        buckets = access.message_buckets(
            visitor_uid=self.session.visitor_uid, client=self.scope.get("client")
        )
        wait = await ratelimit.atake(buckets)
        if self.closing_for_restart:
            return  # not acknowledged: the widget sends it again to the next process
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
        while True:
            say = await self.queue.get()
            try:
                await self.answer(say)
            except Exception as err:
                await self.failed(err, say.client_id)
            finally:
                self.pending -= 1
            if self.closing_for_restart:
                await self.close_for_restart()
                return

    async def answer(self, say: frames.Say) -> None:
        """The bot's reply; or, when the message asks for a person, the handoff's answer."""
        assert self.session is not None and self.tabs is not None
        conversation_id = self.session.conversation_id
        offered, self.person_offered = self.person_offered, False
        for_person = asks_for_person(say.text) or (offered and accepts_offer(say.text))
        if for_person:
            stream = handoff_message_stream(
                conversation_id=conversation_id, text=say.text, client_id=say.client_id
            )
        else:
            stream = reply_stream(
                conversation_id=conversation_id, text=say.text, client_id=say.client_id, matcher=self.matcher
            )
        last: ReplyEvent | None = None
        steps = relay(stream, conversation_id=conversation_id, client_id=say.client_id, tabs=self.tabs)
        async with aclosing(steps) as relayed:
            async for step in relayed:
                for frame in step.frames:
                    await self.send_frame(frame)
                last = step.event
        if isinstance(last, Ended):
            self.person_offered = last.person_offered
        elif for_person and isinstance(last, Acked) and not last.duplicate:  # no agent has it yet
            await self.handoff()

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

    async def handoff(self) -> None:
        assert self.session is not None and self.tabs is not None and self.wait is not None
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
            self.wait.start(state.waiting_since, state.bot_id)
        else:
            frame = frames.handoff_unavailable(lang)
        await self.send_frame(frame)
        await self.tabs.broadcast(frame)

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
            await events.visitor_typing(self.channel_layer, conversation_id)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=frames.encode(frame))

    # --- Channel-layer events -------------------------------------------------------------

    async def chat_tab(self, event: dict[str, Any]) -> None:
        """Another tab of the conversation joined, is present, or left."""
        if self.tabs is not None:
            await self.tabs.heard(event)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        if event["sender"] != self.channel_name and self.bot is not None:
            if event["frame"].get("type") == "agent.joined" and self.wait is not None:
                self.wait.cancel()  # the wait is over
            await self.send_frame(event["frame"])

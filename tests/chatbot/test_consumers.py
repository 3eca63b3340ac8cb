"""The chat websocket: connecting, hello/welcome, every client frame and every error code.

Replies (knowledge base, LLM, fallback, queueing, tabs) are in test_consumers_replies.py,
isolation between visitors in test_consumers_isolation.py. Shared helpers: ws_client.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from chatbot import closecodes
from chatbot.models import Bot, Conversation, Feedback, Message, Visitor
from chatbot.tokens import visitor_token_sign
from tests.chatbot.ws_client import (
    WAIT,
    closed_with,
    communicator,
    connected,
    db,
    hello,
    recv,
    rows,
    send,
    until,
)
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db(transaction=True)

# --- Connecting -------------------------------------------------------------------------


async def test_an_unknown_bot_is_refused_with_its_close_code() -> None:
    comm = communicator("no-such-key")
    assert (await comm.connect(timeout=WAIT))[0] is True  # accepted, then closed: browsers see the code
    assert await closed_with(comm) == closecodes.UNKNOWN_BOT


async def test_an_inactive_bot_is_refused() -> None:
    bot = await db(make_bot, is_active=False)
    comm = communicator(bot)
    await comm.connect(timeout=WAIT)
    assert await closed_with(comm) == closecodes.BOT_INACTIVE


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("https://shop.example", "chat.example", True),
        ("https://SHOP.example/", "chat.example", True),
        ("http://chat.example:8000", "chat.example:8000", True),  # the server's own pages
        (None, "chat.example", True),  # not a browser
        ("https://evil.example", "chat.example", False),
        ("http://shop.example", "chat.example", False),  # another scheme is another origin
        ("null", "chat.example", False),
        ("https://chat.example:8443", "chat.example", False),
    ],
)
async def test_only_the_bots_origins_and_the_servers_own_may_connect(
    origin: str | None, host: str, allowed: bool
) -> None:
    bot = await db(make_bot, allowed_origins=["https://shop.example"])
    comm = communicator(bot, origin=origin, host=host)
    await comm.connect(timeout=WAIT)
    if allowed:
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}
        await comm.disconnect(timeout=WAIT)
    else:
        assert await closed_with(comm) == closecodes.ORIGIN_NOT_ALLOWED


async def test_a_frame_over_the_size_limit_closes_the_connection(settings: Any) -> None:
    settings.CHAT_MAX_FRAME_BYTES = 1024
    bot = await db(make_bot)
    comm = communicator(bot)
    await comm.connect(timeout=WAIT)
    await hello(comm)
    await comm.send_to(text_data=json.dumps({"type": "message", "text": "é" * 600}, ensure_ascii=False))
    assert await closed_with(comm) == closecodes.FRAME_TOO_LARGE
    assert await db(Message.objects.count) == 0


# --- hello / welcome --------------------------------------------------------------------


async def test_a_new_visitor_gets_a_token_a_conversation_and_the_greeting() -> None:
    bot = await db(make_bot, greeting="Welcome to Maple Nook!")
    async with connected(bot) as comm:
        welcome = await hello(comm)
    visitor = await db(Visitor.objects.get)
    conversation = await db(Conversation.objects.get)
    assert welcome == {
        "type": "welcome",
        "visitor": welcome["visitor"],
        "conversation": conversation.pk,
        "messages": [],
        "greeting": "Welcome to Maple Nook!",
        "name": bot.name,
        "max_chars": 2000,
        "status": "open",
        "agent": None,
    }
    assert isinstance(welcome["visitor"], str) and str(visitor.uid) not in welcome["visitor"].split(":")[0]
    assert (visitor.bot_id, visitor.language, visitor.page_url, visitor.user_agent) == (
        bot.pk,
        "en",
        "https://shop.example/cart",
        "pytest-browser/1.0",
    )
    assert (conversation.visitor_id, conversation.status) == (visitor.pk, "open")


async def test_a_returning_visitor_resumes_their_conversation_with_its_history() -> None:
    bot = await db(make_bot)
    conversation = await db(make_conversation, bot)
    question = await db(make_message, conversation, text="Do you ship abroad?")
    answer = await db(
        make_message, conversation, role="bot", text="Yes, to the EU.", source="knowledge", status="complete"
    )
    await db(make_message, conversation, role="bot", text="Being wri", source="llm", status="pending")
    notice = await db(make_message, conversation, role="system", text="Ann joined the conversation.")
    ann = await db(User.objects.create_user, username="ann", first_name="Ann", last_name="Lee")
    said = await db(make_message, conversation, role="agent", text="Hi!", source="agent", author=ann)
    visitor = await db(Visitor.objects.get)
    token = visitor_token_sign(bot=bot, uid=visitor.uid)
    async with connected(bot) as comm:
        welcome = await hello(comm, token)
    assert welcome["conversation"] == conversation.pk
    assert welcome["messages"] == [
        {
            "id": question.pk,
            "role": "visitor",
            "text": "Do you ship abroad?",
            "source": "",
            "status": "complete",
            "created": question.created_at.isoformat(),
            "sources": [],
        },
        {
            "id": answer.pk,
            "role": "bot",
            "text": "Yes, to the EU.",
            "source": "knowledge",
            "status": "complete",
            "created": answer.created_at.isoformat(),
            "sources": [],
        },
        {
            "id": notice.pk,
            "role": "system",
            "text": "Ann joined the conversation.",
            "source": "",
            "status": "complete",
            "created": notice.created_at.isoformat(),
            "sources": [],
        },
        {
            "id": said.pk,
            "role": "agent",
            "text": "Hi!",
            "source": "agent",
            "status": "complete",
            "created": said.created_at.isoformat(),
            "sources": [],
            "agent": "Ann Lee",
        },
    ]
    assert await db(Visitor.objects.count) == 1


async def test_history_is_the_newest_messages_and_after_resyncs_from_a_message_id(settings: Any) -> None:
    settings.CHAT_HISTORY_MESSAGES = 3
    bot = await db(make_bot)
    conversation = await db(make_conversation, bot)
    ids = [(await db(make_message, conversation, text=f"m{n}")).pk for n in range(5)]
    token = visitor_token_sign(bot=bot, uid=(await db(Visitor.objects.get)).uid)
    async with connected(bot) as comm:
        assert [m["text"] for m in (await hello(comm, token))["messages"]] == ["m2", "m3", "m4"]
    async with connected(bot) as comm:
        welcome = await hello(comm, token, after=ids[3])
        assert [m["id"] for m in welcome["messages"]] == [ids[4]]


async def test_a_closed_conversation_is_not_resumed() -> None:
    bot = await db(make_bot)
    old = await db(make_conversation, bot, status="closed")
    await db(make_message, old, text="old question")
    token = visitor_token_sign(bot=bot, uid=(await db(Visitor.objects.get)).uid)
    async with connected(bot) as comm:
        welcome = await hello(comm, token)
    assert welcome["conversation"] != old.pk and welcome["messages"] == []
    assert await db(Visitor.objects.count) == 1


async def test_a_second_hello_keeps_the_visitor_and_conversation() -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        first = await hello(comm)
        second = await hello(comm, None)
    assert second["conversation"] == first["conversation"]
    assert await db(Visitor.objects.count) == 1


# --- ping, errors before hello, malformed frames -----------------------------------------


async def test_ping_is_answered_before_and_after_hello() -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}
        await hello(comm)
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "text": "hi", "client_id": "c1"},
        {"type": "feedback", "id": 1, "rating": "up"},
        {"type": "handoff"},
    ],
)
async def test_nothing_but_hello_and_ping_is_accepted_before_hello(frame: dict[str, Any]) -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await send(comm, **frame)
        error = await recv(comm)
        assert (error["type"], error["code"], error["client_id"]) == (
            "error",
            "not_ready",
            frame.get("client_id"),
        )
        assert error["message"]
        await hello(comm)  # the connection stays open
    assert await db(Message.objects.count) == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"hello"', "bad_json"),
        ('{"text": "no type"}', "unknown_type"),
        ('{"type": "subscribe", "client_id": "c9"}', "unknown_type"),
        ('{"type": 7}', "unknown_type"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_connection_stays_open(raw: str, code: str) -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await hello(comm)
        await comm.send_to(text_data=raw)
        error = await recv(comm)
        assert (error["type"], error["code"]) == ("error", code)
        if code == "unknown_type" and "c9" in raw:
            assert error["client_id"] == "c9"
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}


async def test_a_binary_frame_is_bad_json() -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await comm.send_to(bytes_data=b'{"type": "ping"}')
        assert (await recv(comm))["code"] == "bad_json"


@pytest.mark.parametrize(
    ("text", "code"),
    [("", "empty"), ("  \n\t ", "empty"), ("x" * 2001, "too_long"), (42, "invalid"), (None, "invalid")],
)
async def test_a_message_is_validated_before_it_is_stored(text: Any, code: str) -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await hello(comm)
        await send(comm, type="message", text=text, client_id="c1")
        error = await recv(comm)
        assert (error["type"], error["code"], error["client_id"]) == ("error", code, "c1")
        assert isinstance(error["message"], str) and error["message"]
    assert await db(Message.objects.count) == 0


async def test_the_message_limit_is_a_setting(settings: Any) -> None:
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    bot = await db(make_bot)
    async with connected(bot) as comm:
        assert (await hello(comm))["max_chars"] == 10
        await send(comm, type="message", text="x" * 11, client_id="c1")
        assert (await recv(comm))["code"] == "too_long"


async def test_a_bad_client_id_is_invalid() -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await hello(comm)
        await send(comm, type="message", text="hi", client_id="c" * 101)
        error = await recv(comm)
        assert (error["code"], error["client_id"]) == ("invalid", None)


# --- feedback -------------------------------------------------------------------------


async def resumed(bot: Bot) -> tuple[Conversation, str]:
    conversation = await db(make_conversation, bot)
    visitor = await db(Visitor.objects.get, pk=conversation.visitor_id)
    return conversation, visitor_token_sign(bot=bot, uid=visitor.uid)


async def test_feedback_on_a_reply_is_saved_and_can_be_changed() -> None:
    bot = await db(make_bot)
    conversation, token = await resumed(bot)
    reply = await db(make_message, conversation, role="bot", text="Five days.", source="knowledge")
    async with connected(bot) as comm:
        await hello(comm, token)
        await send(comm, type="feedback", id=reply.pk, rating="down", comment=" too slow ")
        assert await recv(comm) == {"type": "feedback.saved", "id": reply.pk}
        await send(comm, type="feedback", id=reply.pk, rating="up")
        assert await recv(comm) == {"type": "feedback.saved", "id": reply.pk}
    feedback = await db(Feedback.objects.get)
    assert (feedback.message_id, feedback.rating, feedback.comment) == (reply.pk, "up", "")


@pytest.mark.parametrize("target", ["visitor message", "missing", "other conversation"])
async def test_feedback_on_anything_but_a_reply_of_this_conversation_is_not_found(target: str) -> None:
    bot = await db(make_bot)
    conversation, token = await resumed(bot)
    own = await db(make_message, conversation, text="hello")
    other = await db(make_message, await db(make_conversation, bot), role="bot", text="hi", source="llm")
    reply_id = {"visitor message": own.pk, "missing": other.pk + 100, "other conversation": other.pk}[target]
    async with connected(bot) as comm:
        await hello(comm, token)
        await send(comm, type="feedback", id=reply_id, rating="up")
        error = await recv(comm)
        assert (error["type"], error["code"]) == ("error", "not_found")
    assert await db(Feedback.objects.count) == 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"id": "12", "rating": "up"}, "invalid"),
        ({"id": True, "rating": "up"}, "invalid"),
        ({"id": 1, "rating": "meh"}, "invalid"),
        ({"id": 1, "rating": "up", "comment": 5}, "invalid"),
        ({"id": 1, "rating": "up", "comment": "x" * 2001}, "too_long"),
    ],
)
async def test_a_malformed_feedback_is_refused(frame: dict[str, Any], code: str) -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await hello(comm)
        await send(comm, type="feedback", **frame)
        assert (await recv(comm))["code"] == code


# --- rate limits and the queue -----------------------------------------------------------


async def test_a_visitor_sending_too_fast_is_rate_limited(settings: Any, kb: Any) -> None:
    settings.CHAT_RATE_VISITOR = (2, 60.0)
    settings.CHAT_RATE_IP = None
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as comm:
        welcome = await hello(comm)
        for n in range(2):
            await send(comm, type="message", text=f"question {n}", client_id=f"c{n}")
            await until(comm, "reply.end")
        await send(comm, type="message", text="one more", client_id="c2")
        error = await recv(comm)
        assert (error["code"], error["client_id"]) == ("rate_limited", "c2")
        assert isinstance(error["retry_after"], int) and 1 <= error["retry_after"] <= 30
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}
    texts = [r[1] for r in await db(rows, welcome["conversation"])]
    assert "one more" not in texts and "question 1" in texts


async def test_visitors_behind_one_address_share_its_limit(settings: Any, kb: Any) -> None:
    settings.CHAT_RATE_VISITOR = None
    settings.CHAT_RATE_IP = (1, 60.0)
    bot = await db(make_bot)
    async with (
        connected(bot, matcher=kb) as first,
        connected(bot, matcher=kb) as second,
        connected(bot, client=("192.0.2.9", 1), matcher=kb) as third,
    ):
        for comm in (first, second, third):
            await hello(comm)
        await send(first, type="message", text="hi", client_id="a")
        await until(first, "reply.end")
        await send(second, type="message", text="hi", client_id="b")
        assert (await recv(second))["code"] == "rate_limited"
        await send(third, type="message", text="hi", client_id="c")
        assert (await recv(third))["type"] == "ack"  # another address


async def test_an_idle_connection_outlives_the_channel_layers_blocking_read(settings: Any) -> None:
    """With Redis, a consumer waits for group messages in 5-second blocking reads; a socket
    timeout no longer than that used to kill every connection idle for 5 seconds."""
    if not settings.REDIS_URL:
        pytest.skip("the in-memory channel layer has no blocking reads")
    from channels_redis.core import RedisChannelLayer

    bot = await db(make_bot)
    async with connected(bot) as comm:
        await hello(comm)
        await asyncio.sleep(RedisChannelLayer.brpop_timeout + 1.5)
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}

"""What no client can break on the chat websocket: frames outside the bounds, garbage
visitor tokens, a visitor erased while connected, and a failure inside the server (never a
1011 close). The seeded fuzz test of both sockets is test_fuzz_sockets.py; the agent
socket's side is tests/agents/test_live_consumer_failures.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chatbot import closecodes, consumers
from chatbot.models import Conversation, Message, Visitor
from tests.chatbot.ws_client import closed_with, connected, db, hello, recv, send, until
from tests.factories import make_bot
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)

NESTED = "[" * 1000 + "]" * 1000  # 2 KB: RecursionError in json.loads, once


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def pong(comm: Any) -> None:
    await send(comm, type="ping")
    assert await recv(comm) == {"type": "pong"}


# --- Frames outside the bounds ------------------------------------------------------------


@pytest.mark.parametrize("after_hello", [False, True], ids=["before-hello", "after-hello"])
@pytest.mark.parametrize(
    "raw",
    [
        NESTED,
        '{"type": "message", "text": "hi", "x": ' + NESTED + "}",
        '{"type": "feedback", "id": 1000000000000000000000000000000, "rating": "up"}',  # OverflowError
        '{"type": "hello", "after": 99999999999999999999}',
        '{"type": "hello", "after": NaN}',
    ],
    ids=["nested", "nested-field", "huge-id", "huge-after", "nan"],
)
async def test_a_frame_outside_the_bounds_is_bad_json_and_the_connection_stays_open(
    raw: str, after_hello: bool, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        if after_hello:
            await hello(comm)
        await comm.send_to(text_data=raw)
        error = await recv(comm)
        assert (error["type"], error["code"], error["client_id"]) == ("error", "bad_json", None)
        await pong(comm)
    assert errors_logged(caplog) == []


async def test_a_text_frame_holding_a_lone_surrogate_is_answered() -> None:
    # Only a test client can send one (a browser's text is UTF-8); measuring it raised.
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await comm.send_to(text_data='{"type": "hello", "visitor": "\ud800:abc:def"}')
        welcome = await recv(comm)
        assert welcome["type"] == "welcome" and welcome["visitor"].isascii()
        await comm.send_to(text_data='{"type": "\udfff"}')
        error = await recv(comm)
        assert error["code"] == "unknown_type"
        assert error["message"].encode("utf-8")  # the surrogate is not sent back raw


# --- Visitor tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["\ud800:abc:def", "abc:def:\udfff", "é:é:é", "::", ["x"], 7, {"a": 1}])
async def test_a_garbage_visitor_token_gets_a_new_visitor(token: object) -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        first = await hello(comm)
    async with connected(bot) as comm:
        second = await hello(comm, token)  # type: ignore[arg-type]
    assert second["visitor"] != first["visitor"] and second["conversation"] != first["conversation"]
    assert await db(Visitor.objects.filter(bot=bot).count) == 2


# --- Erased while connected ---------------------------------------------------------------

NEXT_FRAMES = [
    {"type": "hello"},
    {"type": "message", "text": "Are you still there?", "client_id": "m-2"},
    {"type": "message", "text": "I want to talk to a real person", "client_id": "m-3"},
    {"type": "handoff"},
    {"type": "contact", "email": "ann@example.com"},
    {"type": "typing"},
]
NEXT_IDS = ["hello", "message", "message-for-a-person", "handoff", "contact", "typing"]


def visitor_erase(conversation_id: int) -> None:
    # As the admin's "delete visitor" does: the visitor's conversations go with it.
    Visitor.objects.filter(conversations__id=conversation_id).delete()


@pytest.mark.parametrize("frame", NEXT_FRAMES, ids=NEXT_IDS)
async def test_a_visitor_erased_while_connected_is_closed_at_their_next_frame(
    frame: dict[str, Any], kb: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as comm:
        welcome = await hello(comm)
        await db(visitor_erase, welcome["conversation"])
        await send(comm, **frame)
        assert await closed_with(comm) == closecodes.ERASED
        await send(comm, type="ping")  # closed: nothing more is answered
        assert await comm.receive_nothing(timeout=0.2)
    assert errors_logged(caplog) == []
    assert await db(Message.objects.count) == 0 and await db(Visitor.objects.count) == 0
    async with connected(bot, matcher=kb) as comm:  # the same token, a new connection: a new visitor
        again = await hello(comm, welcome["visitor"])
    assert again["visitor"] != welcome["visitor"] and again["messages"] == []


async def test_a_conversation_erased_while_connected_closes_it_and_the_visitor_starts_a_new_one(
    kb: StandIn,
) -> None:
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as comm:
        welcome = await hello(comm)
        await db(Conversation.objects.filter(pk=welcome["conversation"]).delete)
        await send(comm, type="handoff")
        assert await closed_with(comm) == closecodes.ERASED
    async with connected(bot, matcher=kb) as comm:
        again = await hello(comm, welcome["visitor"])
    assert again["visitor"] == welcome["visitor"] and again["conversation"] != welcome["conversation"]


# --- A failure inside the server ------------------------------------------------------------


def broken(**kwargs: Any) -> Any:
    raise RuntimeError("the service fell over")


async def test_an_unexpected_failure_is_logged_once_and_answered_with_server_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(consumers, "handoff_request", broken)
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await hello(comm)
        await send(comm, type="handoff")
        assert await recv(comm) == {
            "type": "error",
            "code": "server_error",
            "message": "Something went wrong on our side.",
            "client_id": None,
        }
        await pong(comm)
        await send(comm, type="contact", email="ann@example.com")
        assert await recv(comm) == {"type": "contact.saved"}
    [record] = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


async def test_a_failure_while_a_message_is_answered_leaves_the_next_message_answered(
    monkeypatch: pytest.MonkeyPatch, kb: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    def stream_broken(**kwargs: Any) -> Any:
        raise RuntimeError("storing the message fell over")

    monkeypatch.setattr(consumers, "handoff_message_stream", stream_broken)
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="I want to talk to a real person", client_id="m-1")
        error = await recv(comm)
        assert (error["code"], error["client_id"]) == ("server_error", "m-1")
        await send(comm, type="message", text="Do you ship to Norway?", client_id="m-2")
        frames = await until(comm, "reply.end")
        assert (frames[0]["type"], frames[0]["client_id"]) == ("ack", "m-2")
    [record] = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError

"""Exactly once: a visitor message sent again with its ``client_id`` (the same socket, after a
reconnect, another tab, another server process) gets the original ``ack`` and is neither
stored nor answered again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from chatbot import inflight
from chatbot.chat.relay import conversation_lock
from chatbot.models import Conversation, Message
from chatbot.reply_events import Acked, ReplyEvent
from chatbot.replying import reply_stream
from chatbot.services import DuplicateMessage, visitor_message_add
from devtools.fake_llm.server import FakeLLMServer
from tests.chatbot.ws_client import connected, db, hello, recv, rows, send, two_tabs, until
from tests.factories import make_bot, make_conversation, make_message
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Where is my parcel? [[fake: tokens=3]]"
ANSWERED = [("visitor", QUESTION, "", "complete"), ("bot", "tok1 tok2 tok3 ", "llm", "complete")]


async def stored(conversation_id: int, count: int) -> list[tuple[str, str, str, str]]:
    """The conversation's rows, once there are ``count`` of them and none is being written."""
    for _ in range(500):
        found = await db(rows, conversation_id)
        if len(found) >= count and all(status != "pending" for *_, status in found):
            return found
        await asyncio.sleep(0.02)
    return found


async def test_a_message_sent_twice_on_one_socket_is_stored_and_answered_once(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text=QUESTION, client_id="c1")
        await send(comm, type="message", text=QUESTION, client_id="c1")  # before the first is answered
        answered = await until(comm, "reply.end")
        again = await recv(comm)
        await comm.receive_nothing()
    visitor = await db(Message.objects.get, role="visitor")
    assert answered[0] == {"type": "ack", "client_id": "c1", "id": visitor.pk}
    assert again == {**answered[0], "duplicate": True}  # the same ack; no reply follows it
    assert await db(rows, welcome["conversation"]) == ANSWERED
    assert len(fake.requests) == 1


async def test_a_message_stored_as_the_connection_dropped_is_acknowledged_again_after_a_reconnect(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with connected(bot, matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text=QUESTION, client_id="c1")
        # The connection drops with the ack (and the reply) on the way: the widget never saw them.
        assert await stored(welcome["conversation"], 2) == ANSWERED
    async with connected(bot, matcher=kb) as comm:
        resync = await hello(comm, welcome["visitor"])
        await send(comm, type="message", text=QUESTION, client_id="c1")  # sent again, same id
        ack = await recv(comm)
        await comm.receive_nothing()
    visitor = await db(Message.objects.get, role="visitor")
    # The history names the client id, so the widget adopts it without matching texts.
    assert [(m["id"], m.get("client_id")) for m in resync["messages"] if m["role"] == "visitor"] == [
        (visitor.pk, "c1")
    ]
    assert ack == {"type": "ack", "client_id": "c1", "id": visitor.pk, "duplicate": True}
    assert await db(rows, welcome["conversation"]) == ANSWERED
    assert len(fake.requests) == 1


async def test_the_same_message_from_two_tabs_at_once_is_stored_and_answered_once(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with two_tabs(bot, matcher=kb) as (first, second, welcome):
        async with conversation_lock(welcome["conversation"]):
            for comm in (first, second):
                await send(comm, type="message", text=QUESTION, client_id="c1")
                await send(comm, type="ping")  # both workers are now waiting for the conversation
                await until(comm, "pong")
        seen = [await until_both(comm, "ack", "reply.end") for comm in (first, second)]
        seen = [frames + await rest(comm) for frames, comm in zip(seen, (first, second), strict=True)]
    visitor = await db(Message.objects.get, role="visitor")
    acks = [f for frames in seen for f in frames if f["type"] == "ack"]
    original = {"type": "ack", "client_id": "c1", "id": visitor.pk}
    assert acks == [original, {**original, "duplicate": True}]
    ends = [f for frames in seen for f in frames if f["type"] == "reply.end"]
    assert [f["text"] for f in ends] == ["tok1 tok2 tok3 "] * 2  # one reply, seen in each tab
    assert len({f["id"] for f in ends}) == 1
    assert await db(rows, welcome["conversation"]) == ANSWERED
    assert len(fake.requests) == 1


async def until_both(comm: Any, *kinds: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not set(kinds) <= {f["type"] for f in frames}:
        frames.append(await recv(comm))
    return frames


async def rest(comm: Any) -> list[dict[str, Any]]:
    """Frames that come within a moment (there should be none)."""
    frames = []
    while not await comm.receive_nothing(timeout=0.2):
        frames.append(await recv(comm))
    return frames


async def test_a_request_for_a_person_sent_again_is_acknowledged_and_not_asked_again(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    async with connected(await db(make_bot), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text="I want to talk to a human", client_id="h1")
        asked = await until(comm, "handoff.unavailable")
        await send(comm, type="message", text="I want to talk to a human", client_id="h1")
        again = await recv(comm)
        await comm.receive_nothing()
    assert asked[0] == {"type": "ack", "client_id": "h1", "id": asked[0]["id"]}
    assert again == {**asked[0], "duplicate": True}
    assert await db(rows, welcome["conversation"]) == [
        ("visitor", "I want to talk to a human", "", "complete")
    ]


async def test_two_processes_storing_the_same_message_at_once_store_it_once(kb: StandIn) -> None:
    """Both arrive in one group commit (as two server processes would race at the database):
    the unique constraint refuses the batch, and the second, stored alone, is the duplicate."""
    conversation = await db(make_conversation)

    async def first_event() -> ReplyEvent:
        stream = reply_stream(conversation_id=conversation.pk, text="Hello?", client_id="c1", matcher=kb)
        async with aclosing(stream) as events:
            return await anext(events)

    async with inflight.keeper().flight():  # the heartbeat is fresh: both go straight to the store
        events = await asyncio.gather(first_event(), first_event())
    assert all(isinstance(e, Acked) for e in events)
    [acked] = [e for e in events if isinstance(e, Acked) and not e.duplicate]
    [duplicate] = [e for e in events if isinstance(e, Acked) and e.duplicate]
    assert duplicate.message_id == acked.message_id
    # The reply abandoned after the ack leaves no row.
    assert await db(rows, conversation.pk) == [("visitor", "Hello?", "", "complete")]


def test_the_database_keeps_a_client_id_once_per_conversation() -> None:
    conversation, other = make_conversation(), make_conversation()
    make_message(conversation, client_id="c1")
    make_message(other, client_id="c1")  # another conversation may use it
    for _ in range(2):  # no id at all, or an empty one, is never a duplicate
        make_message(conversation, client_id=None)
        make_message(conversation, client_id="")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_message(conversation, client_id="c1")


def test_storing_a_message_again_names_the_original_and_stores_nothing() -> None:
    conversation = make_conversation()
    original, reply_id, _ = visitor_message_add(
        conversation=conversation, text="Hi", reserve_reply=True, client_id="c1", reply_owner="me"
    )
    with pytest.raises(DuplicateMessage) as duplicate:
        visitor_message_add(conversation=conversation, text="Hi", reserve_reply=True, client_id="c1")
    assert duplicate.value.original == original
    assert list(Message.objects.values_list("role", "status", "owner")) == [
        ("visitor", "complete", ""),
        ("bot", "pending", "me"),
    ]
    assert Message.objects.get(pk=reply_id).status == Message.Status.PENDING
    assert Conversation.objects.count() == 1

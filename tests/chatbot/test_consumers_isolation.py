"""A visitor can never receive another visitor's messages or history: the conversation is
chosen by the server from the signed visitor token, never by the client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core import signing

from chatbot.models import Conversation, Message, Visitor
from chatbot.tokens import SALT, visitor_token_sign
from tests.chatbot.ws_client import connected, db, hello, send, until
from tests.factories import make_bot, make_conversation, make_message
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)


async def someone_elses_conversation(bot: Any) -> tuple[Conversation, Message]:
    conversation = await db(make_conversation, bot)
    message = await db(make_message, conversation, text="my card number is 4111")
    return conversation, message


async def test_another_visitor_receives_nothing_of_a_conversation(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as alice, connected(bot, matcher=kb) as bob:
        alice_welcome = await hello(alice)
        bob_welcome = await hello(bob)
        assert alice_welcome["conversation"] != bob_welcome["conversation"]
        assert alice_welcome["visitor"] != bob_welcome["visitor"]
        await send(alice, type="message", text="my address is 1 Elm St", client_id="c1")
        await until(alice, "reply.end")
        await bob.receive_nothing(timeout=0.5)
    async with connected(bot, matcher=kb) as bob:
        assert (await hello(bob, bob_welcome["visitor"]))["messages"] == []


@pytest.mark.parametrize("field", ["conversation", "conversation_id", "id"])
async def test_a_guessed_conversation_id_in_hello_is_ignored(field: str) -> None:
    bot = await db(make_bot)
    theirs, _ = await someone_elses_conversation(bot)
    async with connected(bot) as comm:
        welcome = await hello(comm, None, **{field: theirs.pk}, after=0)
    assert welcome["conversation"] != theirs.pk and welcome["messages"] == []


async def test_after_never_reaches_into_another_conversation() -> None:
    bot = await db(make_bot)
    _, secret = await someone_elses_conversation(bot)
    mine = await db(make_conversation, bot)
    own = await db(make_message, mine, text="mine")
    token = visitor_token_sign(bot=bot, uid=(await db(Visitor.objects.get, pk=mine.visitor_id)).uid)
    async with connected(bot) as comm:
        welcome = await hello(comm, token, after=secret.pk - 1)
    assert [m["id"] for m in welcome["messages"]] == [own.pk]


def _tokens(bot: Any, other_bot: Any, uid: uuid.UUID) -> dict[str, object]:
    good = visitor_token_sign(bot=bot, uid=uid)
    return {
        "tampered": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "other bot's": visitor_token_sign(bot=other_bot, uid=uid),
        "right bot id, wrong secret": signing.dumps(
            {"b": bot.pk, "v": str(uid)}, key=other_bot.secret, salt=SALT
        ),
        "unsigned": str(uid),
        "not a string": 12345,
    }


@pytest.mark.parametrize(
    "kind", ["tampered", "other bot's", "right bot id, wrong secret", "unsigned", "not a string"]
)
async def test_a_bad_token_gets_a_new_visitor_not_the_one_it_names(kind: str) -> None:
    bot, other_bot = await db(make_bot), await db(make_bot, name="Other")
    theirs, _ = await someone_elses_conversation(bot)
    victim = await db(Visitor.objects.get, pk=theirs.visitor_id)
    token = _tokens(bot, other_bot, victim.uid)[kind]
    async with connected(bot) as comm:
        welcome = await hello(comm, token)
    assert welcome["conversation"] != theirs.pk and welcome["messages"] == []
    assert welcome["visitor"] != token
    assert await db(Visitor.objects.filter(bot=bot).count) == 2


async def test_a_token_of_one_bot_opens_nothing_on_another(kb: StandIn) -> None:
    bot, other_bot = await db(make_bot), await db(make_bot, name="Other")
    async with connected(bot, matcher=kb) as comm:
        token = (await hello(comm))["visitor"]
        await send(comm, type="message", text="hello", client_id="c1")
        await until(comm, "reply.end")
    async with connected(other_bot, matcher=kb) as comm:
        welcome = await hello(comm, token)
    assert welcome["messages"] == []
    conversation = await db(Conversation.objects.get, pk=welcome["conversation"])
    assert conversation.bot_id == other_bot.pk


async def test_feedback_cannot_touch_another_visitors_reply() -> None:
    bot = await db(make_bot)
    theirs, _ = await someone_elses_conversation(bot)
    reply = await db(make_message, theirs, role="bot", text="Your order ships today.", source="llm")
    async with connected(bot) as comm:
        await hello(comm)
        await send(comm, type="feedback", id=reply.pk, rating="down", comment="spam")
        error = await until(comm, "error")
    assert error[-1]["code"] == "not_found"
    assert not await db(lambda: hasattr(Message.objects.get(pk=reply.pk), "feedback"))

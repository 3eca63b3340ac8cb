"""Live handoff over websockets: the visitor's socket (ws/chat/<key>/) and the agent socket
(ws/agent/, signed in with a real session cookie through AuthMiddlewareStack), talking
through the channel layer. Permissions of the agent socket are at the end."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from chatbot import closecodes
from chatbot.models import Bot, Conversation, Message, Visitor
from chatbot.replying import Matcher
from chatbot.tokens import visitor_token_sign
from knowledge.models import Entry
from tests.agents.conftest import make_user
from tests.chatbot.ws_client import (
    WAIT,
    application,
    closed_with,
    connected,
    db,
    hello,
    recv,
    routes,
    send,
    until,
)
from tests.factories import make_bot
from tests.fixtures.llm import Candidate, MatchResult, StandIn

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = 0.5  # seconds of silence that show nothing was sent


# --- Helpers ------------------------------------------------------------------------------


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def agent_communicator(
    cookie: str | None, *, app: Any = application, path: str = "/ws/agent/", origin: str = "http://testserver"
) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(app, path, headers=headers)


@asynccontextmanager
async def agent_socket(user: User, *, app: Any = application) -> AsyncIterator[WebsocketCommunicator]:
    """An agent's console, connected and past hello (its welcome is in ``comm.welcome``)."""
    comm = agent_communicator(await db(session_cookie, user), app=app)
    ok, _ = await comm.connect(timeout=WAIT)
    assert ok
    try:
        await send(comm, type="hello")
        comm.welcome = await recv(comm)  # type: ignore[attr-defined]
        assert comm.welcome["type"] == "welcome", comm.welcome  # type: ignore[attr-defined]
        yield comm
    finally:
        await comm.disconnect(timeout=WAIT)


async def collect(comm: WebsocketCommunicator, *kinds: str) -> dict[str, dict[str, Any]]:
    """The next frames, one of each type in ``kinds`` (any order, nothing else)."""
    seen: dict[str, dict[str, Any]] = {}
    while set(seen) != set(kinds):
        frame = await recv(comm)
        assert frame["type"] in kinds and frame["type"] not in seen, (frame, seen)
        seen[frame["type"]] = frame
    return seen


async def silent(*comms: WebsocketCommunicator) -> None:
    for comm in comms:
        assert await comm.receive_nothing(timeout=QUIET), await comm.receive_output()


async def ask_for_person(visitor: WebsocketCommunicator) -> dict[str, Any]:
    await send(visitor, type="handoff")
    return await recv(visitor)


def message_rows(conversation_id: int) -> list[tuple[str, str, str, str | None]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("id")
        .values_list("role", "source", "text", "author__username")
    )


async def waiting_with_an_agent(
    stack: AsyncExitStack, bot: Bot, agent: User, *, matcher: Matcher | None = None
) -> tuple[Any, Any, int]:
    """A console connected for ``agent`` and a visitor in the queue: (agent, visitor, id)."""
    console = await stack.enter_async_context(agent_socket(agent, app=routes(matcher)))
    visitor = await stack.enter_async_context(connected(bot, matcher=matcher))
    conversation = (await hello(visitor))["conversation"]
    assert (await ask_for_person(visitor))["type"] == "handoff.waiting"
    assert (await recv(console))["type"] == "queue.update"
    return console, visitor, conversation


async def taken(
    stack: AsyncExitStack, bot: Bot, agent: User, *, matcher: Matcher | None = None
) -> tuple[Any, Any, int]:
    """As ``waiting_with_an_agent``, then taken by the agent (all their frames read)."""
    console, visitor, conversation = await waiting_with_an_agent(stack, bot, agent, matcher=matcher)
    await send(console, type="take", conversation=conversation)
    await collect(console, "conversation", "queue.update")
    assert (await recv(visitor))["type"] == "agent.joined"
    return console, visitor, conversation


# --- The queue ------------------------------------------------------------------------------


async def test_it_tells_visitors_their_place_in_line_and_agents_see_the_queue_live() -> None:
    bot = await db(make_bot, name="Shop")
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console = await stack.enter_async_context(agent_socket(ann))
        assert console.welcome["queue"] == [] and console.welcome["mine"] == []
        assert console.welcome["agent"] == {"id": ann.pk, "name": "ann"}
        first = await stack.enter_async_context(connected(bot))
        second = await stack.enter_async_context(connected(bot))
        one = (await hello(first))["conversation"]
        await send(second, type="hello", visitor=None, page="https://shop.example/help", lang="zh-CN")
        two = (await recv(second))["conversation"]

        waiting = await ask_for_person(first)
        assert waiting == {
            "type": "handoff.waiting",
            "position": 1,
            "message": "You're number 1 in line. Someone from our team will be with you shortly.",
        }
        assert [c["id"] for c in (await recv(console))["queue"]] == [one]
        waiting = await ask_for_person(second)
        assert (waiting["position"], "第 2 位" in waiting["message"]) == (2, True)
        update = await recv(console)
        assert update["type"] == "queue.update" and [c["id"] for c in update["queue"]] == [one, two]

        late = await stack.enter_async_context(agent_socket(await db(make_user, "bob", agent=True)))
        item = late.welcome["queue"][1]
        conversation = await db(Conversation.objects.get, pk=two)
        assert item == {
            "id": two,
            "bot": {"id": bot.pk, "name": "Shop"},
            "visitor": {"name": "", "email": "", "language": "zh-CN", "page": "https://shop.example/help"},
            "status": "waiting_for_agent",
            "waiting_since": conversation.handoff_requested_at.isoformat(),
            "last_message": "",
            "last_activity": conversation.last_activity_at.isoformat(),
        }


# --- Taking a conversation, talking both ways ------------------------------------------------


async def test_taking_a_conversation_brings_the_agent_everything_and_tells_everyone(kb: StandIn) -> None:
    bot = await db(make_bot, name="Shop")
    entry = await db(Entry.objects.create, bot=bot, question="Where is my parcel?", answer="Track it here.")
    kb.result = MatchResult("answer", [Candidate(entry.pk, entry.question, entry.answer, 0.91)])
    alice = await db(
        User.objects.create_user, username="alice", first_name="Alice", last_name="Smith", is_staff=True
    )
    bob = await db(make_user, "bob", staff=True)
    async with AsyncExitStack() as stack:
        console = await stack.enter_async_context(agent_socket(alice, app=routes(kb)))
        other = await stack.enter_async_context(agent_socket(bob, app=routes(kb)))
        visitor = await stack.enter_async_context(connected(bot, matcher=kb))
        conversation = (await hello(visitor))["conversation"]
        await send(visitor, type="message", text="Where is my parcel?", client_id="v1")
        await until(visitor, "reply.end")  # the bot answered from the knowledge base
        kb.result = MatchResult("reference", [Candidate(entry.pk, entry.question, entry.answer, 0.62)] * 4)
        await ask_for_person(visitor)
        for comm in (console, other):
            assert (await recv(comm))["type"] == "queue.update"

        await send(console, type="take", conversation=conversation)
        got = await collect(console, "conversation", "queue.update")
        joined = await db(Message.objects.get, conversation_id=conversation, role="system")
        assert await recv(visitor) == {
            "type": "agent.joined",
            "agent": "Alice Smith",
            "message": "Alice Smith joined the conversation.",
            "id": joined.pk,  # the stored notice: a resync from history shows it once
        }
        seen = (await recv(other))["queue"]
        assert seen == [] and got["queue.update"]["queue"] == []
        assert [c["id"] for c in got["queue.update"]["mine"]] == [conversation]

        shown = got["conversation"]["conversation"]
        assert (shown["id"], shown["status"], shown["assigned_agent"]) == (
            conversation,
            "with_agent",
            "Alice Smith",
        )
        assert shown["bot"] == {"id": bot.pk, "name": "Shop"}
        visitor_row = await db(Visitor.objects.get)
        assert shown["visitor"] == {
            "name": "",
            "email": "",
            "language": "en",
            "page": "https://shop.example/cart",
            "uid": str(visitor_row.uid),
        }
        assert [(m["role"], m["text"]) for m in shown["messages"]] == [
            ("visitor", "Where is my parcel?"),
            ("bot", "Track it here."),
            ("system", "Alice Smith joined the conversation."),
        ]
        suggestion = {"entry_id": entry.pk, "question": entry.question, "answer": entry.answer, "score": 0.62}
        assert shown["suggestions"] == [suggestion] * 3  # the top three
        assert kb.calls[-1][:2] == (bot.pk, "Where is my parcel?")
        await silent(visitor, other)

    stored = await db(Conversation.objects.select_related("assigned_agent").get, pk=conversation)
    assert (stored.status, stored.assigned_agent.username) == ("with_agent", "alice")


async def test_agent_and_visitor_talk_and_the_bot_stays_silent(kb: StandIn) -> None:
    bot = await db(make_bot)
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await taken(stack, bot, ann, matcher=kb)
        second_tab = await stack.enter_async_context(agent_socket(ann, app=routes(kb)))
        await send(second_tab, type="open", conversation=conversation)
        assert (await recv(second_tab))["type"] == "conversation"

        await send(console, type="message", conversation=conversation, text=" Hi, Ann here. ", client_id="a1")
        ack = await recv(console)
        said = await db(Message.objects.get, role="agent")
        assert ack == {"type": "ack", "client_id": "a1", "id": said.pk}
        assert await recv(visitor) == {
            "type": "agent.message",
            "id": said.pk,
            "text": "Hi, Ann here.",
            "agent": "ann",
            "created": said.created_at.isoformat(),
        }
        assert await recv(second_tab) == {
            "type": "agent.message",
            "conversation": conversation,
            "id": said.pk,
            "text": "Hi, Ann here.",
            "agent": "ann",
            "created": said.created_at.isoformat(),
        }

        await send(visitor, type="message", text="My parcel is late.", client_id="v1")
        ack = await recv(visitor)
        assert ack["type"] == "ack" and ack["client_id"] == "v1"
        for comm in (console, second_tab):
            heard = await recv(comm)
            assert (heard["type"], heard["conversation"]) == ("visitor.message", conversation)
            assert (heard["message"]["id"], heard["message"]["role"], heard["message"]["text"]) == (
                ack["id"],
                "visitor",
                "My parcel is late.",
            )
        await silent(visitor, console)  # no reply.*, no echo of the agent's own message

    assert await db(message_rows, conversation) == [
        ("system", "", "ann joined the conversation.", None),
        ("agent", "agent", "Hi, Ann here.", "ann"),
        ("visitor", "", "My parcel is late.", None),
    ]
    assert kb.calls == []  # the bot did not even look


async def test_typing_is_relayed_both_ways_at_most_every_two_seconds(kb: StandIn) -> None:
    bot = await db(make_bot)
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await taken(stack, bot, ann, matcher=kb)
        await send(visitor, type="typing")
        assert await recv(console) == {"type": "visitor.typing", "conversation": conversation}
        await send(visitor, type="typing")
        await send(console, type="typing", conversation=conversation)
        assert await recv(visitor) == {"type": "agent.typing", "agent": "ann"}
        await send(console, type="typing", conversation=conversation)
        await silent(visitor, console)


async def test_visitor_typing_is_ignored_unless_an_agent_has_the_conversation() -> None:
    bot = await db(make_bot)
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await waiting_with_an_agent(stack, bot, ann)
        await send(console, type="open", conversation=conversation)
        assert (await recv(console))["type"] == "conversation"
        await send(visitor, type="typing")
        await silent(visitor, console)  # no error either


async def test_handing_back_lets_the_bot_answer_again(kb: StandIn) -> None:
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Refunds?", answer="Within 5 days.")
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await taken(stack, bot, ann, matcher=kb)
        await send(console, type="release", conversation=conversation)
        left = await recv(visitor)
        notice = await db(Message.objects.filter(conversation_id=conversation, role="system").last)
        assert left == {
            "type": "agent.left",
            "agent": "ann",
            "reason": "bot",
            "message": "ann handed the conversation back to the assistant.",
            "id": notice.pk,
        }
        assert (await recv(console))["mine"] == []
        kb.result = MatchResult("answer", [Candidate(entry.pk, entry.question, entry.answer, 0.95)])
        await send(visitor, type="message", text="How long do refunds take?", client_id="v2")
        end = (await until(visitor, "reply.end"))[-1]
        assert (end["source"], end["text"]) == ("knowledge", "Within 5 days.")
        await silent(console)  # no longer relayed to the agent

    stored = await db(Conversation.objects.get, pk=conversation)
    assert (stored.status, stored.assigned_agent_id) == ("open", None)
    assert [r[0] for r in await db(message_rows, conversation)] == ["system", "system", "visitor", "bot"]


async def test_closing_tells_the_visitor_and_ends_the_conversation() -> None:
    bot = await db(make_bot)
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await taken(stack, bot, ann)
        await send(console, type="close", conversation=conversation)
        left = await recv(visitor)
        assert (left["type"], left["reason"], left["message"]) == (
            "agent.left",
            "closed",
            "ann closed the conversation.",
        )
        assert (await recv(console))["type"] == "queue.update"
    assert (await db(Conversation.objects.get, pk=conversation)).status == "closed"


# --- Reconnecting -----------------------------------------------------------------------------


async def test_both_sides_resync_what_they_missed_after_reconnecting() -> None:
    bot = await db(make_bot)
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await taken(stack, bot, ann)
        token = (await db(Visitor.objects.get)).uid
        last_seen = (await db(Message.objects.filter(conversation_id=conversation).latest, "id")).pk
        await visitor.disconnect(timeout=WAIT)
        for text in ("Are you still there?", "I found your order."):
            await send(console, type="message", conversation=conversation, text=text, client_id=text)
            assert (await recv(console))["type"] == "ack"

        back = await stack.enter_async_context(connected(bot))
        welcome = await hello(back, visitor_token_sign(bot=bot, uid=token), after=last_seen)
        assert (welcome["conversation"], welcome["status"], welcome["agent"]) == (
            conversation,
            "with_agent",
            "ann",
        )
        assert [(m["role"], m["text"], m["agent"]) for m in welcome["messages"]] == [
            ("agent", "Are you still there?", "ann"),
            ("agent", "I found your order.", "ann"),
        ]
        await console.disconnect(timeout=WAIT)
        agent_seen = (await db(Message.objects.filter(conversation_id=conversation).latest, "id")).pk
        await send(back, type="message", text="Thanks!", client_id="v9")
        assert (await recv(back))["type"] == "ack"

        again = await stack.enter_async_context(agent_socket(ann))
        assert [c["id"] for c in again.welcome["mine"]] == [conversation]
        await send(again, type="open", conversation=conversation, after=agent_seen)
        shown = (await recv(again))["conversation"]
        assert [(m["role"], m["text"]) for m in shown["messages"]] == [("visitor", "Thanks!")]
        await send(back, type="message", text="One more thing.", client_id="v10")
        assert (await recv(back))["type"] == "ack"
        assert (await recv(again))["message"]["text"] == "One more thing."  # live again


# --- Permissions ----------------------------------------------------------------------------


async def test_an_anonymous_socket_is_closed_even_with_a_visitor_token() -> None:
    bot = await db(make_bot)
    await db(Conversation.objects.create, bot=bot, visitor=await db(Visitor.objects.create, bot=bot))
    token = visitor_token_sign(bot=bot, uid=(await db(Visitor.objects.get)).uid)
    for path in ("/ws/agent/", f"/ws/agent/?visitor={token}&token={token}"):
        comm = agent_communicator(None, path=path)
        await comm.connect(timeout=WAIT)
        await send(comm, type="hello", visitor=token)
        assert await closed_with(comm) == closecodes.AGENT_FORBIDDEN
        assert await comm.receive_nothing(timeout=QUIET)  # no welcome, nothing at all


async def test_a_signed_in_user_who_is_not_an_agent_is_closed() -> None:
    nobody = await db(make_user, "nobody")
    comm = agent_communicator(await db(session_cookie, nobody))
    await comm.connect(timeout=WAIT)
    assert await closed_with(comm) == closecodes.AGENT_FORBIDDEN


async def test_an_agents_session_from_another_sites_page_is_refused() -> None:
    ann = await db(make_user, "ann", staff=True)
    comm = agent_communicator(await db(session_cookie, ann), origin="https://evil.example")
    await comm.connect(timeout=WAIT)
    assert await closed_with(comm) == closecodes.ORIGIN_NOT_ALLOWED


async def test_nothing_but_hello_and_ping_before_hello() -> None:
    ann = await db(make_user, "ann", staff=True)
    comm = agent_communicator(await db(session_cookie, ann))
    await comm.connect(timeout=WAIT)
    await send(comm, type="take", conversation=1)
    assert (await recv(comm))["code"] == "not_ready"
    await send(comm, type="ping")
    assert await recv(comm) == {"type": "pong"}
    await comm.disconnect(timeout=WAIT)


async def test_an_agent_of_another_bot_never_sees_nor_touches_its_conversations() -> None:
    shop, other = await db(make_bot, name="Shop"), await db(make_bot, name="Other")
    carol = await db(make_user, "carol", agent=True, bots=[other])
    ann = await db(make_user, "ann", staff=True)
    async with AsyncExitStack() as stack:
        outsider = await stack.enter_async_context(agent_socket(carol))
        console, visitor, conversation = await waiting_with_an_agent(stack, shop, ann)
        await silent(outsider)  # no queue item of the shop's
        for frame in (
            {"type": "take", "conversation": conversation},
            {"type": "open", "conversation": conversation},
            {"type": "message", "conversation": conversation, "text": "hi", "client_id": "c1"},
            {"type": "close", "conversation": conversation},
        ):
            await send(outsider, **frame)
            error = await recv(outsider)
            assert (error["type"], error["code"], error["conversation"]) == (
                "error",
                "not_found",
                conversation,
            )
        await send(outsider, type="hello")
        assert (await recv(outsider))["queue"] == []
        await silent(visitor, console)
    stored = await db(Conversation.objects.get, pk=conversation)
    assert (stored.status, stored.assigned_agent_id) == ("waiting_for_agent", None)
    assert await db(Message.objects.filter(conversation_id=conversation, role="agent").count) == 0


async def test_an_agent_who_did_not_take_the_conversation_is_forbidden_to_act_in_it() -> None:
    bot = await db(make_bot)
    ann, bob = await db(make_user, "ann", staff=True), await db(make_user, "bob", staff=True)
    async with AsyncExitStack() as stack:
        console, visitor, conversation = await taken(stack, bot, ann)
        intruder = await stack.enter_async_context(agent_socket(bob))
        await send(intruder, type="take", conversation=conversation)
        error = await recv(intruder)
        assert (error["code"], error["conversation"]) == ("taken", conversation)
        for frame in (
            {"type": "message", "conversation": conversation, "text": "hi", "client_id": "b1"},
            {"type": "release", "conversation": conversation},
            {"type": "close", "conversation": conversation},
            {"type": "typing", "conversation": conversation},
        ):
            await send(intruder, **frame)
            error = await recv(intruder)
            assert (error["type"], error["code"]) == ("error", "forbidden"), frame
            assert error["client_id"] == frame.get("client_id")
        await silent(visitor, console)
    stored = await db(Conversation.objects.select_related("assigned_agent").get, pk=conversation)
    assert (stored.status, stored.assigned_agent.username) == ("with_agent", "ann")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "message", "conversation": 1, "text": "  "}, "empty"),
        ({"type": "message", "conversation": 1, "text": "x" * 2001}, "too_long"),
        ({"type": "take", "conversation": "1"}, "not_found"),
        ({"type": "take"}, "not_found"),
        ({"type": "subscribe"}, "unknown_type"),
    ],
)
async def test_a_malformed_agent_frame_gets_an_error(frame: dict[str, Any], code: str) -> None:
    ann = await db(make_user, "ann", staff=True)
    async with agent_socket(ann) as console:
        await send(console, **frame)
        assert (await recv(console))["code"] == code
        await console.send_to(text_data="{oops")
        assert (await recv(console))["code"] == "bad_json"


async def test_the_real_application_signs_agents_in_by_their_session_cookie(settings: Any) -> None:
    settings.EMBEDDING_PRELOAD = False  # importing the entry point must not load the model
    app = importlib.import_module("chatbot.asgi").application
    ann = await db(User.objects.create_user, username="ann", first_name="Ann", is_staff=True)
    async with agent_socket(ann, app=app) as console:
        assert console.welcome["agent"] == {"id": ann.pk, "name": "Ann"}
    anonymous = agent_communicator(None, app=app)
    await anonymous.connect(timeout=WAIT)
    assert await closed_with(anonymous) == closecodes.AGENT_FORBIDDEN


async def test_a_queue_change_while_the_database_is_away_leaves_the_console_open(monkeypatch: Any) -> None:
    from django.db import OperationalError

    from agents import live

    bot = await db(make_bot, name="Shop")
    ann = await db(make_user, "ann", staff=True)
    lists = live.agent_lists
    async with AsyncExitStack() as stack:
        console = await stack.enter_async_context(agent_socket(ann))
        first = await stack.enter_async_context(connected(bot))
        second = await stack.enter_async_context(connected(bot))
        one = (await hello(first))["conversation"]
        two = (await hello(second))["conversation"]

        def unreachable(**kwargs: Any) -> Any:
            raise OperationalError("connection refused")

        monkeypatch.setattr(live, "agent_lists", unreachable)
        await ask_for_person(first)  # its queue update fails: nothing sent, the socket stays
        await silent(console)
        monkeypatch.setattr(live, "agent_lists", lists)  # the database is back
        await ask_for_person(second)
        update = await recv(console)
        assert update["type"] == "queue.update" and [c["id"] for c in update["queue"]] == [one, two]

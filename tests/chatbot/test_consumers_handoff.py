"""Asking for a person over the chat websocket: the handoff frame and requests in words,
the queue position, no agent online, the wait limit, leaving an email address, and the
welcome's status. Conversations with an agent: tests/agents/test_live_consumer.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents import live
from agents.models import Presence
from chatbot.models import Bot, Conversation, Message, Visitor
from chatbot.tokens import visitor_token_sign
from knowledge.models import Entry
from tests.agents.conftest import make_user
from tests.agents.test_live_consumer import QUIET, agent_socket, silent
from tests.chatbot.ws_client import connected, db, hello, recv, routes, rows, send, tabs_settled, until
from tests.factories import make_bot, make_conversation
from tests.fixtures.llm import Candidate, MatchResult, StandIn

pytestmark = pytest.mark.django_db(transaction=True)


def agent_online(bot: Bot | None = None, name: str = "ann") -> Any:
    user = make_user(name, agent=True, bots=[bot] if bot else None)
    Presence.objects.create(user=user)
    return user


async def test_with_no_agent_online_the_visitor_may_leave_an_email_address() -> None:
    bot = await db(make_bot)
    await db(Presence.objects.create, user=await db(make_user, "stale", staff=True))
    await db(
        Presence.objects.filter(user__username="stale").update, last_seen=timezone.now() - timedelta(hours=1)
    )
    async with connected(bot) as first, connected(bot) as second:
        conversation = (await hello(first))["conversation"]
        token = (await db(Visitor.objects.get)).uid
        await hello(second, visitor_token_sign(bot=bot, uid=token))
        await tabs_settled(f"conversation.{conversation}", first, second)
        await send(first, type="handoff")
        answer = await recv(first)
        assert answer == {
            "type": "handoff.unavailable",
            "message": "No one from our team is available to chat right now. Leave your email address "
            "and we will get back to you.",
            "ask_email": True,
        }
        assert await recv(second) == answer  # every tab knows

        await send(first, type="contact", email="not-an-address")
        error = await recv(first)
        assert (error["type"], error["code"]) == ("error", "bad_email")
        assert (await db(Visitor.objects.get)).email == ""
        await send(first, type="contact", email=" ann@example.com ")
        assert await recv(first) == {"type": "contact.saved"}

    stored = await db(Conversation.objects.select_related("visitor").get, pk=conversation)
    assert (stored.status, stored.needs_followup, stored.visitor.email) == ("open", True, "ann@example.com")
    assert stored.handoff_requested_at is not None


async def test_the_answer_follows_the_visitors_language() -> None:
    bot = await db(make_bot)
    async with connected(bot) as comm:
        await send(comm, type="hello", visitor=None, lang="zh-CN")
        await recv(comm)
        await send(comm, type="handoff")
        assert "客服" in (await recv(comm))["message"]
        await db(agent_online)
        await send(comm, type="handoff")
        assert (await recv(comm))["message"] == "您排在第 1 位，客服人员马上就来。"


async def test_an_agent_online_only_for_another_bot_does_not_count() -> None:
    shop, other = await db(make_bot, name="Shop"), await db(make_bot, name="Other")
    await db(agent_online, other)
    async with connected(shop) as comm:
        await hello(comm)
        await send(comm, type="handoff")
        assert (await recv(comm))["type"] == "handoff.unavailable"
    assert (await db(Conversation.objects.get)).status == "open"


@pytest.mark.parametrize("text", ["I want to talk to a human", "转人工"])
async def test_a_message_asking_for_a_person_is_acknowledged_and_handed_off_not_answered(
    text: str, kb: StandIn
) -> None:
    bot = await db(make_bot)
    await db(agent_online)
    async with connected(bot, matcher=kb) as comm:
        conversation = (await hello(comm))["conversation"]
        await send(comm, type="message", text=text, client_id="c1")
        ack = await recv(comm)
        waiting = await recv(comm)
        await silent(comm)  # no reply.*
    assert ack["type"] == "ack" and ack["client_id"] == "c1"
    assert (waiting["type"], waiting["position"]) == ("handoff.waiting", 1)
    assert await db(rows, conversation) == [("visitor", text, "", "complete")]  # no bot reply row
    assert ack["id"] == (await db(Message.objects.get)).pk
    assert kb.calls == []
    assert (await db(Conversation.objects.get)).status == "waiting_for_agent"


async def test_a_question_that_merely_mentions_an_agent_gets_the_bots_answer(kb: StandIn) -> None:
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Spain?", answer="We ship to Spain.")
    kb.result = MatchResult("answer", [Candidate(entry.pk, entry.question, entry.answer, 0.9)])
    await db(agent_online)
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="Is your shipping agent in Spain?", client_id="c1")
        end = (await until(comm, "reply.end"))[-1]
    assert end["text"] == "We ship to Spain."
    assert (await db(Conversation.objects.get)).status == "open"


async def test_no_agent_in_time_sends_the_visitor_back_to_the_bot(settings: Any, kb: StandIn) -> None:
    settings.HANDOFF_WAIT_SECONDS = 0.3
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Hours?", answer="9 to 5.")
    ann = await db(make_user, "ann", staff=True)
    async with agent_socket(ann, app=routes(kb)) as console, connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="handoff")
        assert (await recv(comm))["type"] == "handoff.waiting"
        assert len((await recv(console))["queue"]) == 1
        timed_out = await recv(comm)
        assert (timed_out["type"], timed_out["ask_email"]) == ("handoff.unavailable", True)
        assert "busy" in timed_out["message"]
        assert (await recv(console))["queue"] == []  # the queue shrank
        stored = await db(Conversation.objects.get)
        assert (stored.status, stored.needs_followup) == ("open", True)

        kb.result = MatchResult("answer", [Candidate(entry.pk, entry.question, entry.answer, 0.9)])
        await send(comm, type="message", text="When are you open?", client_id="c2")
        assert (await until(comm, "reply.end"))[-1]["text"] == "9 to 5."


async def test_a_visitor_reconnecting_after_the_wait_limit_is_told_at_once(settings: Any) -> None:
    settings.HANDOFF_WAIT_SECONDS = 120
    bot = await db(make_bot)
    conversation = await db(
        make_conversation,
        bot,
        status="waiting_for_agent",
        needs_followup=True,
        handoff_requested_at=timezone.now() - timedelta(minutes=3),
    )
    token = visitor_token_sign(bot=bot, uid=(await db(Visitor.objects.get)).uid)
    async with connected(bot) as comm:
        welcome = await hello(comm, token)
        assert (welcome["conversation"], welcome["status"], welcome["agent"]) == (
            conversation.pk,
            "open",
            None,
        )
        assert (await recv(comm))["type"] == "handoff.unavailable"
    assert (await db(Conversation.objects.get)).status == "open"


async def test_a_visitor_reconnecting_while_waiting_keeps_the_wait_timed(settings: Any) -> None:
    settings.HANDOFF_WAIT_SECONDS = 0.5
    bot = await db(make_bot)
    await db(agent_online)
    async with connected(bot) as comm:
        welcome = await hello(comm)
        await send(comm, type="handoff")
        assert (await recv(comm))["position"] == 1
    token = visitor_token_sign(bot=bot, uid=(await db(Visitor.objects.get)).uid)
    async with connected(bot) as comm:
        again = await hello(comm, token)
        assert (again["conversation"], again["status"]) == (welcome["conversation"], "waiting_for_agent")
        await send(comm, type="handoff")  # what the widget does after a reload: the position
        assert (await recv(comm))["position"] == 1
        assert (await recv(comm))["type"] == "handoff.unavailable"  # this connection timed it
    assert (await db(Conversation.objects.get)).status == "open"


async def test_asking_again_while_an_agent_has_the_conversation_names_the_agent() -> None:
    bot = await db(make_bot)
    ann = await db(agent_online)
    async with connected(bot) as comm:
        conversation = (await hello(comm))["conversation"]
        await db(live.conversation_take, agent=ann, conversation_id=conversation)
        await send(comm, type="handoff")
        assert await recv(comm) == {
            "type": "agent.joined",
            "agent": "ann",
            "message": "ann joined the conversation.",
        }
        await send(comm, type="message", text="human please", client_id="c1")  # to the agent, as words
        assert (await recv(comm))["type"] == "ack"
        assert await comm.receive_nothing(timeout=QUIET)
    assert (await db(Conversation.objects.get)).status == "with_agent"


async def test_a_yes_right_after_the_fallback_takes_its_offer_of_a_person(settings: Any, kb: StandIn) -> None:
    settings.LLM_PROVIDER = ""  # no LLM: unanswered questions get the fallback, which offers a person
    bot = await db(make_bot)
    await db(agent_online)
    async with connected(bot, matcher=kb) as comm:
        conversation = (await hello(comm))["conversation"]
        await send(comm, type="message", text="My sofa arrived broken", client_id="c1")
        assert (await until(comm, "reply.end"))[-1]["source"] == "fallback"
        await send(comm, type="message", text="Yes please!", client_id="c2")
        ack, waiting = await recv(comm), await recv(comm)
        await silent(comm)  # no reply.* for the yes
    assert (ack["type"], ack["client_id"]) == ("ack", "c2")
    assert (waiting["type"], waiting["position"]) == ("handoff.waiting", 1)
    assert [row[0] for row in await db(rows, conversation)] == ["visitor", "bot", "visitor"]


async def test_a_yes_after_any_other_reply_is_an_ordinary_message(kb: StandIn) -> None:
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Sofa?", answer="Our sofas ship in 5 days.")
    kb.result = MatchResult("answer", [Candidate(entry.pk, entry.question, entry.answer, 0.9)])
    await db(agent_online)
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="When does a sofa ship?", client_id="c1")
        await until(comm, "reply.end")
        await send(comm, type="message", text="yes", client_id="c2")
        assert (await until(comm, "reply.end"))[-1]["source"] == "knowledge"
    assert (await db(Conversation.objects.get)).status == "open"

"""Replies over the chat websocket: the knowledge base, the LLM (the fake provider over real
HTTP), the fallback, partial replies, the queue, and several tabs of one visitor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatbot import reply_store, replying
from chatbot.chat.relay import conversation_lock
from chatbot.llm.types import ChatRequest, ChatResult, Delta
from chatbot.models import Conversation, Message
from chatbot.replying import Matcher
from devtools.fake_llm.server import FakeLLMServer
from knowledge.models import Entry
from tests.chatbot.ws_client import (
    WAIT,
    communicator,
    connected,
    db,
    hello,
    recv,
    rows,
    send,
    tabs_settled,
    two_tabs,
    until,
)
from tests.factories import make_bot
from tests.fixtures.llm import Candidate, MatchResult, StandIn

pytestmark = pytest.mark.django_db(transaction=True)
# Fixtures shared with test_consumers.py (re-exported so pytest finds them here too).


class Gate:
    """Wraps the LLM stream (still the fake server over HTTP) and holds it after the first
    delta until ``open()``: proves a delta is forwarded before the reply is complete."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.event = asyncio.Event()
        self.visitor_messages_at_call: list[int] = []
        real = replying.stream_chat

        async def gated(request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
            self.visitor_messages_at_call.append(await db(Message.objects.filter(role="visitor").count))
            first = True
            async for item in real(request):
                yield item
                if first:
                    first = False
                    await self.event.wait()

        monkeypatch.setattr(replying, "stream_chat", gated)

    def open(self) -> None:
        self.event.set()


def deltas(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "reply.delta")


async def test_a_knowledge_answer_is_acknowledged_then_sent_at_once(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Refunds?", answer="5 days.")
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        kb.result = MatchResult("answer", [Candidate(entry.pk, entry.question, entry.answer, 0.93)])
        await send(comm, type="message", text=" How long do refunds take? ", client_id="c1")
        frames = await until(comm, "reply.end")
        await comm.receive_nothing()
    visitor, reply = await db(list, Message.objects.order_by("id"))
    assert frames == [
        {"type": "ack", "client_id": "c1", "id": visitor.pk},
        {"type": "reply.start", "id": reply.pk, "source": "knowledge"},
        {"type": "reply.delta", "id": reply.pk, "text": "5 days."},
        {
            "type": "reply.end",
            "id": reply.pk,
            "text": "5 days.",
            "source": "knowledge",
            "status": "complete",
            "entry_id": entry.pk,
            "score": 0.93,
            "sources": [],
        },
    ]
    assert (visitor.text, reply.source, reply.matched_entry_id, reply.score) == (
        "How long do refunds take?",
        "knowledge",
        entry.pk,
        0.93,
    )
    # Timed from the visitor's message: one moment, the whole answer at once.
    assert reply.ttft_ms is not None and reply.ttft_ms == reply.total_ms
    assert fake.requests == []


async def test_an_llm_reply_streams_each_delta_as_it_arrives_and_is_stored_with_its_usage(
    kb: StandIn, llm: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="Can you send to Norway?", client_id="c1")
        ack, start, first = await recv(comm), await recv(comm), await recv(comm)
        gate.open()  # the LLM is held until the first delta has reached the visitor
        rest = await until(comm, "reply.end")
    visitor, reply = await db(list, Message.objects.order_by("id"))
    assert gate.visitor_messages_at_call == [1]  # stored before the LLM was asked
    assert ack == {"type": "ack", "client_id": "c1", "id": visitor.pk}
    assert start == {"type": "reply.start", "id": reply.pk, "source": "llm"}
    assert first == {"type": "reply.delta", "id": reply.pk, "text": "You "}
    end = rest[-1]
    assert deltas([first, *rest]) == end["text"] == reply.text == "You said: Can you send to Norway?"
    assert {f["id"] for f in rest} == {reply.pk}
    assert end == {
        "type": "reply.end",
        "id": reply.pk,
        "text": reply.text,
        "source": "llm",
        "status": "complete",
        "entry_id": None,
        "score": None,
        "sources": [],
    }
    assert (reply.source, reply.status, reply.llm_model) == ("llm", "complete", "openai-test-model")
    assert reply.prompt_tokens and reply.completion_tokens
    assert reply.ttft_ms is not None and reply.total_ms is not None
    assert reply.ttft_ms <= reply.total_ms


async def test_an_llm_reply_with_references_reports_the_best_entry(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Shipping?", answer="EU and UK.")
    kb.result = MatchResult("reference", [Candidate(entry.pk, entry.question, entry.answer, 0.6)])
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="Norway?", client_id="c1")
        end = (await until(comm, "reply.end"))[-1]
    assert (end["source"], end["entry_id"], end["score"]) == ("llm", entry.pk, 0.6)
    assert "EU and UK." in fake.requests[-1].body["messages"][0]["content"]


async def test_without_an_llm_a_plausible_entry_is_suggested_and_the_conversation_flagged(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_PROVIDER="")
    bot = await db(make_bot)
    entry = await db(Entry.objects.create, bot=bot, question="Shipping?", answer="EU and UK.")
    kb.result = MatchResult("reference", [Candidate(entry.pk, entry.question, entry.answer, 0.6)])
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="Do you send parcels to Norway?", client_id="c1")
        end = (await until(comm, "reply.end"))[-1]
    assert (end["source"], end["entry_id"], end["score"]) == ("knowledge", entry.pk, 0.6)
    assert end["text"] == "This may help:\n\nShipping?\nEU and UK."
    reply = await db(Message.objects.get, pk=end["id"])
    assert (reply.source, reply.matched_entry_id, reply.text) == ("knowledge", entry.pk, end["text"])
    assert (await db(Conversation.objects.get, pk=reply.conversation_id)).needs_followup is True
    assert fake.requests == []


async def test_without_an_llm_the_other_plausible_entries_are_offered_as_related_questions(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_PROVIDER="")
    bot = await db(make_bot, reference_threshold=0.3)
    made = [
        await db(Entry.objects.create, bot=bot, question=q, answer=a)
        for q, a in (("Shipping?", "EU and UK."), ("Customs fees?", "Paid by you."), ("Returns?", "30 days."))
    ]
    scores = (0.6, 0.45, 0.2)  # the third is below the reference threshold: not offered
    candidates = [Candidate(e.pk, e.question, e.answer, score) for e, score in zip(made, scores, strict=True)]
    kb.result = MatchResult("reference", candidates)
    async with connected(bot, matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="Do you send parcels to Norway?", client_id="c1")
        end = (await until(comm, "reply.end"))[-1]
        kb.result = MatchResult("reference", candidates[:2])
        await send(comm, type="message", text="运费谁出", client_id="c2")
        chinese = (await until(comm, "reply.end"))[-1]
    assert end["text"] == "This may help:\n\nShipping?\nEU and UK.\n\nRelated questions:\n- Customs fees?"
    assert (end["entry_id"], end["score"]) == (made[0].pk, 0.6)
    assert chinese["text"].endswith("\n\n相关问题：\n- Customs fees?")
    assert fake.requests == []


async def test_without_an_llm_the_fallback_is_sent_and_the_conversation_flagged(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_PROVIDER="")
    bot = await db(make_bot, fallback_reply="Shall I find a person?")
    async with connected(bot, matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text="Something odd", client_id="c1")
        frames = await until(comm, "reply.end")
        await comm.receive_nothing()  # no error: having no LLM is a choice, not a failure
    assert [f["type"] for f in frames] == ["ack", "reply.start", "reply.delta", "reply.end"]
    assert frames[1]["source"] == "fallback"
    assert (frames[-1]["text"], frames[-1]["source"], frames[-1]["status"]) == (
        "Shall I find a person?",
        "fallback",
        "complete",
    )
    conversation = await db(Conversation.objects.get, pk=welcome["conversation"])
    assert conversation.needs_followup is True
    reply = await db(Message.objects.get, pk=frames[-1]["id"])
    assert reply.ttft_ms is not None and reply.ttft_ms == reply.total_ms
    assert fake.requests == []


@pytest.mark.parametrize("script", ["status=500", "status=401", "tokens=0 finish=content_filter"])
async def test_an_llm_failing_before_any_text_sends_the_fallback_and_says_so(
    script: str, kb: StandIn, llm: Callable[..., None]
) -> None:
    llm(LLM_MAX_RETRIES=0)
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text=f"hi [[fake: {script}]]", client_id="c1")
        frames = await until(comm, "reply.end")
        error = await recv(comm)
    assert frames[1] == {"type": "reply.start", "id": frames[-1]["id"], "source": "fallback"}
    assert (frames[-1]["source"], frames[-1]["status"]) == ("fallback", "complete")
    assert (error["type"], error["code"], error["client_id"]) == ("error", "llm_unavailable", "c1")
    assert (await db(Conversation.objects.get, pk=welcome["conversation"])).needs_followup is True


async def test_an_open_circuit_sends_the_fallback_without_asking_the_llm(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_MAX_RETRIES=0, LLM_BREAKER_FAILURES=1)
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="[[fake: status=503]]", client_id="c1")
        await until(comm, "error")
        await send(comm, type="message", text="hello again", client_id="c2")
        frames = await until(comm, "error")
    assert frames[-2]["source"] == "fallback"
    assert (frames[-1]["code"], frames[-1]["client_id"]) == ("llm_unavailable", "c2")
    assert len(fake.requests) == 1


async def test_a_stream_broken_mid_reply_is_stored_as_partial_and_the_visitor_told(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text="[[fake: tokens=4 drop_after=2]]", client_id="c1")
        frames = await until(comm, "reply.end")
        error = await recv(comm)
    assert deltas(frames) == "tok1 tok2 "
    end = frames[-1]
    assert (end["text"], end["source"], end["status"]) == ("tok1 tok2 ", "llm", "partial")
    assert (error["code"], error["client_id"]) == ("llm_unavailable", "c1")
    assert (await db(rows, welcome["conversation"]))[-1] == ("bot", "tok1 tok2 ", "llm", "partial")


async def test_a_message_sent_during_a_reply_is_queued_not_interleaved(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text="first [[fake: tokens=5 delay_ms=5]]", client_id="c1")
        await send(comm, type="message", text="second [[fake: tokens=3]]", client_id="c2")
        frames = await until(comm, "reply.end")
        frames += await until(comm, "reply.end")
    kinds = [f["type"] for f in frames]
    one_reply = ["ack", "reply.start", *["reply.delta"] * 5, "reply.end"]
    assert kinds == [*one_reply, "ack", "reply.start", *["reply.delta"] * 3, "reply.end"]
    assert (frames[0]["client_id"], frames[8]["client_id"]) == ("c1", "c2")
    assert [r[:2] for r in await db(rows, welcome["conversation"])] == [
        ("visitor", "first [[fake: tokens=5 delay_ms=5]]"),
        ("bot", "tok1 tok2 tok3 tok4 tok5 "),
        ("visitor", "second [[fake: tokens=3]]"),
        ("bot", "tok1 tok2 tok3 "),
    ]


async def test_a_connection_queues_at_most_chat_queue_max_messages(
    settings: Any, kb: StandIn, llm: Callable[..., None]
) -> None:
    settings.CHAT_QUEUE_MAX = 1
    llm(LLM_PROVIDER="")
    async with connected(await db(make_bot), matcher=kb) as comm:
        welcome = await hello(comm)
        async with conversation_lock(welcome["conversation"]):  # hold the replies back
            for n in range(3):
                await send(comm, type="message", text=f"m{n}", client_id=f"c{n}")
            busy = await recv(comm)
        frames = await until(comm, "reply.end")
        frames += await until(comm, "reply.end")
        await comm.receive_nothing()
    assert (busy["type"], busy["code"], busy["client_id"]) == ("error", "busy", "c2")
    assert [f["client_id"] for f in frames if f["type"] == "ack"] == ["c0", "c1"]
    assert [r[1] for r in await db(rows, welcome["conversation"]) if r[0] == "visitor"] == ["m0", "m1"]


async def test_the_visitors_other_tabs_see_the_message_and_the_streamed_reply(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as first, connected(bot, matcher=kb) as second:
        welcome = await hello(first)
        assert (await hello(second, welcome["visitor"]))["conversation"] == welcome["conversation"]
        await tabs_settled(f"conversation.{welcome['conversation']}", first, second)
        await send(first, type="message", text="Hello there", client_id="c1")
        own = await until(first, "reply.end")
        other = await until(second, "reply.end")
        await first.receive_nothing()
        await second.receive_nothing()
    visitor, reply = await db(list, Message.objects.order_by("id"))
    assert [f["type"] for f in own if f["type"] == "message"] == []  # the sender gets its ack instead
    assert other[0] == {
        "type": "message",
        "id": visitor.pk,
        "role": "visitor",
        "text": "Hello there",
        "source": "",
        "status": "complete",
        "created": other[0]["created"],
    }
    # reply.start and reply.end are the same frames; the deltas carry the same text, merged.
    assert [f for f in other[1:] if f["type"] != "reply.delta"] == [
        f for f in own[1:] if f["type"] != "reply.delta"
    ]
    assert _streamed(other) == _streamed(own) == own[-1]["text"]
    assert own[-1]["id"] == reply.pk


def _streamed(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "reply.delta")


async def test_other_tabs_get_a_fast_stream_in_fewer_larger_pieces(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    """Per-token frames go to the tab that asked; the others get merged pieces (each one a
    channel-layer message, a Redis round trip with several processes)."""
    llm()
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with two_tabs(bot, matcher=kb) as (first, second, _):
        await send(first, type="message", text="Hi [[fake: tokens=12 delay_ms=1]]", client_id="c1")
        own = await until(first, "reply.end")
        other = await until(second, "reply.end")
    own_deltas = [f for f in own if f["type"] == "reply.delta"]
    other_deltas = [f for f in other if f["type"] == "reply.delta"]
    assert len(own_deltas) == 12
    assert 1 <= len(other_deltas) < 12
    assert _streamed(other) == _streamed(own)


async def test_two_tabs_sending_at_once_get_one_reply_after_the_other(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with two_tabs(bot, matcher=kb) as (first, second, welcome):
        async with conversation_lock(welcome["conversation"]):
            for comm, text in ((first, "from A [[fake: tokens=4]]"), (second, "from B [[fake: tokens=2]]")):
                await send(comm, type="message", text=text, client_id=text[5])  # each its own id
                await send(comm, type="ping")  # both workers are now waiting for the conversation
                await until(comm, "pong")
        seen_by_a = await until(first, "reply.end")
        seen_by_b = await until(second, "reply.end") + await until(second, "reply.end")
    assert [r[:2] for r in await db(rows, welcome["conversation"])] == [
        ("visitor", "from A [[fake: tokens=4]]"),
        ("bot", "tok1 tok2 tok3 tok4 "),
        ("visitor", "from B [[fake: tokens=2]]"),
        ("bot", "tok1 tok2 "),
    ]
    assert seen_by_a[-1]["text"] == "tok1 tok2 tok3 tok4 "
    ends = [f["text"] for f in seen_by_b if f["type"] == "reply.end"]
    assert ends == ["tok1 tok2 tok3 tok4 ", "tok1 tok2 "]  # A's reply (relayed), then its own


async def test_a_tab_closing_mid_reply_keeps_the_text_so_far_and_ends_the_reply_in_other_tabs(
    kb: StandIn, llm: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    Gate(monkeypatch)  # never opened: the stream stays after its first delta
    llm()
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with connected(bot, matcher=kb) as watcher:
        first = await _connect(bot, matcher=kb)
        welcome = await hello(first)
        await hello(watcher, welcome["visitor"])
        await tabs_settled(f"conversation.{welcome['conversation']}", first, watcher)
        await send(first, type="message", text="[[fake: tokens=5]]", client_id="c1")
        await until(first, "reply.delta")
        await first.disconnect(timeout=20)
        frames = await until(watcher, "reply.end")
    assert frames[-1]["status"] == "partial" and frames[-1]["text"] == "tok1 "
    assert (await db(rows, welcome["conversation"]))[-1] == ("bot", "tok1 ", "llm", "partial")


async def test_while_an_agent_has_the_conversation_only_the_ack_is_sent(
    kb: StandIn, llm: Callable[..., None], django_user_model: Any, fake: FakeLLMServer
) -> None:
    async with connected(await db(make_bot), matcher=kb) as comm:
        welcome = await hello(comm)
        agent = await db(django_user_model.objects.create_user, "agent", password="x")
        await db(
            Conversation.objects.filter(pk=welcome["conversation"]).update,
            status="with_agent",
            assigned_agent=agent,
        )
        await send(comm, type="message", text="are you there?", client_id="c1")
        assert (await recv(comm))["type"] == "ack"
        await comm.receive_nothing()
    assert [r[0] for r in await db(rows, welcome["conversation"])] == ["visitor"]
    assert fake.requests == []


# --- helpers -----------------------------------------------------------------------------


async def _connect(bot: Any, *, matcher: Matcher) -> Any:
    comm = communicator(bot, matcher=matcher)
    assert (await comm.connect(timeout=WAIT))[0]
    return comm


async def test_a_failure_before_the_message_is_stored_is_a_server_error(
    kb: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(arrivals: list[Any]) -> None:
        raise RuntimeError("database is down")

    monkeypatch.setattr(reply_store, "visitor_messages_batch", broken)
    async with connected(await db(make_bot), matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="hello", client_id="c1")
        error = await recv(comm)
        await send(comm, type="ping")
        assert await recv(comm) == {"type": "pong"}  # still open, and nothing else was sent
    assert (error["type"], error["code"], error["client_id"]) == ("error", "server_error", "c1")
    assert await db(Message.objects.count) == 0


async def test_a_failure_mid_reply_ends_it_as_failed_and_keeps_what_was_sent_as_partial(
    kb: StandIn, llm: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database is down")

    llm()
    monkeypatch.setattr(reply_store, "reply_rows_batch", broken)
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text="[[fake: tokens=3]]", client_id="c1")
        frames = await until(comm, "reply.end")
        error = await recv(comm)
    assert (frames[-1]["status"], frames[-1]["text"], frames[-1]["source"]) == (
        "failed",
        "tok1 tok2 tok3 ",
        "llm",
    )
    assert (error["code"], error["client_id"]) == ("server_error", "c1")
    assert await db(rows, welcome["conversation"]) == [
        ("visitor", "[[fake: tokens=3]]", "", "complete"),
        ("bot", "tok1 tok2 tok3 ", "llm", "partial"),  # the reply could not be saved; its text is kept
    ]

"""The reply pipeline (knowledge base first, then the LLM, then the fallback), with a
stand-in for knowledge.matching and the fake provider over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import aclosing
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatbot import reply_store, reply_summary
from chatbot.models import Conversation, Message
from chatbot.prompting import SUMMARY_HEADING
from chatbot.reply_events import Acked, AgentHasConversation, Delta, Ended, ReplyEvent, Started
from chatbot.reply_store import Arrival, reply_save
from chatbot.replying import Matcher, reply_stream
from devtools.fake_llm.server import FakeLLMServer
from knowledge.models import Entry
from tests.factories import make_bot, make_conversation, make_message
from tests.fixtures.llm import Candidate, MatchResult, StandIn

pytestmark = pytest.mark.django_db(transaction=True)


async def conversation(**bot_fields: Any) -> Conversation:
    bot = await sync_to_async(make_bot)(**bot_fields)
    return await sync_to_async(make_conversation)(bot)


async def events_of(conversation_id: int, text: str, *, matcher: Matcher) -> list[ReplyEvent]:
    async with aclosing(reply_stream(conversation_id=conversation_id, text=text, matcher=matcher)) as events:
        return [event async for event in events]


async def messages(conversation_id: int) -> list[Message]:
    return await sync_to_async(list)(Message.objects.filter(conversation_id=conversation_id).order_by("id"))


async def reload(conv: Conversation) -> Conversation:
    return await sync_to_async(Conversation.objects.get)(pk=conv.pk)


async def entry(conv: Conversation, question: str, answer: str) -> Entry:
    return await sync_to_async(Entry.objects.create)(bot_id=conv.bot_id, question=question, answer=answer)


async def test_it_answers_from_the_knowledge_base_without_the_llm(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    conv = await conversation()
    refunds = await entry(conv, "How long do refunds take?", "Five working days.")
    kb.result = MatchResult("answer", [Candidate(refunds.pk, refunds.question, refunds.answer, 0.93)])
    events = await events_of(conv.pk, "  refund time? ", matcher=kb)
    visitor, reply = await messages(conv.pk)
    assert events == [
        Acked(visitor.pk, "refund time?", visitor.created_at),
        Started(reply.pk, "knowledge"),
        Delta(reply.pk, "Five working days."),
        Ended(reply.pk, "Five working days.", "knowledge", "complete", 0.93, entry_id=refunds.pk),
    ]
    assert (visitor.role, visitor.text, visitor.source) == ("visitor", "refund time?", "")
    assert (reply.role, reply.source, reply.matched_entry_id, reply.score) == (
        "bot",
        "knowledge",
        refunds.pk,
        0.93,
    )
    assert kb.calls == [(conv.bot_id, "refund time?", 1)]  # stored before anything was asked
    assert fake.requests == []


async def test_it_streams_from_the_llm_with_the_references(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("dashscope", LLM_PRICES={"dashscope-test-model": (Decimal("2"), Decimal("6"))})
    conv = await conversation()
    first = await entry(conv, "Do you ship abroad?", "We ship to the EU and the UK.")
    kb.result = MatchResult(
        "reference",
        [
            Candidate(first.pk, first.question, first.answer, 0.66),
            Candidate(999, "Customs?", "You pay them.", 0.55),
            Candidate(998, "Gift cards?", "Not yet.", 0.2),  # under the reference threshold
        ],
    )
    events = await events_of(conv.pk, "Can you send to Norway?", matcher=kb)
    assert [type(e).__name__ for e in events] == ["Acked", "Started"] + ["Delta"] * 7 + ["Ended"]
    end = events[-1]
    assert isinstance(end, Ended) and end.result is not None
    assert (end.text, end.source, end.status, end.score) == (
        "You said: Can you send to Norway?",
        "llm",
        "complete",
        0.66,
    )
    system = fake.requests[-1].body["input"]["messages"][0]["content"]
    assert "We ship to the EU and the UK." in system and "You pay them." in system
    assert "Gift cards?" not in system
    reply = (await messages(conv.pk))[-1]
    assert (reply.source, reply.text, reply.llm_model, reply.matched_entry_id) == (
        "llm",
        end.text,
        "dashscope-test-model",
        first.pk,
    )
    assert (reply.prompt_tokens, reply.completion_tokens, reply.tokens_estimated) == (
        end.result.prompt_tokens,
        7,
        False,
    )
    assert reply.cost == end.result.cost and reply.cost is not None and reply.cost > 0
    assert reply.ttft_ms is not None and reply.total_ms is not None and reply.ttft_ms <= reply.total_ms


async def test_without_an_llm_it_sends_the_fallback_and_flags_the_conversation(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_PROVIDER="")
    conv = await conversation(fallback_reply="Let me find a person for you.")
    events = await events_of(conv.pk, "Something odd", matcher=kb)
    assert [e.text for e in events if isinstance(e, Delta)] == ["Let me find a person for you."]
    end = events[-1]
    assert isinstance(end, Ended) and (end.source, end.error) == ("fallback", "no LLM is configured")
    assert end.person_offered
    assert (await messages(conv.pk))[-1].source == "fallback"
    assert (await reload(conv)).needs_followup is True
    assert fake.requests == []


@pytest.mark.parametrize("script", ["status=401", "status=500", "tokens=0 finish=content_filter"])
async def test_an_llm_failure_before_any_text_becomes_the_fallback(
    script: str, kb: StandIn, llm: Callable[..., None]
) -> None:
    llm(LLM_MAX_RETRIES=0)
    conv = await conversation(answer_only_from_knowledge=False)
    events = await events_of(conv.pk, f"hi [[fake: {script}]]", matcher=kb)
    end = events[-1]
    assert isinstance(end, Ended) and end.source == "fallback" and end.error
    assert (await reload(conv)).needs_followup is True


async def test_an_open_circuit_becomes_the_fallback_at_once(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_MAX_RETRIES=0, LLM_BREAKER_FAILURES=1)
    conv = await conversation(answer_only_from_knowledge=False)
    await events_of(conv.pk, "[[fake: status=503]]", matcher=kb)
    end = (await events_of(conv.pk, "hello again", matcher=kb))[-1]
    assert isinstance(end, Ended) and end.source == "fallback"
    assert end.error.startswith("CircuitOpenError")
    assert len(fake.requests) == 1


async def test_a_stream_broken_after_some_text_is_stored_as_partial(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    conv = await conversation(answer_only_from_knowledge=False)
    events = await events_of(conv.pk, "[[fake: tokens=4 drop_after=2]]", matcher=kb)
    assert [e.text for e in events if isinstance(e, Delta)] == ["tok1 ", "tok2 "]
    end = events[-1]
    assert isinstance(end, Ended) and (end.text, end.status, end.source) == (
        "tok1 tok2 ",
        "partial",
        "llm",
    )
    reply = (await messages(conv.pk))[-1]
    assert (reply.text, reply.status, reply.source, reply.llm_model) == (
        "tok1 tok2 ",
        "partial",
        "llm",
        end.result.model,
    )
    assert reply.tokens_estimated is True


async def test_a_visitor_leaving_mid_reply_keeps_the_partial_text(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    conv = await conversation(answer_only_from_knowledge=False)
    async with aclosing(
        reply_stream(conversation_id=conv.pk, text="[[fake: tokens=50 delay_ms=20]]", matcher=kb)
    ) as events:
        async for event in events:
            if isinstance(event, Delta):
                break
    reply = (await messages(conv.pk))[-1]
    assert (reply.role, reply.text, reply.status) == ("bot", "tok1 ", "partial")


async def test_a_broken_knowledge_base_still_gets_an_llm_answer(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    llm()
    kb.error = RuntimeError("index corrupt")
    conv = await conversation(answer_only_from_knowledge=False)
    end = (await events_of(conv.pk, "hi", matcher=kb))[-1]
    assert isinstance(end, Ended) and end.source == "llm"


async def test_the_bot_stays_silent_while_an_agent_has_the_conversation(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, django_user_model: Any
) -> None:
    conv = await conversation()
    agent = await sync_to_async(django_user_model.objects.create_user)("agent", password="x")
    await sync_to_async(Conversation.objects.filter(pk=conv.pk).update)(
        status="with_agent", assigned_agent=agent
    )
    events = await events_of(conv.pk, "are you there?", matcher=kb)
    [visitor] = await messages(conv.pk)
    assert events == [
        Acked(visitor.pk, "are you there?", visitor.created_at),
        AgentHasConversation(visitor.pk, "are you there?", visitor.created_at),
    ]
    assert kb.calls == [] and fake.requests == []


async def test_a_closed_conversation_reopens(kb: StandIn, llm: Callable[..., None]) -> None:
    conv = await conversation()
    await sync_to_async(Conversation.objects.filter(pk=conv.pk).update)(status="closed")
    await events_of(conv.pk, "hello again", matcher=kb)
    assert (await reload(conv)).status == "open"


async def test_earlier_turns_are_sent_as_context(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    conv = await conversation(answer_only_from_knowledge=False, system_prompt="Be brief.")
    await events_of(conv.pk, "My name is Ann.", matcher=kb)
    await events_of(conv.pk, "What is my name?", matcher=kb)
    sent = fake.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "Be brief."),
        ("user", "My name is Ann."),
        ("assistant", "You said: My name is Ann."),
        ("user", "What is my name?"),
    ]


async def test_it_rejects_an_empty_or_huge_message(kb: StandIn) -> None:
    conv = await conversation()
    with pytest.raises(ValueError, match="empty"):
        await events_of(conv.pk, "   ", matcher=kb)
    with pytest.raises(ValueError, match="longer than"):
        await events_of(conv.pk, "x" * 4001, matcher=kb)
    assert await messages(conv.pk) == []


async def test_old_turns_are_folded_into_the_summary_in_the_background(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_CONTEXT_TOKENS=120)
    conv = await conversation(answer_only_from_knowledge=False, system_prompt="Be brief.")
    for n in range(1, 5):
        await events_of(conv.pk, f"Question number {n} with some words to fill the budget.", matcher=kb)
    await reply_summary.summary_refreshes_wait()
    conv = await reload(conv)
    assert conv.summary.startswith("You said: Earlier summary:")  # the fake echoes the summary request
    assert conv.summary_until is not None
    fake.reset()
    await events_of(conv.pk, "Last one", matcher=kb)
    sent = fake.requests[0].body["messages"]
    assert f"{SUMMARY_HEADING}\n{conv.summary}" in sent[0]["content"]
    covered = [m["content"] for m in sent[1:] if "number 1 " in m["content"]]
    assert covered == []


async def test_a_summary_refresh_only_folds_what_is_not_covered(llm: Callable[..., None]) -> None:
    llm()
    conv = await conversation()
    for n in range(6):
        await sync_to_async(make_message)(
            conv,
            role="visitor" if n % 2 == 0 else "bot",
            text=f"turn {n} " * 20,
            source="" if n % 2 == 0 else "llm",
        )
    # Each turn is about 39 tokens: half of 240 keeps the last visitor/bot pair, folds the first four.
    assert await reply_summary.summary_refresh(conversation_id=conv.pk, budget=240) is True
    first = await reload(conv)
    ids = [m.pk for m in await messages(conv.pk)]
    assert first.summary_until == ids[3]
    assert "turn 3" in first.summary and "turn 4" not in first.summary
    # Nothing new to fold:
    assert await reply_summary.summary_refresh(conversation_id=conv.pk, budget=240) is False
    assert (await reload(conv)).summary_until == ids[3]


async def test_replies_of_many_conversations_at_once_share_transactions_and_stay_apart(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    bot = await sync_to_async(make_bot)()
    convs = [await sync_to_async(make_conversation)(bot) for _ in range(8)]
    refunds = await entry(convs[0], "How long do refunds take?", "Five working days.")
    kb.result = MatchResult("answer", [Candidate(refunds.pk, refunds.question, refunds.answer, 0.93)])
    stores_before = (reply_store.commits().visitor_messages.batches, reply_store.commits().replies.batches)
    results = await asyncio.gather(
        *(events_of(c.pk, f"refunds? ({n})", matcher=kb) for n, c in enumerate(convs))
    )
    stores = (
        reply_store.commits().visitor_messages.batches - stores_before[0],
        reply_store.commits().replies.batches - stores_before[1],
    )
    assert stores[0] < len(convs) and stores[1] < len(convs)  # grouped, not one trip each
    for n, (conv, events) in enumerate(zip(convs, results, strict=True)):
        visitor, reply = await messages(conv.pk)
        assert (visitor.role, visitor.text) == ("visitor", f"refunds? ({n})")
        assert (reply.role, reply.text, reply.source, reply.matched_entry_id) == (
            "bot",
            "Five working days.",
            "knowledge",
            refunds.pk,
        )
        assert events[:2] == [
            Acked(visitor.pk, visitor.text, visitor.created_at),
            Started(reply.pk, "knowledge"),
        ]
        assert isinstance(events[-1], Ended) and events[-1].reply_id == reply.pk


async def test_llm_replies_of_many_conversations_at_once_read_their_histories_together(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    bot = await sync_to_async(make_bot)(answer_only_from_knowledge=False)
    convs = [await sync_to_async(make_conversation)(bot) for _ in range(6)]
    for n, conv in enumerate(convs):
        await sync_to_async(make_message)(conv, role="visitor", text=f"earlier question {n}")
        await sync_to_async(make_message)(conv, role="bot", text=f"earlier answer {n}", source="llm")
    reads_before = reply_store.commits().history.batches
    await asyncio.gather(*(events_of(c.pk, f"follow-up {n}", matcher=kb) for n, c in enumerate(convs)))
    assert reply_store.commits().history.batches - reads_before < len(convs)  # grouped, not one trip each
    for n in range(len(convs)):
        sent = [json.dumps(r.body) for r in fake.requests if f"follow-up {n}" in json.dumps(r.body)]
        assert len(sent) == 1 and f"earlier answer {n}" in sent[0]
        assert [m for m in range(len(convs)) if f"earlier answer {m}" in sent[0]] == [n]


def test_storing_messages_together_fails_only_the_one_whose_conversation_is_gone() -> None:
    kept, gone = make_conversation(), make_conversation()
    gone_id = gone.pk
    gone.delete()
    results = reply_store.visitor_messages_batch(
        [Arrival(kept.pk, "hello", 0.0), Arrival(gone_id, "anyone?", 0.0)]
    )
    assert isinstance(results[1], Conversation.DoesNotExist)
    stored = list(Message.objects.filter(conversation=kept).values_list("role", "text"))
    assert stored == [("visitor", "hello"), ("bot", "")]
    assert isinstance(results[0], reply_store.Stored)
    assert results[0].message_id == Message.objects.get(role="visitor").pk
    (alone,) = reply_store.visitor_messages_batch([Arrival(gone_id, "still there?", 0.0)])
    assert isinstance(alone, Conversation.DoesNotExist)


async def test_replies_saved_together_use_the_reserved_rows_and_flag_only_the_fallbacks() -> None:
    first, second = await sync_to_async(make_conversation)(), await sync_to_async(make_conversation)()
    reserved = await sync_to_async(make_message)(
        first, role="bot", source="llm", status="pending", text="From t"
    )
    ids = await asyncio.gather(
        reply_save(conversation_id=first.pk, reply_id=reserved.pk, text="From the KB.", source="knowledge"),
        reply_save(
            conversation_id=second.pk,
            reply_id=None,
            text="A person will help.",
            source="fallback",
            needs_followup=True,
        ),
    )
    assert ids[0] == reserved.pk
    assert (await sync_to_async(Message.objects.get)(pk=ids[1])).text == "A person will help."
    flags = dict(await sync_to_async(list)(Conversation.objects.values_list("pk", "needs_followup")))
    assert flags == {first.pk: False, second.pk: True}

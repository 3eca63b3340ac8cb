"""The reply pipeline with the company's documents: passages in the prompt as numbered
sources, the sources kept with the reply and sent in ``reply.end``, and the bot that answers
only from its knowledge. A stand-in for the documents (``chatbot.replying.Documents``) and
the knowledge base, the fake provider over real HTTP; the last tests search real passages."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents.selectors.gaps import gap_questions_of
from agents.selectors.stats import Period, gap_count
from chatbot.chat.relay import reply_frames
from chatbot.models import Bot, Conversation, Message
from chatbot.prompting import SOURCES_START, SOURCES_STRICT, sources_budget
from chatbot.reply_events import NOT_KNOWN, SUGGESTED, Delta, Ended, ReplyEvent, SourceLink
from chatbot.replying import Documents, reply_stream
from devtools.fake_llm.server import FakeLLMServer
from knowledge import embeddings
from knowledge.docs import retrieval
from knowledge.docs.retrieval import PassageHit
from knowledge.models import Entry, Passage, PassageEmbedding, Source
from tests.factories import make_bot, make_conversation
from tests.fixtures.llm import Candidate, MatchResult, StandIn

pytestmark = pytest.mark.django_db(transaction=True)

CARE = PassageHit(
    11, 1, "Care guide", "https://shop.example/help/care", ("Oak",), "Oil it twice a year.", 0.7, 0.9
)
WARRANTY = PassageHit(
    12, 2, "Warranty terms", "https://shop.example/help/warranty", (), "Two years.", 0.6, 0.8
)
MANUAL = PassageHit(13, 3, "Assembly manual", "", ("Bolts",), "Tighten after a week.", 0.5, 0.7)


@dataclass
class DocumentsStandIn:
    """``chatbot.replying.Documents`` answering ``hits``, recording what it was asked."""

    hits: list[PassageHit] = field(default_factory=list)
    error: Exception | None = None
    searches: list[tuple[int, str, int]] = field(default_factory=list)  # (bot id, question, limit)
    budgets: list[int] = field(default_factory=list)

    async def passages_search(self, bot: Bot, question: str, *, limit: int = 5) -> list[PassageHit]:
        self.searches.append((bot.pk, question, limit))
        if self.error:
            raise self.error
        return list(self.hits)

    def passages_for_prompt(self, hits: list[PassageHit], *, token_budget: int) -> list[PassageHit]:
        self.budgets.append(token_budget)
        return hits


@pytest.fixture
def docs() -> DocumentsStandIn:
    return DocumentsStandIn()


async def conversation(**bot_fields: Any) -> Conversation:
    bot = await sync_to_async(make_bot)(**bot_fields)
    return await sync_to_async(make_conversation)(bot)


async def events_of(conv: Conversation, text: str, kb: StandIn, docs: Documents) -> list[ReplyEvent]:
    stream = reply_stream(conversation_id=conv.pk, text=text, matcher=kb, documents=docs)
    async with aclosing(stream) as events:
        return [event async for event in events]


async def entry(conv: Conversation, question: str, answer: str) -> Entry:
    return await sync_to_async(Entry.objects.create)(bot_id=conv.bot_id, question=question, answer=answer)


async def last_reply(conv: Conversation) -> Message:
    return await sync_to_async(Message.objects.filter(conversation=conv, role="bot").latest)("id")


def link(hit: PassageHit) -> SourceLink:
    return SourceLink(hit.title, hit.url, hit.passage_id)


def system_prompt(fake: FakeLLMServer) -> str:
    return fake.requests[-1].body["messages"][0]["content"]


async def test_the_passages_go_to_the_llm_numbered_and_the_reply_keeps_those_it_cites(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation()
    docs.hits = [CARE, WARRANTY, MANUAL]
    events = await events_of(conv, '[[fake: text="Frames have two years [2]."]] Warranty?', kb, docs)

    system = system_prompt(fake)
    assert SOURCES_STRICT in system
    assert "[1] Care guide\nSection: Oak\nURL: https://shop.example/help/care\nOil it twice a year." in system
    assert "[2] Warranty terms\nURL: https://shop.example/help/warranty\nTwo years." in system
    assert "[3] Assembly manual\nSection: Bolts\nTighten after a week." in system
    assert docs.searches == [(conv.bot_id, '[[fake: text="Frames have two years [2]."]] Warranty?', 5)]
    assert docs.budgets == [sources_budget()]

    end = events[-1]
    assert isinstance(end, Ended) and (end.source, end.text) == ("llm", "Frames have two years [2].")
    assert end.sources == (link(WARRANTY),)
    reply = await last_reply(conv)
    assert reply.sources == [
        {"title": "Warranty terms", "url": "https://shop.example/help/warranty", "passage_id": 12}
    ]
    frames = reply_frames(end, client_id="m-1")
    assert (
        frames.own
        == frames.others
        == [
            {
                "type": "reply.end",
                "id": reply.pk,
                "text": "Frames have two years [2].",
                "source": "llm",
                "status": "complete",
                "entry_id": None,
                "score": None,
                "sources": [
                    {"title": "Warranty terms", "url": "https://shop.example/help/warranty", "passage_id": 12}
                ],
            }
        ]
    )


async def test_a_reply_citing_nothing_keeps_every_source_it_was_given_most_relevant_first(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation()
    docs.hits = [CARE, MANUAL]
    end = (await events_of(conv, '[[fake: text="Oil it."]] Care?', kb, docs))[-1]
    assert isinstance(end, Ended) and end.sources == (link(CARE), link(MANUAL))
    assert [s["passage_id"] for s in (await last_reply(conv)).sources] == [11, 13]


async def test_answering_only_from_knowledge_it_refuses_without_asking_the_llm(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation(fallback_reply="I don't know that. Shall I find a person?")
    events = await events_of(conv, "Who won the 1998 World Cup?", kb, docs)

    assert fake.requests == []
    assert [e.text for e in events if isinstance(e, Delta)] == ["I don't know that. Shall I find a person?"]
    end = events[-1]
    assert isinstance(end, Ended)
    assert (end.source, end.error, end.sources, end.person_offered) == ("fallback", NOT_KNOWN, (), True)
    # Chosen on purpose: the visitor is not told that the assistant is unavailable.
    frames = reply_frames(end, client_id="m-1")
    assert [f["type"] for f in frames.own] == ["reply.end"]
    assert frames.own[0]["sources"] == []
    reply = await last_reply(conv)
    assert (reply.source, reply.sources) == ("fallback", [])
    assert (await sync_to_async(Conversation.objects.get)(pk=conv.pk)).needs_followup is True

    # ...and the question is a knowledge gap.
    bots = Bot.objects.filter(pk=conv.bot_id)
    gaps = await sync_to_async(gap_questions_of)(bots=bots, days=1)
    assert [(g.text, g.reply_source) for g in gaps] == [("Who won the 1998 World Cup?", "fallback")]
    today = timezone.localdate()
    period = Period(today - timedelta(days=1), today, timezone.get_current_timezone())
    assert await sync_to_async(gap_count)(bot_ids=[conv.bot_id], period=period) == 1


async def test_with_the_setting_off_the_llm_answers_from_general_knowledge(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation(answer_only_from_knowledge=False)
    end = (await events_of(conv, "Who won the 1998 World Cup?", kb, docs))[-1]
    assert isinstance(end, Ended) and (end.source, end.text, end.sources) == (
        "llm",
        "You said: Who won the 1998 World Cup?",
        (),
    )
    assert SOURCES_START not in system_prompt(fake)
    assert (await last_reply(conv)).sources == []


async def test_with_the_setting_off_the_passages_are_offered_without_the_only_instruction(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation(answer_only_from_knowledge=False)
    docs.hits = [CARE]
    await events_of(conv, "Care?", kb, docs)
    system = system_prompt(fake)
    assert "[1] Care guide" in system and SOURCES_STRICT not in system


async def test_a_relevant_entry_alone_is_enough_to_ask_the_llm(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation()
    shipping = await entry(conv, "Do you ship abroad?", "To the EU.")
    kb.result = MatchResult("reference", [Candidate(shipping.pk, shipping.question, shipping.answer, 0.6)])
    end = (await events_of(conv, "Can you send to Oslo?", kb, docs))[-1]
    assert isinstance(end, Ended) and (end.source, end.sources) == ("llm", ())
    assert "To the EU." in system_prompt(fake)
    assert len(docs.searches) == 1


async def test_a_sure_knowledge_base_answer_searches_no_documents(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation()
    docs.hits = [CARE]
    shipping = await entry(conv, "Do you ship abroad?", "To the EU.")
    kb.result = MatchResult("answer", [Candidate(shipping.pk, shipping.question, shipping.answer, 0.95)])
    end = (await events_of(conv, "Do you ship abroad?", kb, docs))[-1]
    assert isinstance(end, Ended) and (end.source, end.sources) == ("knowledge", ())
    assert docs.searches == [] and fake.requests == []


async def test_a_failed_document_search_counts_as_nothing_relevant(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer, docs: DocumentsStandIn
) -> None:
    conv = await conversation()
    docs.error = RuntimeError("index broken")
    end = (await events_of(conv, "Oak care?", kb, docs))[-1]
    assert isinstance(end, Ended) and (end.source, end.error) == ("fallback", NOT_KNOWN)
    assert fake.requests == []


async def test_a_reply_cut_off_keeps_the_sources_it_was_given(
    kb: StandIn, llm: Callable[..., None], docs: DocumentsStandIn
) -> None:
    llm(LLM_MAX_RETRIES=0)
    conv = await conversation()
    docs.hits = [CARE, WARRANTY]
    end = (await events_of(conv, "[[fake: tokens=4 drop_after=2]] Care?", kb, docs))[-1]
    assert isinstance(end, Ended) and end.status == "partial"
    assert end.sources == (link(CARE), link(WARRANTY))
    assert [s["passage_id"] for s in (await last_reply(conv)).sources] == [11, 12]


async def test_a_reply_the_visitor_left_keeps_the_sources_it_was_given(
    kb: StandIn, llm: Callable[..., None], docs: DocumentsStandIn
) -> None:
    conv = await conversation()
    docs.hits = [WARRANTY]
    stream = reply_stream(
        conversation_id=conv.pk, text="[[fake: tokens=50 delay_ms=20]] Warranty?", matcher=kb, documents=docs
    )
    async with aclosing(stream) as events:
        async for event in events:
            if isinstance(event, Delta):
                break
    reply = await last_reply(conv)
    assert (reply.status, reply.sources) == ("partial", [link(WARRANTY).as_dict()])


async def test_an_llm_failure_before_any_text_is_the_fallback_without_sources(
    kb: StandIn, llm: Callable[..., None], docs: DocumentsStandIn
) -> None:
    llm(LLM_MAX_RETRIES=0)
    conv = await conversation()
    docs.hits = [CARE]
    end = (await events_of(conv, "[[fake: status=500]] Care?", kb, docs))[-1]
    assert isinstance(end, Ended) and (end.source, end.sources) == ("fallback", ())
    assert (await last_reply(conv)).sources == []


# --- Real passages, searched by knowledge.docs.retrieval ----------------------------------


def _documents(bot: Bot, pages: list[tuple[str, str, str]]) -> None:
    """Ready sources of ``(title, url, text)``, one passage each, with their vectors."""
    model = embeddings.model_name()
    vectors = embeddings.encode_documents([text for _, _, text in pages], model)
    for (title, url, text), vector in zip(pages, vectors, strict=True):
        source = Source.objects.create(bot=bot, kind="url", title=title, url=url, status="ready")
        passage = Passage.objects.create(
            source=source, bot=bot, position=0, title=title, text=text, text_hash=Passage.hash_text(text)
        )
        unit = np.asarray(vector, dtype="<f4")
        PassageEmbedding.objects.create(
            passage=passage, model_name=model, dim=len(unit), vector=(unit / np.linalg.norm(unit)).tobytes()
        )


PAGES = [
    (
        "Warranty terms",
        "https://shop.example/help/warranty",
        "Every sofa and table frame has a ten-year warranty against breakage. To claim it, send a "
        "photo of the damage and your order number to care@shop.example.",
    ),
    (
        "Shipping and returns",
        "https://shop.example/help/shipping",
        "We deliver within five working days. Unused items can be returned within 30 days for a "
        "full refund; we collect large furniture ourselves.",
    ),
    (
        "Caring for oak",
        "https://shop.example/help/oak",
        "Oil solid oak furniture twice a year with a soft cloth. Wipe spills at once and keep it "
        "away from radiators so the wood does not crack.",
    ),
]


async def test_real_passages_ground_the_reply_and_an_unrelated_question_is_refused(
    kb: StandIn, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    conv = await conversation(fallback_reply="I don't know. Shall I find a person?")
    bot = await sync_to_async(Bot.objects.get)(pk=conv.bot_id)
    await sync_to_async(_documents)(bot, PAGES)

    events = await events_of(conv, "How long is the warranty on a sofa frame?", kb, retrieval)
    end = events[-1]
    assert isinstance(end, Ended) and end.source == "llm"
    assert end.sources and end.sources[0].url == "https://shop.example/help/warranty"
    assert "ten-year warranty" in system_prompt(fake)
    stored = (await last_reply(conv)).sources
    assert stored[0]["title"] == "Warranty terms" and isinstance(stored[0]["passage_id"], int)

    end = (await events_of(conv, "What is the capital of Mongolia?", kb, retrieval))[-1]
    assert isinstance(end, Ended) and (end.source, end.error, end.sources) == ("fallback", NOT_KNOWN, ())
    assert len(fake.requests) == 1


async def test_without_an_llm_the_most_relevant_passage_is_offered_as_a_suggestion_with_its_source(
    kb: StandIn, docs: DocumentsStandIn
) -> None:
    docs.hits = [CARE, WARRANTY]
    conv = await conversation()
    events = await events_of(conv, "How do I look after the oak table?", kb, docs)

    end = events[-1]
    assert isinstance(end, Ended)
    assert (end.source, end.error, end.sources) == ("knowledge", SUGGESTED, (link(CARE),))
    assert end.text == "This may help:\n\nCare guide › Oak\nOil it twice a year."
    assert reply_frames(end, client_id="m-1").own[0]["sources"] == [
        {"title": "Care guide", "url": "https://shop.example/help/care", "passage_id": 11}
    ]
    reply = await last_reply(conv)
    assert (reply.source, reply.matched_entry_id, reply.sources[0]["passage_id"]) == ("knowledge", None, 11)
    assert (await sync_to_async(Conversation.objects.get)(pk=conv.pk)).needs_followup is True


async def test_without_an_llm_and_no_relevant_passage_it_is_the_fallback(
    kb: StandIn, docs: DocumentsStandIn
) -> None:
    conv = await conversation(fallback_reply="I don't know that. Shall I find a person?")
    events = await events_of(conv, "Who won the 1998 World Cup?", kb, docs)
    end = events[-1]
    assert isinstance(end, Ended)
    assert (end.source, end.sources) == ("fallback", ())
    assert end.text == "I don't know that. Shall I find a person?"
    assert docs.searches == [(conv.bot_id, "Who won the 1998 World Cup?", 5)]


async def test_the_default_fallback_speaks_the_questions_language_and_a_written_one_is_sent_as_written(
    kb: StandIn, docs: DocumentsStandIn
) -> None:
    default = await conversation()  # the bot's fallback is still the default English one
    chinese = (await events_of(default, "今天天气怎么样？", kb, docs))[-1]
    english = (await events_of(default, "What's the weather like?", kb, docs))[-1]
    assert isinstance(chinese, Ended) and isinstance(english, Ended)
    assert chinese.source == "fallback"
    assert chinese.text == "抱歉，这个问题我暂时无法回答。需要为您转接人工客服吗？"
    assert english.text == "Sorry, I can't answer that right now. Would you like to talk to a person?"
    written = await conversation(fallback_reply="I don't know that. Shall I find a person?")
    own = (await events_of(written, "今天天气怎么样？", kb, docs))[-1]
    assert isinstance(own, Ended) and own.text == "I don't know that. Shall I find a person?"

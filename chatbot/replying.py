"""The reply pipeline, shared by the website (the chat socket, through ``chatbot.chat.relay``)
and ``manage.py chat``.

``reply_stream`` stores the visitor's message first (``Acked``), then answers from the
knowledge base when it is sure, otherwise streams from the LLM (with the best entries as
references when the match decision is "reference", and the relevant passages of the company's
documents as numbered sources), otherwise sends the bot's fallback reply and flags the
conversation for follow-up: ``Started``, ``Delta``s, ``Ended``. A bot that answers only from
the company's knowledge (``Bot.answer_only_from_knowledge``) sends the fallback instead of
asking the LLM when neither an entry nor a passage is relevant. While an agent has the
conversation the bot stays silent (``AgentHasConversation``). The events are
``chatbot.reply_events``'; what is stored and read, ``chatbot.reply_store``'s; the knowledge
base is asked through a ``Matcher`` (``knowledge.matching`` unless the caller passes another),
the documents through ``Documents`` (``knowledge.docs.retrieval``).

An LLM reply keeps (``Ended.sources``, ``Message.sources``) the passages it cites ([n] in
its text), or when it cites none the ones it was given, most relevant first.

A reply that is abandoned (the caller stops reading because the visitor left, or something
breaks) is settled in one place, ``reply_stream``: what the visitor was sent is kept as
partial, an empty reserved row is removed.

``handoff_message_stream``: a visitor message the bot is not to answer (it asks for a person).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from asgiref.sync import sync_to_async

from chatbot import inflight
from chatbot.handoff import visitor_message_store
from chatbot.llm import ChatResult, LLMError, is_configured, stream_chat
from chatbot.llm import Delta as TextDelta
from chatbot.models import Bot, Conversation, Message
from chatbot.prompting import (
    build_prompt,
    cited,
    sources_budget,
)
from chatbot.reply_events import (
    NO_LLM,
    NOT_KNOWN,
    SUGGESTED,
    Acked,
    AgentHasConversation,
    Delta,
    Ended,
    ReplyEvent,
    SourceLink,
    Started,
)
from chatbot.reply_store import (
    Arrival,
    HistoryAsk,
    Stored,
    history_read,
    reply_abandon,
    reply_save,
    visitor_message_save,
)
from chatbot.reply_summary import summary_refresh_schedule
from chatbot.services import DuplicateMessage
from knowledge import matching
from knowledge.docs import retrieval
from knowledge.docs.retrieval import PassageHit
from knowledge.lexical import is_cjk
from knowledge.matching import Candidate, MatchResult

log = logging.getLogger(__name__)

MAX_QUESTION_LENGTH = 4000
MAX_REFERENCES = 3
MAX_PASSAGES = 5  # searched; passages_for_prompt keeps those within sources_budget()
DEFAULT_FALLBACK = "Sorry, I can't answer that right now. Would you like to talk to a person?"
# A bot whose fallback is still the default answers a Chinese (Japanese, Korean) question
# with this one; a fallback the company wrote is sent as written.
DEFAULT_FALLBACK_CJK = "抱歉，这个问题我暂时无法回答。需要为您转接人工客服吗？"
# Without an LLM, a plausibly right entry (the reference band), or else the most relevant
# passage of the documents, is offered as it is, said to be a suggestion; the conversation
# is flagged for a person to check.
SUGGESTION_INTRO = {False: "This may help:", True: "以下内容可能对您有帮助："}
# The other entries of the reference band, by their questions: what the visitor may have
# meant instead when the first is not it.
SUGGESTION_RELATED = {False: "Related questions:", True: "相关问题："}


class Matcher(Protocol):
    """What the pipeline asks of the knowledge base (``knowledge.matching`` in production)."""

    async def amatch(self, bot: Bot, text: str, *, fresh_revision: bool = False) -> MatchResult: ...


class Documents(Protocol):
    """What the pipeline asks of the company's documents (``knowledge.docs.retrieval`` in
    production)."""

    async def passages_search(self, bot: Bot, question: str, *, limit: int = 5) -> list[PassageHit]: ...

    def passages_for_prompt(self, hits: list[PassageHit], *, token_budget: int) -> list[PassageHit]: ...


@dataclass(frozen=True, slots=True)
class _Reply:
    """The bot's reply to one stored visitor message."""

    stored: Stored
    id: int  # the row reserved for it
    streamed: list[str]  # what the visitor was sent of it so far (an LLM reply)
    given: list[SourceLink]  # the passages the LLM was given: what a partial reply keeps


async def reply_stream(
    *,
    conversation_id: int,
    text: str,
    client_id: str | None = None,
    matcher: Matcher = matching,
    documents: Documents = retrieval,
) -> AsyncIterator[ReplyEvent]:
    """Store and answer one visitor message (see the module's docstring). Raises ValueError
    for an empty or too long message, Conversation.DoesNotExist when the conversation is gone."""
    text = text.strip()
    if not text:
        raise ValueError("The message is empty.")
    if len(text) > MAX_QUESTION_LENGTH:
        raise ValueError(f"The message is longer than {MAX_QUESTION_LENGTH} characters.")
    async with inflight.keeper().flight():
        try:
            stored = await visitor_message_save(
                Arrival(conversation_id, text, time.perf_counter(), client_id)
            )
        except DuplicateMessage as duplicate:
            original = duplicate.original
            yield Acked(original.pk, original.text, original.created_at, duplicate=True)
            return
        streamed: list[str] = []
        given: list[SourceLink] = []
        try:
            yield Acked(stored.message_id, text, stored.created)
            if stored.reply_id is None:  # no row reserved: an agent has the conversation
                yield AgentHasConversation(stored.message_id, text, stored.created)
                return
            reply = _Reply(stored, stored.reply_id, streamed, given)
            async with aclosing(_answer(reply, text, matcher, documents)) as events:
                async for event in events:
                    yield event
        except BaseException:
            # Abandoned before the reply was saved (cancelled, or broken): keep what was sent.
            await reply_abandon(
                conversation_id=stored.conversation_id,
                reply_id=stored.reply_id,
                streamed="".join(streamed),
                sources=given,
            )
            raise


async def _answer(
    reply: _Reply, question: str, matcher: Matcher, documents: Documents
) -> AsyncIterator[ReplyEvent]:
    bot = reply.stored.bot
    match = await kb_match(bot, question, matcher=matcher, fresh_revision=True)
    decision = match.decision if match is not None else "none"
    candidates = list(match.candidates) if match is not None else []
    references: list[Candidate] = []
    if decision == "reference" and match is not None:
        threshold = match.thresholds.reference if match.thresholds is not None else bot.reference_threshold
        references = [c for c in candidates if c.score >= threshold][:MAX_REFERENCES] or candidates[:1]
    if decision == "answer" and candidates:
        best = candidates[0]
        events = _whole(
            reply, best.answer, Message.Source.KNOWLEDGE, entry_id=best.entry_id, score=best.score
        )
    elif not is_configured(bot) and references:
        events = _suggest(reply, question, references)
    elif not is_configured(bot):
        # No LLM to read them: the most relevant passage of the documents is offered as it is.
        passages = await documents_search(bot, question, documents=documents)
        if passages:
            events = _suggest_passage(reply, question, passages[0])
        else:
            events = _fallback(reply, NO_LLM, question)
    else:
        # Searched only now: a sure knowledge-base answer needs none.
        passages = await documents_search(bot, question, documents=documents)
        if bot.answer_only_from_knowledge and not references and not passages:
            events = _fallback(reply, NOT_KNOWN, question)
        else:
            events = _llm_reply(reply, question, references, passages)
    async with aclosing(events) as stream:
        async for event in stream:
            yield event


async def kb_match(
    bot: Bot, text: str, *, matcher: Matcher = matching, fresh_revision: bool = False
) -> MatchResult | None:
    """The knowledge base's verdict; None when it failed."""
    try:
        return await matcher.amatch(bot, text, fresh_revision=fresh_revision)
    except Exception:
        # A broken index must not cost the visitor their answer: the LLM still replies.
        log.exception("knowledge-base match failed for bot %s", bot.pk)
        return None


async def documents_search(bot: Bot, text: str, *, documents: Documents = retrieval) -> list[PassageHit]:
    """The relevant passages of the bot's documents that fit the prompt, most relevant
    first; [] when none is, or the search failed."""
    try:
        hits = await documents.passages_search(bot, text, limit=MAX_PASSAGES)
        return documents.passages_for_prompt(hits, token_budget=sources_budget())
    except Exception:
        # Like a broken index: the visitor still gets a reply (entries, or the fallback).
        log.exception("document search failed for bot %s", bot.pk)
        return []


def reply_sources(text: str, given: list[SourceLink]) -> list[SourceLink]:
    """The sources ``text`` cites ([n] is ``given[n - 1]``), or all of ``given`` when it cites none."""
    numbers = cited(text, len(given))
    return [given[n - 1] for n in numbers] if numbers else list(given)


async def _llm_reply(
    reply: _Reply, question: str, references: list[Candidate], passages: list[PassageHit]
) -> AsyncIterator[ReplyEvent]:
    stored = reply.stored
    reply.given[:] = [SourceLink(p.title, p.url, p.passage_id) for p in passages]
    # Read only now: an answer from the knowledge base needs no history.
    history, history_truncated = await history_read(
        HistoryAsk(stored.conversation_id, after=stored.summary_until, before=stored.message_id)
    )
    prompt = build_prompt(
        bot=stored.bot,
        question=question,
        history=history,
        summary=stored.summary,
        references=references,
        passages=passages,
        strict=stored.bot.answer_only_from_knowledge,
    )
    # The best reference is kept with the reply: which entries the LLM leaned on, and how close.
    entry_id, score = (references[0].entry_id, references[0].score) if references else (None, None)
    result: ChatResult | None = None
    failure: LLMError | None = None
    # The LLM times its own call; the stored timings count from the visitor's message.
    offset_ms = stored.elapsed_ms()
    keeper = inflight.keeper()
    keeper.track(reply.id, reply.streamed)  # its text so far reaches the database while it streams
    try:
        async with aclosing(stream_chat(prompt.request)) as items:
            async for item in items:
                if isinstance(item, TextDelta):
                    if not reply.streamed:
                        yield Started(reply.id, Message.Source.LLM)
                    reply.streamed.append(item.text)
                    yield Delta(reply.id, item.text)
                else:
                    result = item
    except LLMError as err:
        failure = err
    finally:
        keeper.untrack(reply.id)
    if failure is not None and not (failure.partial_text or reply.streamed):
        events = _fallback(reply, f"{type(failure).__name__}: {failure}", question)
    elif failure is not None:
        events = _partial(reply, failure, entry_id=entry_id, score=score, offset_ms=offset_ms)
    elif result is None or not result.text.strip():
        events = _fallback(reply, "the LLM sent an empty reply", question)
    else:
        sources = reply_sources(result.text, reply.given)
        saved = await reply_save(
            conversation_id=stored.conversation_id,
            reply_id=reply.id,
            text=result.text,
            source=Message.Source.LLM,
            entry_id=entry_id,
            score=score,
            result=result,
            elapsed_ms=offset_ms,
            sources=sources,
        )
        if prompt.history_dropped or history_truncated:
            summary_refresh_schedule(stored.conversation_id)
        ended = Ended(
            saved,
            result.text,
            Message.Source.LLM,
            Message.Status.COMPLETE,
            score,
            result,
            entry_id=entry_id,
            sources=tuple(sources),
        )
        events = _sent(reply, ended)
    async with aclosing(events) as stream:
        async for event in stream:
            yield event


def _partial(
    reply: _Reply, err: LLMError, *, entry_id: int | None, score: float | None, offset_ms: int
) -> AsyncIterator[ReplyEvent]:
    """The stream broke after some text: store what the visitor saw, marked partial."""
    text = err.partial_text or "".join(reply.streamed)
    log.warning("LLM reply broke after %d characters: %s", len(text), err)
    return _whole(
        reply,
        text,
        Message.Source.LLM,
        status=Message.Status.PARTIAL,
        entry_id=entry_id,
        score=score,
        result=err.partial,
        error=str(err),
        elapsed_ms=offset_ms,
        sources=reply.given,
    )


def _suggest(reply: _Reply, question: str, references: list[Candidate]) -> AsyncIterator[ReplyEvent]:
    best, cjk = references[0], is_cjk(question)
    text = f"{SUGGESTION_INTRO[cjk]}\n\n{best.question}\n{best.answer}"
    if others := list(dict.fromkeys(c.question for c in references[1:] if c.question != best.question)):
        text += f"\n\n{SUGGESTION_RELATED[cjk]}\n" + "\n".join(f"- {q}" for q in others)
    return _whole(
        reply,
        text,
        Message.Source.KNOWLEDGE,
        entry_id=best.entry_id,
        score=best.score,
        needs_followup=True,
        error=SUGGESTED,
    )


def _suggest_passage(reply: _Reply, question: str, best: PassageHit) -> AsyncIterator[ReplyEvent]:
    heading = " › ".join(dict.fromkeys([best.title, *best.headings]))
    text = f"{SUGGESTION_INTRO[is_cjk(question)]}\n\n{heading}\n{best.text}"
    return _whole(
        reply,
        text,
        Message.Source.KNOWLEDGE,
        score=best.confidence,
        needs_followup=True,
        error=SUGGESTED,
        sources=[SourceLink(best.title, best.url, best.passage_id)],
    )


def _fallback(reply: _Reply, reason: str, question: str) -> AsyncIterator[ReplyEvent]:
    log.info("fallback reply in conversation %s: %s", reply.stored.conversation_id, reason)
    text = fallback_text(reply.stored.bot.fallback_reply, question)
    return _whole(reply, text, Message.Source.FALLBACK, needs_followup=True, error=reason)


def fallback_text(configured: str, question: str) -> str:
    """The bot's fallback reply for ``question``: as the company wrote it, or the default in
    the question's script (English or Chinese) when it is empty or still the default."""
    configured = configured.strip()
    if configured and configured != DEFAULT_FALLBACK:
        return configured
    return DEFAULT_FALLBACK_CJK if is_cjk(question) else DEFAULT_FALLBACK


async def _whole(
    reply: _Reply,
    text: str,
    source: str,
    *,
    status: str = Message.Status.COMPLETE,
    entry_id: int | None = None,
    score: float | None = None,
    result: ChatResult | None = None,
    needs_followup: bool = False,
    error: str = "",
    elapsed_ms: int | None = None,
    sources: list[SourceLink] | None = None,
) -> AsyncIterator[ReplyEvent]:
    """A reply stored as a whole (a knowledge-base answer, a suggestion, the fallback, what
    was left of a broken stream), then sent."""
    saved = await reply_save(
        conversation_id=reply.stored.conversation_id,
        reply_id=reply.id,
        text=text,
        source=source,
        status=status,
        entry_id=entry_id,
        score=score,
        result=result,
        needs_followup=needs_followup,
        elapsed_ms=reply.stored.elapsed_ms() if elapsed_ms is None else elapsed_ms,
        sources=sources or (),
    )
    ended = Ended(saved, text, source, status, score, result, error, entry_id, tuple(sources or ()))
    async for event in _sent(reply, ended):
        yield event


async def _sent(reply: _Reply, ended: Ended) -> AsyncIterator[ReplyEvent]:
    """``ended``, after ``Started`` and the text when the visitor has not been sent them."""
    if not reply.streamed:
        yield Started(reply.id, ended.source)
        yield Delta(reply.id, ended.text)
    elif ended.source != Message.Source.LLM:  # the fallback after an LLM reply of blanks
        yield Delta(reply.id, ended.text)
    yield ended


async def handoff_message_stream(
    *, conversation_id: int, text: str, client_id: str | None = None
) -> AsyncIterator[ReplyEvent]:
    """A visitor message the bot is not to answer (it asks for a person): ``Acked``, then
    ``AgentHasConversation`` when an agent has the conversation. A message sent again (its
    ``client_id`` is stored) is only acknowledged again."""
    try:
        message, status = await sync_to_async(visitor_message_store)(
            conversation_id=conversation_id, text=text, client_id=client_id
        )
    except DuplicateMessage as duplicate:
        original = duplicate.original
        yield Acked(original.pk, original.text, original.created_at, duplicate=True)
        return
    yield Acked(message.pk, message.text, message.created_at)
    if status == Conversation.Status.WITH_AGENT:
        yield AgentHasConversation(message.pk, message.text, message.created_at)

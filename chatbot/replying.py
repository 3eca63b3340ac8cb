"""The reply pipeline, shared by the website (websocket consumer) and ``manage.py chat``.

``reply_stream`` stores the visitor's message first, then answers from the knowledge base
when it is sure, otherwise streams from the LLM (with the best entries as references when
the match decision is "reference"), otherwise sends the bot's fallback reply and flags the
conversation for follow-up. It yields events: one ``ReplyStart``, ``ReplyDelta``s, one
``ReplyEnd``. ORM access runs in ``sync_to_async`` helpers, never on the event loop; the
visitor's message and the reply are stored through ``GroupCommit``, so messages and replies
of many conversations that arrive together share a transaction.

The reply's row is reserved together with the visitor's message (status ``pending``,
owned by this server process), so a client can name the reply from its first word; while
an LLM reply streams, ``chatbot.inflight`` writes its text so far about once a second, so
a crash of the process leaves it (reaped as ``partial``) rather than losing it. A reply
abandoned before any text removes the row again.

A visitor message whose ``client_id`` the conversation already has (the widget sent it
again) is neither stored nor answered: the stream is one ``ReplyDuplicate``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone

from chatbot import inflight
from chatbot.group_commit import GroupCommit
from chatbot.llm import ChatResult, Delta, LLMError, complete, is_configured, stream_chat
from chatbot.models import Bot, Conversation, Message
from chatbot.prompting import Turn, build_prompt, context_budget, split_for_summary, summary_request
from chatbot.services import DuplicateMessage, duplicate_or, visitor_messages_add
from knowledge.lexical import is_cjk

log = logging.getLogger(__name__)

MAX_QUESTION_LENGTH = 4000
HISTORY_LIMIT = 200  # newest uncovered messages read per reply; the token budget trims further
MAX_REFERENCES = 3
CONTEXT_ROLES = (Message.Role.VISITOR, Message.Role.BOT, Message.Role.AGENT)
DEFAULT_FALLBACK = "Sorry, I can't answer that right now. Would you like to talk to a person?"
NO_LLM = "no LLM is configured"  # ReplyEnd.error of a fallback sent because there is no LLM at all
SUGGESTED = "no LLM is configured: a knowledge-base entry suggested"  # ReplyEnd.error of a suggestion


@dataclass(frozen=True, slots=True)
class ReplyStart:
    type: ClassVar[str] = "start"
    visitor_message_id: int
    #: The id the reply will be stored under; None when the bot stays silent.
    reply_id: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    type: ClassVar[str] = "delta"
    text: str
    #: knowledge, llm or fallback: lets a client label the reply from its first piece.
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """The stored reply. ``message_id`` is None when an agent has the conversation (the bot
    stays silent). ``result`` has the LLM's usage and timings when the LLM replied."""

    type: ClassVar[str] = "end"
    message_id: int | None
    text: str
    source: str
    status: str
    score: float | None = None
    result: ChatResult | None = None
    #: Why the LLM was not used or failed, for logs and the terminal; never for the visitor.
    error: str = ""
    #: The knowledge-base entry answered with, or the LLM's best reference.
    entry_id: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReplyDuplicate:
    """The message was stored before (same ``client_id``): nothing is stored or answered."""

    type: ClassVar[str] = "duplicate"
    visitor_message_id: int


ReplyEvent = ReplyStart | ReplyDelta | ReplyEnd | ReplyDuplicate


@dataclass
class _Context:
    bot: Bot
    conversation_id: int
    status: str
    visitor_message_id: int
    reply_id: int | None
    summary: str
    summary_until: int | None
    #: When the visitor's message arrived (perf_counter): reply timings count from here.
    received: float

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.received) * 1000)


async def reply_stream(
    *, conversation_id: int, text: str, client_id: str | None = None
) -> AsyncIterator[ReplyEvent]:
    text = text.strip()
    if not text:
        raise ValueError("The message is empty.")
    if len(text) > MAX_QUESTION_LENGTH:
        raise ValueError(f"The message is longer than {MAX_QUESTION_LENGTH} characters.")
    async with inflight.keeper().flight():
        try:
            ctx = await _store_visitor_message(
                _Arrival(conversation_id, text, time.perf_counter(), client_id)
            )
        except DuplicateMessage as duplicate:
            yield ReplyDuplicate(visitor_message_id=duplicate.original.pk)
            return
        try:
            yield ReplyStart(visitor_message_id=ctx.visitor_message_id, reply_id=ctx.reply_id)
            if ctx.status == Conversation.Status.WITH_AGENT:
                yield ReplyEnd(message_id=None, text="", source="", status="")
                return
            async with aclosing(_reply(ctx, text)) as events:
                async for event in events:
                    yield event
        except BaseException:
            await _pending_settle(ctx.reply_id)
            raise


async def _reply(ctx: _Context, text: str) -> AsyncIterator[ReplyEvent]:
    match = await kb_match(ctx.bot, text, fresh_revision=True)
    decision = match.decision if match is not None else "none"
    candidates = list(match.candidates) if match is not None else []
    if decision == "answer" and candidates:
        best = candidates[0]
        message_id = await _reply_store(
            ctx.conversation_id,
            reply_id=ctx.reply_id,
            text=best.answer,
            source=Message.Source.KNOWLEDGE,
            matched_entry_id=best.entry_id,
            score=best.score,
            elapsed_ms=ctx.elapsed_ms(),
        )
        yield ReplyDelta(best.answer, source=Message.Source.KNOWLEDGE)
        yield ReplyEnd(
            message_id,
            best.answer,
            Message.Source.KNOWLEDGE,
            Message.Status.COMPLETE,
            best.score,
            entry_id=best.entry_id,
        )
        return
    references = []
    if decision == "reference":
        threshold = (
            match.thresholds.reference if match.thresholds is not None else ctx.bot.reference_threshold
        )
        references = [c for c in candidates if c.score >= threshold][:MAX_REFERENCES] or candidates[:1]
    if not is_configured(ctx.bot):
        suggestion = _suggest(ctx, text, references[0]) if references else _fallback(ctx, NO_LLM)
        async for event in suggestion:
            yield event
        return
    async with aclosing(_llm_reply(ctx, text, references)) as events:
        async for event in events:
            yield event


async def kb_match(bot: Bot, text: str, *, fresh_revision: bool = False) -> Any:
    """The knowledge base's verdict (``knowledge.matching.amatch``); None when it failed."""
    from knowledge.matching import amatch  # the knowledge app loads its index lazily

    try:
        return await amatch(bot, text, fresh_revision=fresh_revision)
    except Exception:
        # A broken index must not cost the visitor their answer: the LLM still replies.
        log.exception("knowledge-base match failed for bot %s", bot.pk)
        return None


async def _llm_reply(ctx: _Context, question: str, references: list[Any]) -> AsyncIterator[ReplyEvent]:
    # Read only now: an answer from the knowledge base needs no history.
    history, history_truncated = await _history_read(
        _HistoryAsk(ctx.conversation_id, after=ctx.summary_until, before=ctx.visitor_message_id)
    )
    prompt = build_prompt(
        bot=ctx.bot, question=question, history=history, summary=ctx.summary, references=references
    )
    # The best reference is kept with the reply: which entries the LLM leaned on, and how close.
    entry_id, score = (references[0].entry_id, references[0].score) if references else (None, None)
    parts: list[str] = []
    result: ChatResult | None = None
    # The LLM times its own call; the stored timings count from the visitor's message.
    offset_ms = ctx.elapsed_ms()
    keeper = inflight.keeper()
    if ctx.reply_id is not None:
        keeper.track(ctx.reply_id, parts)  # its text so far reaches the database while it streams
    try:
        async with aclosing(stream_chat(prompt.request)) as items:
            async for item in items:
                if isinstance(item, Delta):
                    parts.append(item.text)
                    yield ReplyDelta(item.text, source=Message.Source.LLM)
                else:
                    result = item
    except LLMError as err:
        if not (err.partial_text or parts):
            async for event in _fallback(ctx, f"{type(err).__name__}: {err}"):
                yield event
            return
        yield await _partial_store(
            ctx, err, "".join(parts), entry_id=entry_id, score=score, offset_ms=offset_ms
        )
        return
    except BaseException:
        # The visitor left mid-reply (cancelled), or something broke: keep what they saw.
        if parts:
            store = _reply_store(
                ctx.conversation_id,
                reply_id=ctx.reply_id,
                text="".join(parts),
                source=Message.Source.LLM,
                status=Message.Status.PARTIAL,
            )
            await asyncio.shield(store)
        raise
    finally:
        if ctx.reply_id is not None:
            keeper.untrack(ctx.reply_id)
    if result is None or not result.text.strip():
        async for event in _fallback(ctx, "the LLM sent an empty reply"):
            yield event
        return
    message_id = await _reply_store(
        ctx.conversation_id,
        reply_id=ctx.reply_id,
        text=result.text,
        source=Message.Source.LLM,
        matched_entry_id=entry_id,
        score=score,
        result=result,
        elapsed_ms=offset_ms,
    )
    if prompt.history_dropped or history_truncated:
        summary_refresh_schedule(ctx.conversation_id)
    yield ReplyEnd(
        message_id, result.text, Message.Source.LLM, Message.Status.COMPLETE, score, result, entry_id=entry_id
    )


async def _partial_store(
    ctx: _Context,
    err: LLMError,
    streamed: str,
    *,
    entry_id: int | None,
    score: float | None,
    offset_ms: int,
) -> ReplyEnd:
    """The stream broke after some text: store what the visitor saw, marked partial."""
    text = err.partial_text or streamed
    log.warning("LLM reply broke after %d characters: %s", len(text), err)
    message_id = await _reply_store(
        ctx.conversation_id,
        reply_id=ctx.reply_id,
        text=text,
        source=Message.Source.LLM,
        status=Message.Status.PARTIAL,
        matched_entry_id=entry_id,
        score=score,
        result=err.partial,
        elapsed_ms=offset_ms,
    )
    return ReplyEnd(
        message_id,
        text,
        Message.Source.LLM,
        Message.Status.PARTIAL,
        score,
        err.partial,
        str(err),
        entry_id=entry_id,
    )


# Without an LLM, a plausibly right entry (the reference band) is offered as it is, said
# to be a suggestion; the conversation is flagged for a person to check.
SUGGESTION_INTRO = {False: "This may help:", True: "以下内容可能对您有帮助："}


async def _suggest(ctx: _Context, question: str, best: Any) -> AsyncIterator[ReplyEvent]:
    text = f"{SUGGESTION_INTRO[is_cjk(question)]}\n\n{best.question}\n{best.answer}"
    message_id = await _reply_store(
        ctx.conversation_id,
        reply_id=ctx.reply_id,
        text=text,
        source=Message.Source.KNOWLEDGE,
        matched_entry_id=best.entry_id,
        score=best.score,
        needs_followup=True,
        elapsed_ms=ctx.elapsed_ms(),
    )
    yield ReplyDelta(text, source=Message.Source.KNOWLEDGE)
    yield ReplyEnd(
        message_id,
        text,
        Message.Source.KNOWLEDGE,
        Message.Status.COMPLETE,
        best.score,
        entry_id=best.entry_id,
        error=SUGGESTED,
    )


async def _fallback(ctx: _Context, reason: str) -> AsyncIterator[ReplyEvent]:
    log.info("fallback reply in conversation %s: %s", ctx.conversation_id, reason)
    text = ctx.bot.fallback_reply.strip() or DEFAULT_FALLBACK
    message_id = await _reply_store(
        ctx.conversation_id,
        reply_id=ctx.reply_id,
        text=text,
        source=Message.Source.FALLBACK,
        needs_followup=True,
        elapsed_ms=ctx.elapsed_ms(),
    )
    yield ReplyDelta(text, source=Message.Source.FALLBACK)
    yield ReplyEnd(message_id, text, Message.Source.FALLBACK, Message.Status.COMPLETE, error=reason)


@dataclass(frozen=True, slots=True)
class _Arrival:
    conversation_id: int
    text: str
    received: float
    client_id: str | None = None


def _visitor_messages_store(arrivals: list[_Arrival]) -> list[_Context | BaseException]:
    """Store visitors' messages that arrived together (group commit): one read of their
    conversations, one transaction. A conversation deleted meanwhile fails only its own, and
    a message sent again (its ``client_id`` is stored) gets ``DuplicateMessage``: the batch
    fails on the unique constraint, and ``GroupCommit`` stores its messages one by one."""
    found = Conversation.objects.select_related("bot").in_bulk({a.conversation_id for a in arrivals})
    results: list[_Context | BaseException] = [
        Conversation.DoesNotExist(f"conversation {a.conversation_id} does not exist") for a in arrivals
    ]
    present = [n for n, a in enumerate(arrivals) if a.conversation_id in found]
    batch = [(found[arrivals[n].conversation_id], arrivals[n].text, arrivals[n].client_id) for n in present]
    try:
        stored = visitor_messages_add(arrivals=batch, reserve_reply=True, reply_owner=inflight.keeper().owner)
    except IntegrityError as err:
        if len(present) != 1:
            raise
        arrival = arrivals[present[0]]
        results[present[0]] = duplicate_or(
            err, conversation_id=arrival.conversation_id, client_id=arrival.client_id
        )
        return results
    for n, (message, reply_id, conversation) in zip(present, stored, strict=True):
        results[n] = _Context(
            bot=found[arrivals[n].conversation_id].bot,
            conversation_id=conversation.pk,
            status=conversation.status,
            visitor_message_id=message.pk,
            reply_id=reply_id,
            summary=conversation.summary,
            summary_until=conversation.summary_until,
            received=arrivals[n].received,
        )
    return results


_store_visitor_message = GroupCommit[_Arrival, _Context](
    lambda arrivals: _visitor_messages_store(arrivals), retry_alone=(IntegrityError,)
)


@dataclass(frozen=True, slots=True)
class _HistoryAsk:
    conversation_id: int
    after: int | None  # the summary covers up to this message
    before: int  # the visitor message being answered


# Replies that need their history at the same time (a burst of questions for the LLM) read
# it in one trip to the ORM thread, not one trip each queued behind the others.
_history_read = GroupCommit[_HistoryAsk, tuple[list[Turn], bool]](
    lambda asks: [_history(a.conversation_id, after=a.after, before=a.before) for a in asks]
)


def _history(conversation_id: int, *, after: int | None, before: int) -> tuple[list[Turn], bool]:
    """Turns not covered by the summary, oldest first, and whether older ones were left out."""
    rows = Message.objects.visible().filter(
        conversation_id=conversation_id, id__lt=before, role__in=CONTEXT_ROLES
    )
    if after is not None:
        rows = rows.filter(id__gt=after)
    newest = list(rows.order_by("-id").values_list("role", "text")[: HISTORY_LIMIT + 1])
    return newest[:HISTORY_LIMIT][::-1], len(newest) > HISTORY_LIMIT


@dataclass(frozen=True, slots=True)
class _ReplyRow:
    conversation_id: int
    reply_id: int | None  # the reserved row
    fields: dict[str, Any]
    needs_followup: bool


def _reply_row(
    conversation_id: int,
    *,
    reply_id: int | None = None,
    text: str,
    source: str,
    status: str = Message.Status.COMPLETE,
    matched_entry_id: int | None = None,
    score: float | None = None,
    result: ChatResult | None = None,
    needs_followup: bool = False,
    elapsed_ms: int | None = None,
) -> _ReplyRow:
    """What to store for a reply. ``elapsed_ms``: time from the visitor's message to this
    reply, or (with an LLM ``result``) to the LLM call, whose own timings are added."""
    usage: dict[str, Any] = {}
    if elapsed_ms is not None and result is None:
        usage = {"ttft_ms": elapsed_ms, "total_ms": elapsed_ms}
    if result is not None:
        usage = {
            "llm_model": result.model,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "tokens_estimated": result.tokens_estimated,
            "cost": result.cost,
            "ttft_ms": _plus(result.ttft_ms, elapsed_ms),
            "total_ms": _plus(result.total_ms, elapsed_ms),
        }
    fields = {
        "text": text,
        "source": source,
        "status": status,
        "matched_entry_id": matched_entry_id,
        "score": score,
        **usage,
    }
    return _ReplyRow(conversation_id, reply_id, fields, needs_followup)


def _replies_store(rows: list[_ReplyRow]) -> list[int | BaseException]:
    """Store replies that ended together (group commit) into their reserved rows, in one
    transaction; a new row only where the reserved one is gone (deleted by hand)."""
    ids: list[int | BaseException] = []
    with transaction.atomic():
        for row in rows:
            reply_id = row.reply_id
            if reply_id is None or not Message.objects.filter(pk=reply_id).update(**row.fields):
                reply_id = Message.objects.create(
                    conversation_id=row.conversation_id, role=Message.Role.BOT, **row.fields
                ).pk
            ids.append(reply_id)
        conversations = Conversation.objects.filter(pk__in={row.conversation_id for row in rows})
        conversations.update(last_activity_at=timezone.now())
        if followup := {row.conversation_id for row in rows if row.needs_followup}:
            Conversation.objects.filter(pk__in=followup).update(needs_followup=True)
    return ids


_store_replies = GroupCommit[_ReplyRow, int](lambda rows: _replies_store(rows), retry_alone=(IntegrityError,))


async def _reply_store(conversation_id: int, **details: Any) -> int:
    """Store a reply (see ``_reply_row`` for the details), together with any others
    that end at the same time. Returns its message id."""
    return await _store_replies(_reply_row(conversation_id, **details))


def _plus(value: int | None, offset: int | None) -> int | None:
    return None if value is None else value + (offset or 0)


async def _pending_settle(reply_id: int | None) -> None:
    """The reserved row of a reply that ended (cancelled, failed) before it was stored: kept
    as partial if some of its text was written meanwhile, removed if none was."""
    if reply_id is None:
        return
    try:
        await asyncio.shield(sync_to_async(_pending_settle_store)(reply_id))
    except Exception:
        log.exception("could not settle the unfinished reply %s", reply_id)


def _pending_settle_store(reply_id: int) -> None:
    rows = Message.objects.filter(pk=reply_id, status=Message.Status.PENDING)
    with transaction.atomic():
        rows.filter(text="").delete()
        rows.update(status=Message.Status.PARTIAL)


# --- Running summary -------------------------------------------------------------------

_refreshing: set[int] = set()
_background: set[asyncio.Task[bool]] = set()


def summary_refresh_schedule(conversation_id: int) -> asyncio.Task[bool] | None:
    """Refresh the summary in the background (at most one refresh per conversation at a time)."""
    if conversation_id in _refreshing:
        return None
    task = asyncio.get_running_loop().create_task(summary_refresh(conversation_id=conversation_id))
    _background.add(task)  # keep a reference until it is done
    task.add_done_callback(_background.discard)
    return task


async def summary_refresh(*, conversation_id: int, budget: int | None = None) -> bool:
    """Fold the oldest turns that no longer fit the context budget into Conversation.summary
    with one LLM call. True when a new summary was stored."""
    if conversation_id in _refreshing:
        return False
    _refreshing.add(conversation_id)
    try:
        bot, summary, until, rows = await sync_to_async(_summary_source)(conversation_id)
        fold = split_for_summary([(role, text) for _, role, text in rows], budget or context_budget())
        if fold == 0:
            return False
        request = summary_request(bot=bot, summary=summary, turns=[(r, t) for _, r, t in rows[:fold]])
        try:
            result = await complete(request)
        except LLMError as err:
            log.warning("summary refresh for conversation %s failed: %s", conversation_id, err)
            return False
        if not result.text.strip():
            return False
        return await sync_to_async(_summary_store)(
            conversation_id, previous=until, until=rows[fold - 1][0], summary=result.text.strip()
        )
    finally:
        _refreshing.discard(conversation_id)


def _summary_source(conversation_id: int) -> tuple[Bot, str, int | None, list[tuple[int, str, str]]]:
    conversation = Conversation.objects.select_related("bot").get(pk=conversation_id)
    rows = Message.objects.visible().filter(conversation_id=conversation_id, role__in=CONTEXT_ROLES)
    if conversation.summary_until is not None:
        rows = rows.filter(id__gt=conversation.summary_until)
    found = list(rows.order_by("id").values_list("id", "role", "text"))
    return conversation.bot, conversation.summary, conversation.summary_until, found


def _summary_store(conversation_id: int, *, previous: int | None, until: int, summary: str) -> bool:
    # Only if nobody refreshed it meanwhile (another server process).
    updated = Conversation.objects.filter(pk=conversation_id, summary_until=previous).update(
        summary=summary, summary_until=until
    )
    return updated == 1

"""What the reply pipeline (``chatbot.replying``) stores and reads: the visitor's message
(with the reply's row reserved), the history the LLM is shown, the reply, and the running
summary.

Writes and reads that many replies need at the same moment go through ``GroupCommit``: the
visitor messages, replies and histories of many conversations that arrive together share
one trip to the ORM thread and one transaction. The batch functions run on the ORM thread;
everything else is awaited from the event loop.

A reply is saved once, with ``reply_save``, into the row reserved with the visitor's message
(status ``pending``, owned by this server process: ``chatbot.inflight`` writes its text
while it streams). A reply that is abandoned before it was saved goes to ``reply_abandon``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone

from chatbot import inflight
from chatbot.group_commit import GroupCommit
from chatbot.llm import ChatResult
from chatbot.models import Bot, Conversation, Message
from chatbot.prompting import Turn
from chatbot.reply_events import SourceLink
from chatbot.runtime import runtime
from chatbot.services import duplicate_or, visitor_messages_add

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # newest uncovered messages read per reply; the token budget trims further
CONTEXT_ROLES = (Message.Role.VISITOR, Message.Role.BOT, Message.Role.AGENT)


# --- The visitor's message ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    conversation_id: int
    text: str
    received: float  # time.perf_counter() when the message arrived
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A visitor message stored, with what its reply needs of the conversation."""

    bot: Bot
    conversation_id: int
    status: str  # the conversation's, after a closed one reopened
    message_id: int
    created: datetime
    reply_id: int | None  # the reserved row; None while an agent has the conversation
    summary: str
    summary_until: int | None
    #: When the visitor's message arrived (perf_counter): reply timings count from here.
    received: float

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.received) * 1000)


def visitor_messages_batch(arrivals: list[Arrival]) -> list[Stored | BaseException]:
    """Store visitors' messages that arrived together: one read of their conversations, one
    transaction. A conversation deleted meanwhile fails only its own, and a message sent again
    (its ``client_id`` is stored) gets ``DuplicateMessage``: the batch fails on the unique
    constraint, and ``GroupCommit`` stores its messages one by one."""
    found = Conversation.objects.select_related("bot").in_bulk({a.conversation_id for a in arrivals})
    results: list[Stored | BaseException] = [
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
        results[n] = Stored(
            bot=found[arrivals[n].conversation_id].bot,
            conversation_id=conversation.pk,
            status=conversation.status,
            message_id=message.pk,
            created=message.created_at,
            reply_id=reply_id,
            summary=conversation.summary,
            summary_until=conversation.summary_until,
            received=arrivals[n].received,
        )
    return results


# --- The history the LLM is shown ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryAsk:
    conversation_id: int
    after: int | None  # the summary covers up to this message
    before: int  # the visitor message being answered


def conversation_turns(conversation_id: int, *, after: int | None, before: int) -> tuple[list[Turn], bool]:
    """Turns not covered by the summary, oldest first, and whether older ones were left out."""
    rows = Message.objects.visible().filter(
        conversation_id=conversation_id, id__lt=before, role__in=CONTEXT_ROLES
    )
    if after is not None:
        rows = rows.filter(id__gt=after)
    newest = list(rows.order_by("-id").values_list("role", "text")[: HISTORY_LIMIT + 1])
    return newest[:HISTORY_LIMIT][::-1], len(newest) > HISTORY_LIMIT


# --- The reply ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyRow:
    conversation_id: int
    reply_id: int | None  # the reserved row
    fields: dict[str, Any]
    needs_followup: bool


def reply_rows_batch(rows: list[ReplyRow]) -> list[int | BaseException]:
    """Store replies that ended together into their reserved rows, in one transaction; a new
    row only where the reserved one is gone (deleted by hand)."""
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


class Commits:
    """The reply path's group commits (a runtime part): visitor messages, history reads and
    replies arriving together each share one trip to the ORM thread and one transaction.
    A burst of questions for the LLM reads its histories in one trip, not one each."""

    def __init__(self) -> None:
        self.visitor_messages = GroupCommit[Arrival, Stored](
            lambda arrivals: visitor_messages_batch(arrivals), retry_alone=(IntegrityError,)
        )
        self.history = GroupCommit[HistoryAsk, tuple[list[Turn], bool]](
            lambda asks: [conversation_turns(a.conversation_id, after=a.after, before=a.before) for a in asks]
        )
        self.replies = GroupCommit[ReplyRow, int](
            lambda rows: reply_rows_batch(rows), retry_alone=(IntegrityError,)
        )


def commits() -> Commits:
    return runtime().part(Commits)


async def visitor_message_save(arrival: Arrival) -> Stored:
    """Store the visitor's message (and reserve the reply's row), grouped with others."""
    return await commits().visitor_messages(arrival)


async def history_read(ask: HistoryAsk) -> tuple[list[Turn], bool]:
    """The turns the LLM is shown, read together with other replies' (``conversation_turns``)."""
    return await commits().history(ask)


async def reply_save(
    *,
    conversation_id: int,
    reply_id: int | None,
    text: str,
    source: str,
    status: str = Message.Status.COMPLETE,
    entry_id: int | None = None,
    score: float | None = None,
    result: ChatResult | None = None,
    needs_followup: bool = False,
    elapsed_ms: int | None = None,
    sources: Sequence[SourceLink] = (),
) -> int:
    """Store a reply, together with any others that end at the same time; returns its
    message id. ``elapsed_ms``: time from the visitor's message to this reply, or (with an
    LLM ``result``) to the LLM call, whose own timings are added. ``sources``: the passages
    of the documents it drew on (``Message.sources``)."""
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
        "matched_entry_id": entry_id,
        "score": score,
        "sources": [source.as_dict() for source in sources],
        **usage,
    }
    return await commits().replies(ReplyRow(conversation_id, reply_id, fields, needs_followup))


def _plus(value: int | None, offset: int | None) -> int | None:
    return None if value is None else value + (offset or 0)


async def reply_abandon(
    *, conversation_id: int, reply_id: int | None, streamed: str, sources: Sequence[SourceLink] = ()
) -> None:
    """The reserved row of a reply that ended (cancelled, failed) before it was saved: kept as
    partial with the text the visitor was streamed (or what ``inflight`` wrote meanwhile) and
    the ``sources`` it was given, removed if there is none. A row already saved is left as it
    is. Never raises."""
    if reply_id is None:
        return
    links = [source.as_dict() for source in sources]
    store = sync_to_async(_abandoned_store)(conversation_id, reply_id, streamed, links)
    try:
        await asyncio.shield(store)
    except Exception:
        log.exception("could not settle the unfinished reply %s", reply_id)


def _abandoned_store(
    conversation_id: int, reply_id: int, streamed: str, sources: list[dict[str, Any]]
) -> None:
    rows = Message.objects.filter(pk=reply_id, status=Message.Status.PENDING)
    with transaction.atomic():
        if streamed and rows.update(text=streamed, status=Message.Status.PARTIAL, sources=sources):
            Conversation.objects.filter(pk=conversation_id).update(last_activity_at=timezone.now())
            return
        rows.filter(text="").delete()
        rows.update(status=Message.Status.PARTIAL, sources=sources)


# --- The running summary -----------------------------------------------------------------


def summary_source(conversation_id: int) -> tuple[Bot, str, int | None, list[tuple[int, str, str]]]:
    """The conversation's bot, summary, the message it covers up to, and the turns after it."""
    conversation = Conversation.objects.select_related("bot").get(pk=conversation_id)
    rows = Message.objects.visible().filter(conversation_id=conversation_id, role__in=CONTEXT_ROLES)
    if conversation.summary_until is not None:
        rows = rows.filter(id__gt=conversation.summary_until)
    found = list(rows.order_by("id").values_list("id", "role", "text"))
    return conversation.bot, conversation.summary, conversation.summary_until, found


def summary_save(conversation_id: int, *, previous: int | None, until: int, summary: str) -> bool:
    # Only if nobody refreshed it meanwhile (another server process).
    updated = Conversation.objects.filter(pk=conversation_id, summary_until=previous).update(
        summary=summary, summary_until=until
    )
    return updated == 1

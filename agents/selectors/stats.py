"""Figures of the statistics page, each computed by an aggregation query in the database.

Every figure covers the given bots and the local days ``date_from``..``date_to``
(inclusive, in the current time zone). A *reply* is a non-empty bot or agent message: while
a reply is being produced its row is reserved with empty text, and such a row never counts.
Visitor, bot and agent messages with text are *messages*; system notices are not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from agents.models import Correction
from agents.selectors.localtime import LocalDate, LocalHour
from agents.selectors.percentiles import ttft_percentiles
from chatbot.models import Conversation, Feedback, Message, MessageQuerySet
from knowledge.models import Entry

Role, Source = Message.Role, Message.Source
REPLY_ROLES = (Role.BOT, Role.AGENT)
SPOKEN_ROLES = (Role.VISITOR, Role.BOT, Role.AGENT)
SOURCES = (Source.KNOWLEDGE, Source.LLM, Source.FALLBACK, Source.AGENT)
TOP_ENTRIES = 10

# A deflected reply: answered by the bot itself (knowledge base or LLM), not followed by a
# handoff (the conversation never asked for a person, or asked before this reply), and not
# rated thumbs-down.
DEFLECTED = (
    Q(source__in=[Source.KNOWLEDGE, Source.LLM])
    & (
        Q(conversation__handoff_requested_at__isnull=True)
        | Q(created_at__gt=F("conversation__handoff_requested_at"))
    )
    & (Q(feedback__rating__isnull=True) | Q(feedback__rating=Feedback.Rating.UP))
)


@dataclass(frozen=True)
class Period:
    date_from: date
    date_to: date
    tz: tzinfo

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.date_from, time.min), self.tz)

    @property
    def end(self) -> datetime:
        """Exclusive: the midnight after ``date_to``."""
        return timezone.make_aware(datetime.combine(self.date_to + timedelta(days=1), time.min), self.tz)

    def days(self) -> list[date]:
        count = (self.date_to - self.date_from).days + 1
        return [self.date_from + timedelta(days=n) for n in range(count)]

    def local_date(self, field: str) -> LocalDate:
        return LocalDate(field, tzinfo=self.tz, span=(self.start, self.end))

    def local_hour(self, field: str) -> LocalHour:
        return LocalHour(field, tzinfo=self.tz, span=(self.start, self.end))


@dataclass(frozen=True)
class Day:
    day: date
    conversations: int
    messages: int


@dataclass(frozen=True)
class Activity:
    days: list[Day]
    hours: list[int]  # messages per local hour of day, 0-23

    @property
    def conversations(self) -> int:
        return sum(d.conversations for d in self.days)

    @property
    def messages(self) -> int:
        return sum(d.messages for d in self.days)


@dataclass(frozen=True)
class SourceFigures:
    source: str
    replies: int
    deflected: int
    up: int
    down: int
    timed: int  # replies with a time to first reply
    ttft: dict[int, int | None]  # percentile -> ms, nearest rank

    @property
    def label(self) -> str:
        return Source(self.source).label

    @property
    def ttft_median(self) -> int | None:
        return self.ttft[50]

    @property
    def ttft_p95(self) -> int | None:
        return self.ttft[95]


@dataclass(frozen=True)
class Replies:
    sources: list[SourceFigures]  # one per SOURCES, in that order

    @property
    def total(self) -> int:
        return sum(s.replies for s in self.sources)

    @property
    def deflected(self) -> int:
        return sum(s.deflected for s in self.sources)

    @property
    def up(self) -> int:
        return sum(s.up for s in self.sources)

    @property
    def down(self) -> int:
        return sum(s.down for s in self.sources)

    @property
    def deflection_rate(self) -> float | None:
        """(knowledge + LLM replies not followed by a handoff and not rated down) / all replies."""
        return self.deflected / self.total if self.total else None

    @property
    def up_rate(self) -> float | None:
        rated = self.up + self.down
        return self.up / rated if rated else None


@dataclass(frozen=True)
class Usage:
    day: date
    model: str
    replies: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


@dataclass(frozen=True)
class ModelUsage:
    model: str
    replies: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


@dataclass(frozen=True)
class TopEntry:
    entry_id: int
    question: str
    replies: int


@dataclass(frozen=True)
class Statistics:
    period: Period
    activity: Activity
    replies: Replies
    usage: list[Usage]
    top_entries: list[TopEntry]
    gap_count: int

    @property
    def usage_by_model(self) -> list[ModelUsage]:
        """The per-day usage rows summed per model (a few dozen rows, added up here)."""
        totals: dict[str, ModelUsage] = {}
        for row in self.usage:
            seen = totals.get(row.model) or ModelUsage(row.model, 0, 0, 0, Decimal(0))
            totals[row.model] = ModelUsage(
                model=row.model,
                replies=seen.replies + row.replies,
                prompt_tokens=seen.prompt_tokens + row.prompt_tokens,
                completion_tokens=seen.completion_tokens + row.completion_tokens,
                cost=seen.cost + row.cost,
            )
        return sorted(totals.values(), key=lambda m: m.model)


def stats_period(*, date_from: date, date_to: date) -> Period:
    return Period(date_from=date_from, date_to=date_to, tz=timezone.get_current_timezone())


def statistics_collect(*, bot_ids: Sequence[int] | None, period: Period) -> Statistics:
    """Every figure of the statistics page for these bots (None: every bot): six queries,
    and the percentiles (PostgreSQL: one query; SQLite: up to eight one-row queries)."""
    replies, usage = replies_count(bot_ids=bot_ids, period=period)
    return Statistics(
        period=period,
        activity=activity_count(bot_ids=bot_ids, period=period),
        replies=replies,
        usage=usage,
        top_entries=top_entries_list(bot_ids=bot_ids, period=period),
        gap_count=gap_count(bot_ids=bot_ids, period=period),
    )


def _messages(*, bot_ids: Sequence[int] | None, period: Period) -> MessageQuerySet:
    messages = Message.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    return messages if bot_ids is None else messages.filter(conversation__bot_id__in=bot_ids)


def _replies(*, bot_ids: Sequence[int] | None, period: Period) -> QuerySet[Message]:
    return _messages(bot_ids=bot_ids, period=period).visible().filter(role__in=REPLY_ROLES)


def activity_count(*, bot_ids: Sequence[int] | None, period: Period) -> Activity:
    """Conversations and messages per local day (zero-filled), messages per local hour:
    two queries. A conversation counts on the day it started, if the visitor wrote in it
    (the widget opens one on every first visit)."""
    conversations = Conversation.objects.filter(started_at__gte=period.start, started_at__lt=period.end)
    if bot_ids is not None:
        conversations = conversations.filter(bot_id__in=bot_ids)
    started = (
        conversations.filter(Exists(Message.objects.filter(conversation=OuterRef("pk"), role=Role.VISITOR)))
        .values(day=period.local_date("started_at"))
        .annotate(n=Count("id"))
        .order_by()
    )
    spoken = (
        _messages(bot_ids=bot_ids, period=period)
        .visible()
        .filter(role__in=SPOKEN_ROLES)
        .values(day=period.local_date("created_at"), hour=period.local_hour("created_at"))
        .annotate(n=Count("id"))
        .order_by()
    )
    conversation_days = {row["day"]: row["n"] for row in started}
    message_days: dict[date, int] = defaultdict(int)
    hours = [0] * 24
    for row in spoken:
        message_days[row["day"]] += row["n"]
        hours[row["hour"]] += row["n"]
    return Activity(
        days=[
            Day(day=d, conversations=conversation_days.get(d, 0), messages=message_days.get(d, 0))
            for d in period.days()
        ],
        hours=hours,
    )


def replies_count(*, bot_ids: Sequence[int] | None, period: Period) -> tuple[Replies, list[Usage]]:
    """Per source: replies, deflected replies, thumbs up/down, time-to-first-reply
    percentiles; per local day and model: tokens and cost. One query grouped by day,
    source and model (a few hundred rows at most, added up here), then the percentiles."""
    replies = _replies(bot_ids=bot_ids, period=period)
    rows = list(
        replies.values("source", "llm_model", day=period.local_date("created_at"))
        .annotate(
            replies=Count("id"),
            deflected=Count("id", filter=DEFLECTED),
            up=Count("id", filter=Q(feedback__rating=Feedback.Rating.UP)),
            down=Count("id", filter=Q(feedback__rating=Feedback.Rating.DOWN)),
            timed=Count("ttft_ms"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by()
    )
    counts = ("replies", "deflected", "up", "down", "timed")
    totals = {source: dict.fromkeys(counts, 0) for source in SOURCES}
    for row in rows:
        for name in counts:
            if row["source"] in totals:
                totals[row["source"]][name] += row[name]
    ttft = ttft_percentiles(replies=replies, timed={s: totals[s]["timed"] for s in SOURCES})
    figures = [SourceFigures(source=s, **totals[s], ttft=ttft[s]) for s in SOURCES]
    return Replies(sources=figures), _usage(rows)


def _usage(rows: list[dict[str, Any]]) -> list[Usage]:
    usage: dict[tuple[date, str], Usage] = {}
    for row in sorted(rows, key=lambda r: (r["day"], r["llm_model"])):
        if not row["llm_model"]:
            continue
        key = (row["day"], row["llm_model"])
        seen = usage.get(key) or Usage(row["day"], row["llm_model"], 0, 0, 0, Decimal(0))
        usage[key] = Usage(
            day=seen.day,
            model=seen.model,
            replies=seen.replies + row["replies"],
            prompt_tokens=seen.prompt_tokens + (row["prompt"] or 0),
            completion_tokens=seen.completion_tokens + (row["completion"] or 0),
            cost=seen.cost + (row["cost"] or 0),
        )
    return list(usage.values())


def top_entries_list(
    *, bot_ids: Sequence[int] | None, period: Period, limit: int = TOP_ENTRIES
) -> list[TopEntry]:
    """The knowledge-base entries most often answered with (ties: the older entry first):
    one grouped query, then one for the questions of those few entries."""
    rows = list(
        _replies(bot_ids=bot_ids, period=period)
        .filter(source=Source.KNOWLEDGE, matched_entry__isnull=False)
        .values("matched_entry_id")
        .annotate(n=Count("id"))
        .order_by("-n", "matched_entry_id")[:limit]
    )
    ids = [row["matched_entry_id"] for row in rows]
    questions = dict(Entry.objects.filter(pk__in=ids).order_by().values_list("pk", "question")) if ids else {}
    return [
        TopEntry(
            entry_id=row["matched_entry_id"],
            question=questions.get(row["matched_entry_id"], ""),
            replies=row["n"],
        )
        for row in rows
    ]


def gap_count(*, bot_ids: Sequence[int] | None, period: Period) -> int:
    """Visitor questions of the period whose reply (the next non-empty bot or agent message
    of the conversation) came from the LLM or the fallback, or was rated thumbs-down, and
    has not been corrected into the knowledge base: the questions the gap report groups."""
    reply = (
        Message.objects.visible()
        .filter(conversation_id=OuterRef("conversation_id"), id__gt=OuterRef("id"), role__in=REPLY_ROLES)
        .order_by("id")
        .values("id")[:1]
    )
    # Replies come after their question: none before the period can be one.
    gap_replies = (
        Message.objects.filter(created_at__gte=period.start, role__in=REPLY_ROLES)
        .filter(Q(source__in=[Source.LLM, Source.FALLBACK]) | Q(feedback__rating=Feedback.Rating.DOWN))
        .exclude(id__in=Correction.objects.values("message_id"))
        .values("id")
    )
    return (
        _messages(bot_ids=bot_ids, period=period)
        .filter(role=Role.VISITOR)
        .alias(reply_id=Subquery(reply))
        .filter(reply_id__in=gap_replies)
        .count()
    )

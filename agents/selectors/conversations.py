"""Reads for the conversation list: filters, per-option counts, the page and its row details.

Every filter is a ``Q`` on the conversation row (a set membership for facts about its
messages), so the same expressions serve the list, the option counts and the exports.
Only the displayed page's rows get their details (message counts, sources, ratings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from itertools import islice
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.lookups import IsNull
from django.utils import timezone

from agents.access import visible_conversations
from agents.models import Label, Note
from chatbot.models import Bot, Conversation, Feedback, Message

# Facets about a conversation's messages; the others are columns of its row.
MESSAGE_FACETS = ("answered", "rating")
SOURCES: tuple[str, ...] = tuple(Message.Source.values)
REPLY_ROLES = (Message.Role.BOT, Message.Role.AGENT)

# The filters that show a count next to each option, with their options.
FACET_OPTIONS: dict[str, list[tuple[str, str]]] = {
    "status": list(Conversation.Status.choices),
    "answered": list(Message.Source.choices),
    "rating": list(Feedback.Rating.choices),
    "followup": [("1", "Needs follow-up")],
    "review": [("resolved", "Resolved"), ("unresolved", "Unresolved")],
}
FACET_LABELS = {
    "status": "Status",
    "answered": "Answered by",
    "rating": "Rating",
    "followup": "Follow-up",
    "review": "Review",
}


@dataclass(frozen=True)
class ConversationFilters:
    bot: Bot | None = None
    status: str = ""
    answered: str = ""
    rating: str = ""
    date_from: date | None = None
    date_to: date | None = None
    followup: str = ""
    review: str = ""
    q: str = ""
    label: Label | None = None


@dataclass(frozen=True)
class FacetOption:
    value: str
    label: str
    count: int
    selected: bool


@dataclass(frozen=True)
class Facet:
    name: str
    label: str
    any_count: int
    options: list[FacetOption]


@dataclass
class ConversationRow:
    """A conversation with what the list and the export show about its messages."""

    conversation: Conversation
    message_count: int = 0
    first_question: str = ""
    sources: dict[str, int] = field(default_factory=dict)
    up: int = 0
    down: int = 0
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ConversationListPage:
    page: Page
    rows: list[ConversationRow]
    facets: list[Facet]
    total: int

    @property
    def page_links(self) -> list[int | str]:
        """Page numbers around the current one, with "…" for the gaps."""
        paginator = self.page.paginator
        return list(paginator.get_elided_page_range(self.page.number, on_each_side=2, on_ends=1))


class KnownCountPaginator(Paginator):
    """A paginator given the row count, which the facet query has already computed."""

    def __init__(self, object_list: Any, per_page: int, *, count: int) -> None:
        super().__init__(object_list, per_page)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _option_q(name: str, value: str) -> Q:
    """The condition on a conversation row for one value of one facet filter. Facts about
    messages are set memberships (``id IN (SELECT conversation_id ...)``): the database
    builds each set in one pass, where EXISTS would probe the messages of every row."""
    if name == "status":
        return Q(status=value)
    if name == "answered":
        replies = Message.objects.visible().filter(role__in=REPLY_ROLES, source=value)
        return Q(pk__in=replies.values("conversation_id"))
    if name == "rating":
        rated = Feedback.objects.filter(rating=value)
        return Q(pk__in=rated.values("message__conversation_id"))
    if name == "followup":
        return Q(needs_followup=True)
    if name == "review":
        return Q(resolved_at__isnull=value == "unresolved")
    raise ValueError(f"unknown facet {name!r}")


def _search_lookup(q: str) -> dict[str, str]:
    # Text without cased letters (Chinese, digits) matches the same either way, and the
    # case-sensitive LIKE spares PostgreSQL upper-casing every message (icontains there
    # is UPPER(text) LIKE UPPER(q), several times slower on a full scan).
    return {"text__icontains" if q.lower() != q.upper() else "text__contains": q}


def _search_in(q: str) -> Q:
    """Conversations with a message containing ``q``, as one pass over the messages:
    for counting every row."""
    return Q(pk__in=Message.objects.visible().filter(**_search_lookup(q)).values("conversation_id"))


def _search_each(q: str) -> Q:
    """The same, checked row by row: for one page in list order, where the database walks
    the activity index and stops after a page of matches. A scalar subquery rather than
    EXISTS, which PostgreSQL would turn into a join over every message."""
    hit = Message.objects.visible().filter(conversation=OuterRef("pk"), **_search_lookup(q)).order_by()
    return Q(IsNull(Subquery(hit.values("pk")[:1]), False))


def _base_q(filters: ConversationFilters, *, search: Callable[[str], Q]) -> Q:
    """The filters that have no option counts, combined."""
    q = Q()
    if filters.bot is not None:
        q &= Q(bot_id=filters.bot.pk)
    if filters.date_from is not None:
        q &= Q(last_activity_at__gte=_day_start(filters.date_from))
    if filters.date_to is not None:
        q &= Q(last_activity_at__lt=_day_start(filters.date_to + timedelta(days=1)))
    if filters.q:
        q &= search(filters.q)
    if filters.label is not None:
        labelled = Label.conversations.through.objects.filter(label_id=filters.label.pk)
        q &= Q(pk__in=labelled.values("conversation_id"))
    return q


def _facet_qs(filters: ConversationFilters) -> dict[str, Q]:
    """The active facet filters, by name."""
    return {name: _option_q(name, getattr(filters, name)) for name in FACET_OPTIONS if getattr(filters, name)}


def _combined(qs: list[Q]) -> Q | None:
    if not qs:
        return None
    combined = Q()
    for q in qs:
        combined &= q
    return combined


def _narrowed(base: QuerySet[Conversation], filters: ConversationFilters) -> QuerySet[Conversation]:
    for q in _facet_qs(filters).values():
        base = base.filter(q)
    return base.order_by("-last_activity_at", "-id")


def conversations_filtered(*, user: Any, filters: ConversationFilters) -> QuerySet[Conversation]:
    """The conversations the agent sees that match every filter, newest activity first."""
    return _narrowed(visible_conversations(user).filter(_base_q(filters, search=_search_in)), filters)


def _facet_counts(*, base: QuerySet[Conversation], filters: ConversationFilters) -> dict[str, int]:
    """``total``, ``<facet>__`` (any option) and ``<facet>__<option>`` counts.

    Each count is a ``Count(filter=...)`` of the other active filters plus its option. An
    active filter about messages goes into the WHERE clause instead, so its set is built
    once rather than once per count: the counts that must ignore it (its own options) come
    from a second query. At most three queries, one when no such filter is active."""
    active = _facet_qs(filters)
    plans: dict[tuple[str, ...], dict[str, Count]] = {}

    def plan(key: str, conditions: list[Q], *, ignoring: str = "") -> None:
        where = tuple(n for n in MESSAGE_FACETS if n in active and n != ignoring)
        others = [q for n, q in active.items() if n not in where and n != ignoring]
        plans.setdefault(where, {})[key] = Count("pk", filter=_combined(others + conditions))

    plan("total", [])
    for name, options in FACET_OPTIONS.items():
        plan(f"{name}__", [], ignoring=name)
        for value, _ in options:
            plan(f"{name}__{value}", [_option_q(name, value)], ignoring=name)
    counts: dict[str, int] = {}
    for where, aggregates in plans.items():
        rows = base.filter(_combined([active[n] for n in where]) or Q())
        counts |= rows.order_by().aggregate(**aggregates)
    return counts


def conversation_facets(
    *, base: QuerySet[Conversation], filters: ConversationFilters
) -> tuple[int, list[Facet]]:
    """The number of matching conversations, and per option of each facet filter the
    number that match the other active filters plus that option."""
    counts = _facet_counts(base=base, filters=filters)
    facets = [
        Facet(
            name=name,
            label=FACET_LABELS[name],
            any_count=counts[f"{name}__"],
            options=[
                FacetOption(
                    value=value,
                    label=str(label),
                    count=counts[f"{name}__{value}"],
                    selected=getattr(filters, name) == value,
                )
                for value, label in options
            ],
        )
        for name, options in FACET_OPTIONS.items()
    ]
    return counts["total"], facets


def conversation_rows(*, conversations: list[Conversation]) -> list[ConversationRow]:
    """Message count, first visitor question, sources, ratings and labels of the given
    conversations, in three queries whatever their number."""
    rows = {c.pk: ConversationRow(conversation=c) for c in conversations}
    if not rows:
        return []
    source_counts = {s: Count("pk", filter=Q(source=s, role__in=REPLY_ROLES)) for s in SOURCES}
    stats = (
        Message.objects.visible()
        .filter(conversation_id__in=rows)
        .values("conversation_id")
        .annotate(
            total=Count("pk"),
            first_question_id=Min("pk", filter=Q(role=Message.Role.VISITOR)),
            up=Count("pk", filter=Q(feedback__rating=Feedback.Rating.UP)),
            down=Count("pk", filter=Q(feedback__rating=Feedback.Rating.DOWN)),
            **source_counts,
        )
        .order_by()
    )
    first_ids = []
    for stat in stats:
        row = rows[stat["conversation_id"]]
        row.message_count, row.up, row.down = stat["total"], stat["up"], stat["down"]
        row.sources = {s: stat[s] for s in SOURCES if stat[s]}
        if stat["first_question_id"] is not None:
            first_ids.append(stat["first_question_id"])
    for conversation_id, text in Message.objects.filter(pk__in=first_ids).values_list(
        "conversation_id", "text"
    ):
        rows[conversation_id].first_question = text
    through = Label.conversations.through.objects.filter(conversation_id__in=rows)
    for conversation_id, name in through.order_by("label__name").values_list(
        "conversation_id", "label__name"
    ):
        rows[conversation_id].labels.append(name)
    return list(rows.values())


def conversation_list_page(
    *, user: Any, filters: ConversationFilters, page_number: str | int | None, per_page: int
) -> ConversationListPage:
    """One page of the filtered list: the facet counts (which give the total), the page's
    rows by LIMIT/OFFSET, and the details of just those rows."""
    visible = visible_conversations(user)
    counted = visible.filter(_base_q(filters, search=_search_in))
    total, facets = conversation_facets(base=counted, filters=filters)
    walked = visible.filter(_base_q(filters, search=_search_each))
    matching = _narrowed(walked, filters).select_related("bot", "visitor")
    paginator = KnownCountPaginator(matching, per_page, count=total)
    page = paginator.get_page(page_number)
    rows = conversation_rows(conversations=list(page.object_list))
    return ConversationListPage(page=page, rows=rows, facets=facets, total=total)


def conversation_row_batches(
    *, user: Any, filters: ConversationFilters, batch_size: int = 500
) -> Iterator[list[ConversationRow]]:
    """Every matching conversation with its row details, ``batch_size`` at a time, so an
    export never holds all of them (nor all their messages) in memory."""
    matching = conversations_filtered(user=user, filters=filters).select_related(
        "bot", "visitor", "assigned_agent"
    )
    conversations = matching.iterator(chunk_size=batch_size)
    while batch := list(islice(conversations, batch_size)):
        yield conversation_rows(conversations=batch)


def transcript_messages(*, conversation: Conversation) -> list[Message]:
    """The conversation's messages in order, with feedback, matched entry and corrections."""
    return list(
        Message.objects.visible()
        .filter(conversation=conversation)
        .select_related("feedback", "matched_entry")
        .prefetch_related("corrections")
        .order_by("created_at", "id")
    )


def transcript_notes(*, conversation: Conversation) -> list[Note]:
    return list(conversation.notes.select_related("author").order_by("created_at", "id"))


def conversation_label_names(*, conversation: Conversation) -> list[str]:
    return list(conversation.labels.order_by("name").values_list("name", flat=True))

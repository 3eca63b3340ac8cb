"""Knowledge gaps: visitor questions the knowledge base did not answer, clustered by meaning.

A question is a gap when its reply (the next bot or agent message in its conversation)
came from the LLM or the fallback, or got a thumbs-down whatever its source, unless an
agent already turned that reply into a knowledge-base entry (a Correction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from agents.access import visible_bots
from agents.clustering import cluster_vectors
from agents.models import Correction
from agents.question_vectors import question_vectors_get
from chatbot.models import Bot, Conversation, Feedback, Message
from knowledge.matching import match

log = logging.getLogger(__name__)

CLUSTERS_SHOWN = 100  # open clusters listed; smaller ones are counted, not listed
CLUSTERS_CHECKED = 300  # at most this many knowledge-base look-ups per report
EXAMPLES = 5
REPLY_ROLES = (Message.Role.BOT, Message.Role.AGENT)
UNANSWERED = (Message.Source.LLM, Message.Source.FALLBACK)


@dataclass(frozen=True)
class GapQuestion:
    message_id: int
    text: str
    created_at: datetime
    conversation_id: int
    bot_id: int
    reply_id: int
    reply_role: str
    reply_source: str
    reply_rating: str | None


@dataclass(frozen=True)
class GapCluster:
    bot: Bot
    questions: list[GapQuestion]  # newest first
    typical: str  # the medoid's text

    @property
    def count(self) -> int:
        return len(self.questions)

    @property
    def newest_at(self) -> datetime:
        return self.questions[0].created_at

    @property
    def examples(self) -> list[str]:
        """Up to EXAMPLES distinct texts, newest first, the typical one leading."""
        texts = dict.fromkeys([self.typical, *(q.text for q in self.questions)])
        return list(texts)[:EXAMPLES]

    @property
    def reply_id(self) -> int | None:
        """The newest bot reply in the cluster: the one a new entry is recorded against."""
        return next((q.reply_id for q in self.questions if q.reply_role == Message.Role.BOT), None)


@dataclass
class GapReport:
    days: int
    total_questions: int = 0
    capped: bool = False  # AGENT_GAP_MAX_QUESTIONS reached: older questions were left out
    clusters: list[GapCluster] = field(default_factory=list)  # open gaps, largest first
    covered_clusters: int = 0  # clusters the knowledge base now answers
    covered_questions: int = 0
    unlisted_clusters: int = 0  # beyond CLUSTERS_SHOWN or CLUSTERS_CHECKED
    unlisted_questions: int = 0


def _next_reply() -> QuerySet[Message]:
    return (
        Message.objects.visible()
        .filter(conversation_id=OuterRef("conversation_id"), pk__gt=OuterRef("pk"), role__in=REPLY_ROLES)
        .order_by("pk")
    )


def _gap_rows(*, bots: QuerySet[Bot], since: datetime) -> QuerySet[Message]:
    def reply(column: str) -> Subquery:
        return Subquery(_next_reply().values(column)[:1])

    rating = Feedback.objects.filter(message_id=OuterRef("reply_id")).values("rating")[:1]
    return (
        Message.objects.visible()
        .filter(role=Message.Role.VISITOR, created_at__gte=since)
        # The bot by primary-key lookup rather than a join: the planner can't estimate the
        # reply filters below, and a join planned for "a few rows" rescans conversations per row.
        .annotate(
            bot_id=Subquery(Conversation.objects.filter(pk=OuterRef("conversation_id")).values("bot_id"))
        )
        .filter(bot_id__in=bots.values("pk"))
        .annotate(
            reply_id=reply("pk"),
            reply_role=reply("role"),
            reply_source=reply("source"),
            reply_rating=Subquery(rating),
        )
        .alias(
            reply_text=reply("text"),
            corrected=Exists(Correction.objects.filter(message_id=OuterRef("reply_id"))),
        )
        # A question without a visible reply (none yet, or one still being written) is no gap.
        .filter(reply_text__gt="", corrected=False)
        .filter(Q(reply_source__in=UNANSWERED) | Q(reply_rating=Feedback.Rating.DOWN))
    )


def gap_questions(
    *, user: Any, days: int, bot: Bot | None = None, limit: int | None = None, now: datetime | None = None
) -> list[GapQuestion]:
    """The newest ``limit`` gap questions of the last ``days`` days that ``user`` may see."""
    bots = visible_bots(user)
    if bot is not None:
        bots = bots.filter(pk=bot.pk)
    return gap_questions_of(bots=bots, days=days, limit=limit, now=now)


def gap_questions_of(
    *, bots: QuerySet[Bot], days: int, limit: int | None = None, now: datetime | None = None
) -> list[GapQuestion]:
    """The newest ``limit`` gap questions of these bots of the last ``days`` days, in one query."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = (
        _gap_rows(bots=bots, since=since)
        .order_by("-created_at", "-pk")
        .values_list(
            "pk",
            "text",
            "created_at",
            "conversation_id",
            "bot_id",
            "reply_id",
            "reply_role",
            "reply_source",
            "reply_rating",
        )
    )
    limit = settings.AGENT_GAP_MAX_QUESTIONS if limit is None else limit
    return [GapQuestion(*row) for row in rows[:limit]]


def gap_clusters(*, questions: list[GapQuestion]) -> list[GapCluster]:
    """The questions (newest first) grouped per bot by meaning: largest first, then newest."""
    vectors = question_vectors_get(questions=[(q.message_id, q.text) for q in questions])
    by_bot: dict[int, list[int]] = {}
    for index, question in enumerate(questions):
        by_bot.setdefault(question.bot_id, []).append(index)
    bots = Bot.objects.in_bulk(list(by_bot))
    clusters: list[GapCluster] = []
    for bot_id, indexes in by_bot.items():
        for found in cluster_vectors(vectors[indexes], threshold=settings.AGENT_GAP_SIMILARITY):
            members = [questions[indexes[i]] for i in found.members]
            typical = questions[indexes[found.medoid]].text
            clusters.append(GapCluster(bot=bots[bot_id], questions=members, typical=typical))
    clusters.sort(key=lambda c: (-c.count, -c.newest_at.timestamp(), -c.questions[0].message_id))
    return clusters


def _answered(cluster: GapCluster) -> bool:
    try:
        return match(cluster.bot, cluster.typical).decision == "answer"
    except Exception:
        # The report is still worth showing if the index is broken: count it as open.
        log.exception("knowledge-base match failed for bot %s", cluster.bot.pk)
        return False


def gap_report(*, user: Any, days: int, bot: Bot | None = None) -> GapReport:
    limit = settings.AGENT_GAP_MAX_QUESTIONS
    questions = gap_questions(user=user, days=days, bot=bot, limit=limit)
    report = GapReport(days=days, total_questions=len(questions), capped=len(questions) >= limit)
    for checked, cluster in enumerate(gap_clusters(questions=questions)):
        if len(report.clusters) >= CLUSTERS_SHOWN or checked >= CLUSTERS_CHECKED:
            report.unlisted_clusters += 1
            report.unlisted_questions += cluster.count
        elif _answered(cluster):
            report.covered_clusters += 1
            report.covered_questions += cluster.count
        else:
            report.clusters.append(cluster)
    return report

"""Reads for the conversation domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from chatbot.chat.frames import display_name
from chatbot.models import Bot, Conversation, Message

DEMO_BOT_NAME = "Demo shop assistant"


def demo_bot() -> Bot | None:
    return Bot.objects.filter(name=DEMO_BOT_NAME).order_by("id").first()


def bot_by_public_key(key: str) -> Bot | None:
    return Bot.objects.filter(public_key=key).first()


def conversation_history(*, conversation_id: int, limit: int, after: int | None = None) -> list[Message]:
    """What the visitor sees of a conversation: its newest ``limit`` messages (only those
    after the message id ``after``, when given), oldest first, with the team's notices
    (role system: who joined, left). A reply still being written is left out; one cut
    off (the visitor left, or the server process died) is in, marked ``partial``."""
    if limit <= 0:
        return []
    rows = Message.objects.visible().filter(conversation_id=conversation_id)
    if after is not None:
        rows = rows.filter(id__gt=after)
    return list(rows.select_related("author").order_by("-id")[:limit])[::-1]


def conversation_exists(*, conversation_id: int) -> bool:
    return Conversation.objects.filter(pk=conversation_id).exists()


def visitor_message_original(*, conversation_id: int, client_id: str | None) -> Message | None:
    """The visitor message of the conversation that the widget sent with ``client_id``."""
    if not client_id:
        return None
    return Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.VISITOR, client_id=client_id
    ).first()


def conversation_status(*, conversation_id: int) -> str:
    return Conversation.objects.filter(pk=conversation_id).values_list("status", flat=True).get()


@dataclass(frozen=True)
class HandoffState:
    """Where a conversation stands with the team."""

    status: str
    bot_id: int
    position: int | None = None  # waiting: 1 + the bot's conversations waiting since earlier
    agent: str | None = None  # with_agent: the agent's display name
    waiting_since: datetime | None = None
    queued: bool = False  # a request has just put it in the queue


def handoff_state(*, conversation_id: int) -> HandoffState:
    conversation = Conversation.objects.select_related("assigned_agent").get(pk=conversation_id)
    status = conversation.status
    if status == Conversation.Status.WITH_AGENT and conversation.assigned_agent is not None:
        return HandoffState(status, conversation.bot_id, agent=display_name(conversation.assigned_agent))
    if status != Conversation.Status.WAITING_FOR_AGENT:
        return HandoffState(status, conversation.bot_id)
    since = conversation.handoff_requested_at
    if since is None:  # never asked (set by hand): after everyone who did
        earlier = Q(handoff_requested_at__isnull=False) | Q(pk__lt=conversation.pk)
    else:
        earlier = Q(handoff_requested_at__lt=since) | Q(handoff_requested_at=since, pk__lt=conversation.pk)
    ahead = Conversation.objects.filter(earlier, bot_id=conversation.bot_id, status=status).count()
    return HandoffState(status, conversation.bot_id, position=ahead + 1, waiting_since=since)


def agents_online(*, bot_id: int) -> bool:
    """Whether an agent who sees this bot had a live console within AGENT_ONLINE_SECONDS
    (the agent socket keeps ``agents.models.Presence`` fresh; read here through the user's
    relations, so the conversation domain does not import the agents app)."""
    since = timezone.now() - timedelta(seconds=settings.AGENT_ONLINE_SECONDS)
    agents = Q(is_staff=True) | Q(groups__name=settings.AGENT_GROUP)
    for_bot = Q(is_superuser=True) | Q(bot_assignments__isnull=True) | Q(bot_assignments__bot_id=bot_id)
    users = get_user_model().objects.filter(is_active=True, presence__last_seen__gte=since)
    return users.filter(agents).filter(for_bot).exists()
